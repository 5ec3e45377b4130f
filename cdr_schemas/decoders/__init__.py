"""Decoders from usage files (Avro, Parquet, JSON lines) to Arrow batches of the usage schema.

``decode_file(path)`` yields :class:`DecodedBatch` values: usage rows in
:func:`cdr_schemas.usage_batch_schema` and rejected records in :func:`cdr_schemas.rejected_schema`.
Every input record is in exactly one of them, once; a file that cannot be read as a whole raises
:class:`InputFileError`. See docs/input-formats.md for the formats and what becomes a reject.
"""

from __future__ import annotations

from typing import Iterator

from cdr_schemas.decoders.avro import decode_avro
from cdr_schemas.decoders.common import COMPRESSION_SUFFIXES, DecodedBatch, InputFileError, open_input
from cdr_schemas.decoders.jsonl import decode_jsonl
from cdr_schemas.decoders.parquet import decode_parquet

__all__ = ["DecodedBatch", "InputFileError", "decode_file", "detect_format", "FORMATS"]

_DECODERS = {"avro": decode_avro, "parquet": decode_parquet, "jsonl": decode_jsonl}
FORMATS = tuple(_DECODERS)
_JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
_EXTENSIONS = (
    (".avro", "avro"),
    (".parquet", "parquet"),
    *((extension, "jsonl") for extension in _JSON_EXTENSIONS),
    *((extension + suffix, "jsonl") for suffix in COMPRESSION_SUFFIXES for extension in _JSON_EXTENSIONS),
)


def detect_format(path) -> str:
    """'avro', 'parquet' or 'jsonl' from the file name's extension (case-insensitive).

    JSON lines files may end in ``.jsonl``, ``.ndjson`` or ``.json``, each optionally followed by
    ``.gz`` or ``.bz2`` (decompressed on the fly). Any other name raises :class:`InputFileError`.
    """
    name = str(path).lower()
    for extension, fmt in _EXTENSIONS:
        if name.endswith(extension):
            return fmt
    known = ", ".join(extension for extension, _ in _EXTENSIONS)
    raise InputFileError(str(path), f"unknown file extension: expected one of {known}")


def decode_file(path: str, *, batch_size: int = 65536) -> Iterator[DecodedBatch]:
    """Decode the usage file at ``path`` (local or any Beam filesystem) into batches.

    Each batch accounts for at most ``batch_size`` input records (usage rows plus rejected rows);
    batches come in input order. ``input_file`` is ``path`` as given; ``input_position`` is the
    0-based record index (Avro, Parquet) or the 1-based line number (JSON lines). Raises
    :class:`InputFileError` when the file cannot be opened or read as a whole (possibly after
    some batches were yielded: then the whole file has failed).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = str(path)  # a pathlib.Path is accepted; input_file is its string
    decoder = _DECODERS[detect_format(path)]
    return _decode(decoder, path, batch_size)


def _decode(decoder, path: str, batch_size: int) -> Iterator[DecodedBatch]:
    # Separate from decode_file so that a bad argument raises at the call, not at the first batch.
    stream = open_input(path)
    try:
        yield from decoder(path, stream, batch_size)
    finally:
        stream.close()
