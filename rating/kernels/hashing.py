"""Deterministic string hashing for sharding: the same key lands on the same shard in every process."""

from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SEPARATOR = np.uint64(0x1F)


@njit(nogil=True, cache=True)
def fnv1a_strings(offsets, data, out_hash):
    """Fold one string column into ``out_hash`` (FNV-1a 64; start from ``fnv_seed``), per row."""
    for i in range(len(out_hash)):
        h = out_hash[i]
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        out_hash[i] = (h ^ _SEPARATOR) * _FNV_PRIME


def fnv_seed(n: int) -> np.ndarray:
    return np.full(n, _FNV_OFFSET, np.uint64)


_MIX = np.uint64(0x9E3779B97F4A7C15)   # Fibonacci hashing: a slot is the top bits of hash x this odd constant


@njit(nogil=True, cache=True)
def mark_repeated(h, out_repeated):
    """Set ``out_repeated[i]`` for every row whose value ``h[i]`` occurs more than once; return
    how many rows that is. One pass over an open-addressing table of at least twice ``len(h)``
    slots: 0.6 ms for 156k hashes, where NumPy's sort takes 6 ms and its stable argsort 10 ms."""
    n = len(h)
    bits = 1
    while (1 << bits) < 2 * n:
        bits += 1
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    first = np.full(mask + 1, -1, np.int64)   # per slot: the row that took it
    marked = 0
    for i in range(n):
        key = h[i]
        slot = np.int64((key * _MIX) >> shift)
        while True:
            row = first[slot]
            if row < 0:
                first[slot] = i
                break
            if h[row] == key:
                if not out_repeated[row]:
                    out_repeated[row] = True
                    marked += 1
                out_repeated[i] = True
                marked += 1
                break
            slot = (slot + 1) & mask
    return marked
