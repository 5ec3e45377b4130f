"""Deduplication by (source, record_id): keep the first occurrence, report every other one.

"First" is decided by (input_file, input_position), never by arrival order, so the kept record is
the same whatever the batching, worker count or runner.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import duplicate_schema, usage_batch_schema
from rating.kernels.hashing import mark_repeated
from rating.partition import RECORD_KEY, hash_columns

_KEY = list(RECORD_KEY)
# The key's hash first: rows compare by two strings only when their hashes tie (same key, or a rare
# collision that the string columns after it still separate).
_ORDER = [("_key_hash", "ascending"), ("source", "ascending"), ("record_id", "ascending"),
          ("input_file", "ascending"), ("input_position", "ascending")]


def deduplicate(batches: list[pa.RecordBatch]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(unique rows, duplicates) of usage batches that together hold every copy of their keys.

    Unique rows keep their input order; duplicates come in key order.

    Only rows whose key hash occurs more than once can be copies (``mark_repeated``, one pass);
    those few rows, and no others, are sorted by key and where they were read.
    """
    table = pa.Table.from_batches(batches, schema=usage_batch_schema())
    if table.num_rows == 0:
        return empty_batch(usage_batch_schema()), empty_batch(duplicate_schema())
    key_hash = np.concatenate([hash_columns(b, _KEY) for b in table.to_batches()])
    repeated = np.zeros(table.num_rows, np.bool_)
    if mark_repeated(key_hash, repeated) == 0:   # the usual shard: no take of the key columns
        return table_to_batch(table), empty_batch(duplicate_schema())
    candidates = np.flatnonzero(repeated)
    rows = table.take(pa.array(candidates, pa.int64()))
    keys = pa.table({"_key_hash": pa.array(key_hash[candidates], pa.uint64()),
                     **{k: rows.column(k) for k, _ in _ORDER[1:]}})
    order = pc.sort_indices(keys, sort_keys=_ORDER).to_numpy(zero_copy_only=False)
    sorted_keys = keys.select(_KEY).take(pa.array(order)).combine_chunks()
    source, record_id = sorted_keys.column("source").chunk(0), sorted_keys.column("record_id").chunk(0)
    n = len(candidates)
    same = pc.and_(pc.equal(source.slice(1), source.slice(0, n - 1)),
                   pc.equal(record_id.slice(1), record_id.slice(0, n - 1)))
    is_new = np.ones(n, np.bool_)
    is_new[1:] = ~same.to_numpy(zero_copy_only=False)
    if is_new.all():   # hash collisions of different keys only
        return table_to_batch(table), empty_batch(duplicate_schema())
    first = np.maximum.accumulate(np.where(is_new, np.arange(n), 0))
    keep = np.ones(table.num_rows, np.bool_)
    dup_rows = np.flatnonzero(~is_new)
    keep[candidates[order[dup_rows]]] = False
    # One take of every column, for the unique rows in input order (rating orders them itself).
    unique = table.take(pa.array(np.flatnonzero(keep), pa.int64()))
    dups = rows.take(pa.array(order[dup_rows], pa.int64()))
    originals = rows.take(pa.array(order[first[dup_rows]], pa.int64()))
    return table_to_batch(unique), _duplicates(dups, originals.column("input_file"), originals.column("input_position"),
                                               _identical(dups, originals))


def _identical(dups: pa.Table, originals: pa.Table) -> np.ndarray:
    """Whether each duplicate equals its original row in every column but where it was read."""
    identical = np.ones(dups.num_rows, np.bool_)
    for name in usage_batch_schema().names:
        if name in ("input_file", "input_position"):
            continue
        a, b = dups.column(name), originals.column(name)
        equal = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        identical &= pc.or_(equal, both_null).to_numpy(zero_copy_only=False)
    return identical


def _duplicates(dups: pa.Table, original_file, original_position, identical: np.ndarray) -> pa.RecordBatch:
    """Rows of ``duplicate_schema`` for usage rows ``dups`` of this run's input and their originals."""
    return pa.RecordBatch.from_arrays([
        dups.column("record_id").combine_chunks(), dups.column("source").combine_chunks(),
        dups.column("start_time").combine_chunks(), dups.column("input_file").combine_chunks(),
        dups.column("input_position").combine_chunks(), pa.chunked_array(original_file).combine_chunks(),
        pa.chunked_array(original_position).combine_chunks(), pa.array(identical, pa.bool_()),
        pa.nulls(dups.num_rows, pa.string()),   # the original is in this run's input
    ], schema=duplicate_schema())


