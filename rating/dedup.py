"""Deduplication by (source, record_id): keep the first occurrence, report every other one.

"First" is decided by (input_file, input_position), never by arrival order, so the kept record is
the same whatever the batching, worker count or runner.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import duplicate_schema, usage_batch_schema
from rating.partition import hash_columns

_KEY = ["source", "record_id"]
# The key's hash first: rows compare by two strings only when their hashes tie (same key, or a rare
# collision that the string columns after it still separate).
_ORDER = [("_key_hash", "ascending"), ("source", "ascending"), ("record_id", "ascending"),
          ("input_file", "ascending"), ("input_position", "ascending")]


def deduplicate(batches: list[pa.RecordBatch]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(unique rows, duplicates) of usage batches that together hold every copy of their keys."""
    table = pa.Table.from_batches(batches, schema=usage_batch_schema())
    if table.num_rows == 0:
        return empty_batch(usage_batch_schema()), empty_batch(duplicate_schema())
    table = table.combine_chunks()
    key_hash = hash_columns(table.to_batches()[0], _KEY)
    keyed = table.append_column("_key_hash", pa.array(key_hash, pa.uint64()))
    table = table.take(pc.sort_indices(keyed, sort_keys=_ORDER))
    n = table.num_rows
    source = table.column("source").combine_chunks()
    record_id = table.column("record_id").combine_chunks()
    is_new = np.ones(n, np.bool_)
    if n > 1:
        same = pc.and_(pc.equal(source.slice(1), source.slice(0, n - 1)),
                       pc.equal(record_id.slice(1), record_id.slice(0, n - 1)))
        is_new[1:] = ~same.to_numpy(zero_copy_only=False)
    first = np.maximum.accumulate(np.where(is_new, np.arange(n), 0))
    unique = table.filter(pa.array(is_new))
    dup_rows = np.flatnonzero(~is_new)
    dups = table.take(pa.array(dup_rows, pa.int64()))
    originals = table.take(pa.array(first[dup_rows], pa.int64()))
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
    ], schema=schema)
    return table_to_batch(unique), duplicates


def table_to_batch(table: pa.Table) -> pa.RecordBatch:
    """One RecordBatch holding all rows of ``table``."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else empty_batch(table.schema)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
