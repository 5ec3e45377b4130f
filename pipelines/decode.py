"""Decode CDR files into validated usage batches; everything unreadable becomes a rejected row."""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa

from cdr_schemas.decoders import avro as avro_decoder
from cdr_schemas.decoders import decode_file
from cdr_schemas.validate import validate_usage
from pipelines import coders  # noqa: F401  (registers the RecordBatch coder)
from pipelines.tagged import Tagged
from sinks.object_storage import ObjectStorage

USAGE = "usage"
REJECTED = "rejected"
COUNTS = "counts"


def validated_outputs(decoded_batches) -> Iterator[tuple[str, object]]:
    """``(tag, element)`` pairs (``pipelines.tagged``) of decoded batches, validated: usage
    batches, rejected batches and the record count."""
    records = 0
    for decoded in decoded_batches:
        records += decoded.usage.num_rows + decoded.rejected.num_rows
        if decoded.rejected.num_rows:
            yield REJECTED, decoded.rejected
        if decoded.usage.num_rows:
            valid, rejected = validate_usage(decoded.usage)
            if rejected.num_rows:
                yield REJECTED, rejected
            if valid.num_rows:
                yield USAGE, valid
    yield COUNTS, {"records_in": records}


class _DecodeFile(beam.DoFn):
    def __init__(self, batch_size: int, storage: ObjectStorage):
        self._batch_size = batch_size
        self._storage = storage

    def setup(self):
        self._storage.activate()   # the input files may be on object storage
        avro_decoder.warm_up()  # load the compiled Avro kernel before the first file

    def process(self, path: str) -> Iterator:
        yield from validated_outputs(decode_file(path, batch_size=self._batch_size))


class DecodeUsage(beam.PTransform):
    """Paths -> usage batches (main), rejected batches and record counts per file.

    Outputs are tagged ``usage``, ``rejected`` and ``counts``. A file that cannot be opened at all
    fails the pipeline with its path and the reason (``InputFileError``): nothing is skipped.
    """

    def __init__(self, batch_size: int, storage: ObjectStorage = ObjectStorage()):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._batch_size = batch_size
        self._storage = storage

    def expand(self, paths):
        return (
            paths
            | "Spread" >> beam.Reshuffle()
            | "DecodeAndValidate" >> Tagged(beam.ParDo(_DecodeFile(self._batch_size, self._storage)),
                                            {USAGE: pa.RecordBatch, REJECTED: pa.RecordBatch, COUNTS: dict})
        )
