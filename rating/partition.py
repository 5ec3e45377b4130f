"""Shard keys for batches: which shard each row goes to, stable across processes and runs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rating.arrow_utils import column, string_buffers
from rating.kernels.hashing import fnv1a_strings, fnv_seed


def hash_columns(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """FNV-1a 64 over the string columns ``names`` of each row (nulls hash as empty strings)."""
    h = fnv_seed(batch.num_rows)
    for name in names:
        offsets, data, _ = string_buffers(column(batch, name))
        fnv1a_strings(offsets, data, h)
    return h


def shard_of_hash(h: np.ndarray, n_shards: int) -> np.ndarray:
    return (h % np.uint64(n_shards)).astype(np.int64)


def split_by_shard(batch: pa.RecordBatch, shards: np.ndarray, n_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """(shard, sub-batch) pairs, rows kept in their original order within each shard.

    One take puts the rows in shard order; each sub-batch is a slice of it. Arrow IPC (the
    RecordBatch coder and the spill files) writes only a slice's own rows; pickling writes the
    whole parent, so anything that may be pickled (runner state) should ``compact`` them first.
    """
    order = np.argsort(shards, kind="stable")
    counts = np.bincount(shards, minlength=n_shards)
    grouped = batch.take(pa.array(order))
    out = []
    start = 0
    for shard, count in enumerate(counts):
        if count:
            out.append((shard, grouped.slice(start, count)))
        start += count
    return out


def compact(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A copy of ``batch`` owning buffers of just its rows (a slice otherwise keeps its parent's)."""
    return pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in batch.columns], schema=batch.schema)
