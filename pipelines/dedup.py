"""Deduplicate usage batches by (source, record_id) across files: shard by key hash, then dedup
each shard with ``rating.dedup.deduplicate``."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from pipelines.coders import KeyedBatch
from rating.dedup import deduplicate
from rating.partition import hash_columns, shard_of_hash, split_by_shard

UNIQUE = "unique"
DUPLICATES = "duplicates"


class SplitByRecordKey(beam.DoFn):
    """Usage batch -> (shard, sub-batch) pairs by the hash of (source, record_id)."""

    def __init__(self, shards: int):
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        shards = shard_of_hash(hash_columns(batch, ["source", "record_id"]), self._shards)
        yield from split_by_shard(batch, shards, self._shards)


class _DedupShard(beam.DoFn):
    def process(self, element):
        shard, batches = element
        unique, duplicates = deduplicate(list(batches))
        if unique.num_rows:
            yield unique
        if duplicates.num_rows:
            yield beam.pvalue.TaggedOutput(DUPLICATES, (shard, duplicates))


class DeduplicateUsage(beam.PTransform):
    """Usage batches -> unique usage batches (main) and ``duplicates`` as (shard, batch) pairs."""

    def __init__(self, shards: int):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._shards = shards

    def expand(self, batches):
        return (
            batches
            | "KeyByRecordId" >> beam.ParDo(SplitByRecordKey(self._shards)).with_output_types(KeyedBatch)
            | "GroupByRecordId" >> beam.GroupByKey()
            | "DropDuplicates" >> beam.ParDo(_DedupShard()).with_output_types(pa.RecordBatch).with_outputs(DUPLICATES, main=UNIQUE)
        )
