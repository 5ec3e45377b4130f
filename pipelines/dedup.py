"""Deduplicate usage batches by (source, record_id) across files: shard by record key
(``rating.partition``), then dedup each shard with ``rating.dedup.deduplicate``."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from cdr_schemas import usage_batch_schema
from pipelines.coders import KeyedBatch
from pipelines.shuffle import ShardShuffle, SpillByShard
from pipelines.tagged import Tagged
from rating.dedup import deduplicate
from rating.partition import split_by_record_key

UNIQUE = "unique"
DUPLICATES = "duplicates"


class SplitByRecordKey(SpillByShard):
    """Usage batch -> (shard, sub-batch) pairs by the hash of (source, record_id)."""

    def __init__(self, shards: int, shuffle: ShardShuffle | None = None):
        super().__init__(shuffle or ShardShuffle(None), "by_record_key")
        self._shards = shards

    def pairs(self, batch: pa.RecordBatch):
        return split_by_record_key(batch, self._shards)


class _DedupShard(beam.DoFn):
    def __init__(self, shuffle: ShardShuffle):
        self._shuffle = shuffle

    def process(self, element):
        shard, payloads = element
        table = self._shuffle.read(payloads, usage_batch_schema())
        unique, duplicates = deduplicate(table.to_batches())
        if unique.num_rows:
            yield UNIQUE, unique
        if duplicates.num_rows:
            yield DUPLICATES, (shard, duplicates)


class DeduplicateUsage(beam.PTransform):
    """Usage batches -> unique usage batches (main) and ``duplicates`` as (shard, batch) pairs.

    The input is one PCollection of usage batches, or a tuple of them (e.g. new records and the
    store's): each is split by record key where it is made, and only the (shard, payload) pairs
    meet, so the batches themselves never pass through the runner between stages.

    ``shuffle_dir``: spill the shuffle through files there (``pipelines.shuffle``); None: the
    runner's shuffle carries the batches.
    """

    def __init__(self, shards: int, shuffle_dir: str | None = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._shards = shards
        self._shuffle = ShardShuffle(shuffle_dir)

    def expand(self, batches):
        sources = batches if isinstance(batches, tuple) else (batches,)
        keyed = [source | f"KeyByRecordId{'' if i == 0 else i}" >> beam.ParDo(
                     SplitByRecordKey(self._shards, self._shuffle)).with_output_types(self._shuffle.element_type)
                 for i, source in enumerate(sources)]
        if len(keyed) > 1:
            keyed = [tuple(keyed) | "AllKeyed" >> beam.Flatten()]
        return (
            keyed[0]
            | "GroupByRecordId" >> beam.GroupByKey()
            | "DropDuplicates" >> Tagged(beam.ParDo(_DedupShard(self._shuffle)),
                                         {UNIQUE: pa.RecordBatch, DUPLICATES: KeyedBatch})
        )
