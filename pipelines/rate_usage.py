"""The core the batch job and the re-rate share: CDR files in, rated usage and everything else out.

    decode + validate -> by account: deduplicate, rate in event-time order (one shuffle: pipelines.rate)

With ``prior`` (a batch run continuing the store: ``pipelines.prior``), new records the store
already rated become duplicates first, and the store's open cycles join the new records before
deduplication, so they are rated again together with them.

Each job adds its own steps after it (the batch job bills and writes; the re-rate keeps one cycle,
then bills and writes), so a fix to rating files reaches both.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from pipelines.decode import COUNTS, REJECTED, USAGE, DecodeUsage
from pipelines.coders import KeyedBatch
from pipelines.dedup import DUPLICATES, UNIQUE
from pipelines.prior import DropStored, PriorUsage, ReadPrior
from pipelines.rate import RATED, DeduplicateAndRate
from pipelines.tagged import Tagged
from sinks.object_storage import ObjectStorage


class RateUsage(beam.PTransform):
    """Paths -> a dict of PCollections: ``rated`` ((shard, rated batch) pairs, by account shard),
    ``rejected`` (batches: every reject of decoding, validation and rating), ``duplicates``
    ((shard, batch) pairs) and ``counts`` (counter dicts of decoding: ``records_in``).

    ``shards``: shards of deduplication and rating; ``shuffle_dir``: spill the shuffles through
    files there, or None for the runner's shuffle (``pipelines.shuffle``).
    """

    def __init__(self, *, reference_dir: str, shards: int, batch_size: int, shuffle_dir: str | None = None,
                 prior: PriorUsage | None = None, storage: ObjectStorage = ObjectStorage()):
        super().__init__()
        self._decode = DecodeUsage(batch_size, storage)
        self._rate = DeduplicateAndRate(reference_dir, shards, shuffle_dir, storage)
        self._storage = storage
        self._prior = prior or PriorUsage.none()
        self._shards = shards

    def expand(self, paths):
        decoded = paths | "Decode" >> self._decode
        if self._prior.keys_file is None:
            rated = decoded[USAGE] | "Rate" >> self._rate
            duplicates, counts = rated[DUPLICATES], decoded[COUNTS]
        else:   # continue the store: drop what it rated, re-rate its open cycles with the new records
            fresh = decoded[USAGE] | "DropStored" >> Tagged(
                beam.ParDo(DropStored(self._prior.keys_file, self._prior.details_file, self._shards, self._storage)),
                {UNIQUE: pa.RecordBatch, DUPLICATES: KeyedBatch})
            prior = paths.pipeline | "PriorFiles" >> beam.Create(list(self._prior.usage_files)) \
                | "ReadPrior" >> Tagged(beam.ParDo(ReadPrior(self._storage)), {USAGE: pa.RecordBatch, COUNTS: dict})
            rated = (fresh[UNIQUE], prior[USAGE]) | "Rate" >> self._rate
            duplicates = (fresh[DUPLICATES], rated[DUPLICATES]) | "AllDuplicates" >> beam.Flatten()
            counts = (decoded[COUNTS], prior[COUNTS]) | "AllCounts" >> beam.Flatten()
        rejected = (decoded[REJECTED], rated[REJECTED]) | "AllRejects" >> beam.Flatten()
        return {RATED: rated[RATED], REJECTED: rejected, DUPLICATES: duplicates, COUNTS: counts}