# Deduplicating inside the account shuffle (pipelines.rate_usage): every record's key, where it was
# read and its account shard, shuffled by key; ``split_keys`` finds the keys whose copies sit in
# more than one account shard and names each copy's original; ``drop_split_copies`` applies that in
# the account shard. With ``deduplicate`` over the rest, the result is ``deduplicate`` over all.
KEY_ROW_SCHEMA = pa.schema([pa.field("source", pa.string()), pa.field("record_id", pa.string()),
                            pa.field("input_file", pa.string()), pa.field("input_position", pa.int64()),
                            pa.field("account_shard", pa.int32())])
SPLIT_COPY_SCHEMA = pa.schema([pa.field("input_file", pa.string()), pa.field("input_position", pa.int64()),
                               pa.field("original_input_file", pa.string()),
                               pa.field("original_input_position", pa.int64())])


def key_rows(batch: pa.RecordBatch, account_shards: np.ndarray) -> pa.RecordBatch:
    """The narrow rows ``split_keys`` reads of usage rows (``KEY_ROW_SCHEMA``)."""
    return pa.RecordBatch.from_arrays([batch.column("source"), batch.column("record_id"), batch.column("input_file"),
                                       batch.column("input_position"), pa.array(account_shards, pa.int32())],
                                      schema=KEY_ROW_SCHEMA)


def split_keys(keys: pa.Table) -> dict[int, pa.RecordBatch]:
    """Key rows that hold every copy of their keys -> for each account shard, its copies of the keys
    whose copies are in more than one shard, each with its key's original: the first copy by
    (input_file, input_position), as ``deduplicate`` chooses (``SPLIT_COPY_SCHEMA``; the original
    names itself)."""
    import polars as pl

    frame = pl.from_arrow(keys.cast(KEY_ROW_SCHEMA))
    key = ["source", "record_id"]
    split = frame.group_by(key).agg(pl.col("account_shard").n_unique().alias("shards")).filter(pl.col("shards") > 1)
    if split.height == 0:
        return {}
    copies = frame.join(split.select(key), on=key).sort([*key, "input_file", "input_position"])
    first = copies.group_by(key, maintain_order=True).agg(
        pl.col("input_file").first().alias("original_input_file"),
        pl.col("input_position").first().alias("original_input_position"))
    marked = copies.join(first, on=key).sort(["account_shard", "input_file", "input_position"])
    return {int(shard): table_to_batch(part.select(SPLIT_COPY_SCHEMA.names).to_arrow().cast(SPLIT_COPY_SCHEMA))
            for (shard,), part in marked.group_by(["account_shard"], maintain_order=True)}


def drop_split_copies(table: pa.Table, copies: pa.Table) -> tuple[pa.Table, pa.RecordBatch]:
    """Usage rows of one account shard, and its copies of split keys (``split_keys``) -> (the rows
    without the copies that are not their key's original, those copies as duplicates). A duplicate
    is ``identical`` only to an original in the same shard (copies in other shards differ: their
    accounts do)."""
    if copies.num_rows == 0:
        return table, empty_batch(duplicate_schema())
    import polars as pl

    where = pl.from_arrow(table.select(["input_file", "input_position"])).with_row_index("row")
    marks = pl.from_arrow(copies.cast(SPLIT_COPY_SCHEMA))
    mine = where.join(marks, on=["input_file", "input_position"])
    losing = mine.filter((pl.col("input_file") != pl.col("original_input_file"))
                         | (pl.col("input_position") != pl.col("original_input_position"))).sort("row")
    originals = losing.join(where.rename({"input_file": "original_input_file", "input_position": "original_input_position",
                                          "row": "original_row"}),
                            on=["original_input_file", "original_input_position"], how="left").sort("row")
    drop = np.zeros(table.num_rows, np.bool_)
    drop[losing["row"].to_numpy()] = True
    dups = table.take(pa.array(losing["row"].to_numpy(), pa.int64()))
    identical = np.zeros(dups.num_rows, np.bool_)
    here = originals["original_row"].is_not_null().to_numpy()
    if here.any():
        local = originals.filter(pl.col("original_row").is_not_null())
        identical[here] = _identical(dups.take(pa.array(np.flatnonzero(here), pa.int64())),
                                     table.take(pa.array(local["original_row"].to_numpy(), pa.int64())))
    duplicates = _duplicates(dups, originals["original_input_file"].to_arrow(),
                             originals["original_input_position"].to_arrow(), identical)
    return table.filter(pa.array(~drop)), duplicates


def table_to_batch(table: pa.Table) -> pa.RecordBatch:
    """One RecordBatch holding all rows of ``table``."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else empty_batch(table.schema)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
