"""Kernels of the exact string -> row lookup (``rating.string_index.StringIndex``): an
open-addressing hash table over FNV-1a 64 hashes of strings given as offsets and bytes."""

from __future__ import annotations

import numpy as np
from numba import njit

from rating.kernels.hashing import fnv1a_strings, fnv_seed


@njit(nogil=True, cache=True)
def build_slots(key_hash, size):
    mask = np.uint64(size - 1)
    slots = np.full(size, -1, np.int64)
    for row in range(len(key_hash)):
        s = np.int64(key_hash[row] & mask)
        while slots[s] >= 0:
            s = (s + 1) & (size - 1)
        slots[s] = row
    return slots


@njit(nogil=True, cache=True)
def find_rows(q_offsets, q_data, q_present, q_hash, k_offsets, k_data, k_hash, slots, out):
    size = len(slots)
    mask = np.uint64(size - 1)
    for i in range(len(out)):
        out[i] = -1
        if not q_present[i]:
            continue
        h = q_hash[i]
        length = q_offsets[i + 1] - q_offsets[i]
        s = np.int64(h & mask)
        while slots[s] >= 0:
            r = slots[s]
            if k_hash[r] == h and k_offsets[r + 1] - k_offsets[r] == length:
                same = True
                for j in range(length):
                    if q_data[q_offsets[i] + j] != k_data[k_offsets[r] + j]:
                        same = False
                        break
                if same:
                    out[i] = r
                    break
            s = (s + 1) & (size - 1)


def hashes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    h = fnv_seed(len(offsets) - 1)
    fnv1a_strings(offsets, data, h)
    return h
