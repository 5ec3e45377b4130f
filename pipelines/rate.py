"""Deduplicate and rate usage per account, in one shuffle of the records.

    usage batches -> by account shard -> each shard: drop duplicates, rate in event-time order

Every record goes to the shard of its account (``rating.partition``), where its copies usually are
too: the shard deduplicates (``rating.dedup.deduplicate``: the first copy by (input_file,
input_position) is kept) and rates what is left. Copies of one key whose accounts differ (a record
resent with another served MSISDN, or a number that changed hands between the copies' start
times) meet in no shard. For them every new record also sends a narrow key row (key, where it was
read, its account shard; ``rating.dedup.key_rows``) through a shuffle by record key; a key whose
copies sit in more than one account shard is split, and each of its copies learns, in its account
shard, which copy is the key's original (``rating.dedup.split_keys``, ``drop_split_copies``). The
result is the same as deduplicating every record together, for the price of a shuffle of some 35
bytes a record instead of a second shuffle of the whole records.

The store's events a run continues (``prior``) go to their account shards without key rows: they
are unique, and new records the store holds never get here (``pipelines.prior.DropStored``).
"""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from cdr_schemas import usage_batch_schema
from pipelines.coders import KeyedBatch
from pipelines.dedup import DUPLICATES
from pipelines.shuffle import ShardShuffle
from pipelines.tagged import Tagged
from rating.dedup import KEY_ROW_SCHEMA, SPLIT_COPY_SCHEMA, deduplicate, drop_split_copies, key_rows, split_keys
from rating.engine import EngineRef
from rating.partition import split_by_record_key, split_by_shard
from sinks.object_storage import ObjectStorage

RATED = "rated"
REJECTED = "rejected"
_ROWS = "rows"      # (shard, payload) of usage rows, by account shard
_KEYS = "keys"      # (shard, payload) of key rows, by record-key shard
_SPLIT = "split"    # (account shard, copies of split keys)


class _KeyByAccount(beam.DoFn):
    """Usage batch -> ``rows`` pairs (account shard, sub-batch) and, with ``key_rows``, ``keys``
    pairs (record-key shard, key rows), through the shuffle's writers (``pipelines.shuffle``)."""

    def __init__(self, engine: EngineRef, shards: int, shuffle: ShardShuffle, with_key_rows: bool):
        self._engine_ref = engine
        self._shards = shards
        self._shuffle = shuffle
        self._with_key_rows = with_key_rows
        self._engine = None
        self._writers = {}

    def setup(self):
        self._engine = self._engine_ref.load()

    def start_bundle(self):
        self._writers = {_ROWS: self._shuffle.writer("by_account"), _KEYS: self._shuffle.writer("by_record_key")}

    def process(self, batch: pa.RecordBatch) -> Iterator:
        shards = self._engine.account_shards(batch, self._shards)
        yield from ((_ROWS, pair) for pair in self._writers[_ROWS].add(split_by_shard(batch, shards, self._shards)))
        if self._with_key_rows:
            keys = split_by_record_key(key_rows(batch, shards), self._shards)
            yield from ((_KEYS, pair) for pair in self._writers[_KEYS].add(keys))

    def finish_bundle(self):
        for tag, writer in self._writers.items():
            for pair in writer.finish():
                yield GlobalWindows.windowed_value((tag, pair))


class _SplitKeys(beam.DoFn):
    """(record-key shard, key-row payloads) -> (account shard, its copies of the split keys)."""

    def __init__(self, shuffle: ShardShuffle):
        self._shuffle = shuffle

    def process(self, element):
        _, payloads = element
        yield from split_keys(self._shuffle.read(payloads, KEY_ROW_SCHEMA)).items()


class _RateShard(beam.DoFn):
    """(account shard, its rows and its copies of split keys) -> rated, rejected and duplicates."""

    def __init__(self, engine: EngineRef, shuffle: ShardShuffle):
        self._engine_ref = engine
        self._shuffle = shuffle
        self._engine = None

    def setup(self):
        self._engine = self._engine_ref.load()

    def process(self, element):
        shard, grouped = element
        rows = self._shuffle.read(grouped[_ROWS], usage_batch_schema())
        copies = pa.Table.from_batches(list(grouped[_SPLIT]), schema=SPLIT_COPY_SCHEMA)
        rows, split_duplicates = drop_split_copies(rows, copies)
        unique, duplicates = deduplicate(rows.to_batches())
        del rows   # ``unique`` is a copy: the shard is held once while it is rated
        for found in (split_duplicates, duplicates):
            if found.num_rows:
                yield DUPLICATES, (shard, found)
        rated, rejected = self._engine.rate(unique)
        if rated.num_rows:
            yield RATED, (shard, rated)
        if rejected.num_rows:
            yield REJECTED, rejected


class DeduplicateAndRate(beam.PTransform):
    """New usage batches, or (new usage batches, the store's usage batches) -> ``rated`` ((shard, rated batch)
    pairs by account shard), ``rejected`` batches and ``duplicates`` ((shard, batch) pairs).

    All events of an account meet in one shard, so allowances and tiers are consumed in event-time
    order whatever the input order or batching. ``shuffle_dir``: spill the shuffles through files
    there, or None for the runner's shuffle (``pipelines.shuffle``).
    """

    def __init__(self, reference_dir: str, shards: int, shuffle_dir: str | None = None,
                 storage: ObjectStorage | None = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._engine = EngineRef.of(reference_dir, storage)
        self._shards = shards
        self._shuffle = ShardShuffle(shuffle_dir)

    def expand(self, sources):
        new, stored = (sources, None) if isinstance(sources, beam.PCollection) else sources
        element_type = self._shuffle.element_type
        keyed = new | "KeyByAccount" >> Tagged(
            beam.ParDo(_KeyByAccount(self._engine, self._shards, self._shuffle, with_key_rows=True)),
            {_ROWS: element_type, _KEYS: element_type})
        rows = keyed[_ROWS]
        if stored is not None:
            stored_rows = stored | "KeyStoredByAccount" >> Tagged(
                beam.ParDo(_KeyByAccount(self._engine, self._shards, self._shuffle, with_key_rows=False)),
                {_ROWS: element_type})
            rows = (rows, stored_rows[_ROWS]) | "AllRows" >> beam.Flatten()
        split = (
            keyed[_KEYS]
            | "GroupByRecordKey" >> beam.GroupByKey()
            | "SplitKeys" >> beam.ParDo(_SplitKeys(self._shuffle)).with_output_types(KeyedBatch)
        )
        return (
            {_ROWS: rows, _SPLIT: split}
            | "GroupByAccount" >> beam.CoGroupByKey()
            | "RateShard" >> Tagged(beam.ParDo(_RateShard(self._engine, self._shuffle)),
                                    {RATED: KeyedBatch, REJECTED: pa.RecordBatch, DUPLICATES: KeyedBatch})
        )
