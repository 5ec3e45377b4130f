"""Rate usage per account: shard by account, gather each shard, rate it in event-time order."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from cdr_schemas import usage_batch_schema
from pipelines.coders import KeyedBatch
from pipelines.shuffle import ShardShuffle, SpillByShard
from pipelines.tagged import Tagged
from rating.dedup import table_to_batch
from rating.engine import EngineRef
from sinks.object_storage import ObjectStorage

RATED = "rated"
REJECTED = "rejected"


class KeyByAccount(SpillByShard):
    """Usage batch -> (shard, sub-batch) pairs: every event of an account in one shard."""

    def __init__(self, engine: EngineRef, shards: int, shuffle: ShardShuffle | None = None):
        super().__init__(shuffle or ShardShuffle(None), "by_account")
        self._engine_ref = engine
        self._shards = shards
        self._engine = None

    def setup(self):
        self._engine = self._engine_ref.load()

    def pairs(self, batch: pa.RecordBatch):
        return self._engine.split_by_account(batch, self._shards)


class _RateShard(beam.DoFn):
    def __init__(self, engine: EngineRef, shuffle: ShardShuffle):
        self._engine_ref = engine
        self._shuffle = shuffle
        self._engine = None

    def setup(self):
        self._engine = self._engine_ref.load()

    def process(self, element):
        shard, payloads = element
        batch = table_to_batch(self._shuffle.read(payloads, usage_batch_schema()))
        rated, rejected = self._engine.rate(batch)
        if rated.num_rows:
            yield RATED, (shard, rated)
        if rejected.num_rows:
            yield REJECTED, rejected


class RateByAccount(beam.PTransform):
    """Unique usage batches -> (shard, rated batch) pairs (main) and ``rejected`` batches.

    All events of an account meet in one shard, so allowances and tiers are consumed in event-time
    order whatever the input order or batching. ``shuffle_dir``: see ``DeduplicateUsage``.
    """

    def __init__(self, reference_dir: str, shards: int, shuffle_dir: str | None = None,
                 storage: ObjectStorage | None = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._engine = EngineRef.of(reference_dir, storage)
        self._shards = shards
        self._shuffle = ShardShuffle(shuffle_dir)

    def expand(self, batches):
        return (
            batches
            | "KeyByAccount" >> beam.ParDo(KeyByAccount(self._engine, self._shards, self._shuffle))
            .with_output_types(self._shuffle.element_type)
            | "GroupByAccount" >> beam.GroupByKey()
            | "RateShard" >> Tagged(beam.ParDo(_RateShard(self._engine, self._shuffle)),
                                    {RATED: KeyedBatch, REJECTED: pa.RecordBatch})
        )
