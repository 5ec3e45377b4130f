"""Deduplication by (source, record_id): keep the first occurrence, report every other one.

"First" is decided by (input_file, input_position), never by arrival order, so the kept record is
the same whatever the batching, worker count or runner.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import duplicate_schema, usage_batch_schema
from rating.partition import RECORD_KEY, hash_columns

_KEY = list(RECORD_KEY)
# The key's hash first: rows compare by two strings only when their hashes tie (same key, or a rare
# collision that the string columns after it still separate).
_ORDER = [("_key_hash", "ascending"), ("source", "ascending"), ("record_id", "ascending"),
          ("input_file", "ascending"), ("input_position", "ascending")]


def deduplicate(batches: list[pa.RecordBatch]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(unique rows, duplicates) of usage batches that together hold every copy of their keys.

    Unique rows keep their input order; duplicates come in key order.
    """
    table = pa.Table.from_batches(batches, schema=usage_batch_schema())
    if table.num_rows == 0:
        return empty_batch(usage_batch_schema()), empty_batch(duplicate_schema())
    n = table.num_rows
    key_hash = np.concatenate([hash_columns(b, _KEY) for b in table.to_batches()])
    keys = pa.table({"_key_hash": pa.array(key_hash, pa.uint64()), **{k: table.column(k) for k, _ in _ORDER[1:]}})
    order = pc.sort_indices(keys, sort_keys=_ORDER).to_numpy(zero_copy_only=False)
    sorted_keys = keys.select(_KEY).take(pa.array(order)).combine_chunks()
    source, record_id = sorted_keys.column("source").chunk(0), sorted_keys.column("record_id").chunk(0)
    is_new = np.ones(n, np.bool_)
    if n > 1:
        same = pc.and_(pc.equal(source.slice(1), source.slice(0, n - 1)),
                       pc.equal(record_id.slice(1), record_id.slice(0, n - 1)))
        is_new[1:] = ~same.to_numpy(zero_copy_only=False)
    first = np.maximum.accumulate(np.where(is_new, np.arange(n), 0))
    # One take of every column, for the unique rows in input order (rating orders them itself).
    unique = table.take(pa.array(np.sort(order[is_new]), pa.int64()))
    dup_rows = np.flatnonzero(~is_new)
    dups = table.take(pa.array(order[dup_rows], pa.int64()))
    originals = table.take(pa.array(order[first[dup_rows]], pa.int64()))
    identical = np.ones(len(dup_rows), np.bool_)
    for name in usage_batch_schema().names:
        if name in ("input_file", "input_position"):
            continue
        a, b = dups.column(name), originals.column(name)
        equal = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        identical &= pc.or_(equal, both_null).to_numpy(zero_copy_only=False)
    schema = duplicate_schema()
    duplicates = pa.RecordBatch.from_arrays([
        dups.column("record_id").combine_chunks(), dups.column("source").combine_chunks(),
        dups.column("start_time").combine_chunks(), dups.column("input_file").combine_chunks(),
        dups.column("input_position").combine_chunks(), originals.column("input_file").combine_chunks(),
        originals.column("input_position").combine_chunks(), pa.array(identical),
        pa.nulls(len(dup_rows), pa.string()),   # the original is in this run's input
    ], schema=schema)
    return table_to_batch(unique), duplicates


def table_to_batch(table: pa.Table) -> pa.RecordBatch:
    """One RecordBatch holding all rows of ``table``."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else empty_batch(table.schema)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
