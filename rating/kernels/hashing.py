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
