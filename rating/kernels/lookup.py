"""Kernels of the exact string -> row lookup (``rating.string_index.StringIndex``): an
open-addressing hash table over FNV-1a 64 hashes of strings given as offsets and bytes, and one
over integer keys for strings of 1 to 17 ASCII digits (MSISDNs), which need no byte comparison."""

from __future__ import annotations

import numpy as np
from numba import njit

from rating.kernels.hashing import fnv1a_strings, fnv_seed

MAX_DIGIT_KEY_LEN = 17            # 10^17 * 32 < 2^63
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(nogil=True, cache=True)
def digit_key(data, start, end):
    """``value * 32 + length`` of the string ``data[start:end]`` if it is 1 to 17 ASCII digits, else -1.

    Two such strings are equal exactly when their keys are (the length keeps leading zeros).
    """
    length = end - start
    if length < 1 or length > MAX_DIGIT_KEY_LEN:
        return -1
    value = 0
    for j in range(start, end):
        d = np.int64(data[j]) - 48
        if d < 0 or d > 9:
            return -1
        value = value * 10 + d
    return value * 32 + length


@njit(nogil=True, cache=True)
def _digit_slot(key, shift):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(shift))


@njit(nogil=True, cache=True)
def build_digit_table(offsets, data, shift, out_table):
    """Fill ``out_table`` (2 x 2^(64-shift) int64, -1: empty) with (digit key, row) of every key
    string that has a digit key; open addressing, linear probing."""
    size = len(out_table) // 2
    for row in range(len(offsets) - 1):
        key = digit_key(data, offsets[row], offsets[row + 1])
        if key < 0:
            continue
        s = _digit_slot(key, shift)
        while out_table[2 * s] >= 0:
            s = (s + 1) & (size - 1)
        out_table[2 * s] = key
        out_table[2 * s + 1] = row


@njit(nogil=True, cache=True)
def find_digit_rows(q_offsets, q_data, q_present, table, shift, out, out_other):
    """Row of each present query that has a digit key (-1 if no key string has it). Queries without
    a digit key get -1 and ``out_other`` True: the string table must answer them."""
    size = len(table) // 2
    for i in range(len(out)):
        out[i] = -1
        out_other[i] = False
        if not q_present[i]:
            continue
        key = digit_key(q_data, q_offsets[i], q_offsets[i + 1])
        if key < 0:
            out_other[i] = True
            continue
        s = _digit_slot(key, shift)
        while table[2 * s] >= 0:
            if table[2 * s] == key:
                out[i] = table[2 * s + 1]
                break
            s = (s + 1) & (size - 1)


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


@njit(nogil=True, cache=True)
def find_rows_linear(q_offsets, q_data, q_present, k_offsets, k_data, out):
    """Row of each present query among a few key strings, compared one by one; -1 if none."""
    for i in range(len(out)):
        out[i] = -1
        if not q_present[i]:
            continue
        a = q_offsets[i]
        length = q_offsets[i + 1] - a
        for r in range(len(k_offsets) - 1):
            k0 = k_offsets[r]
            if k_offsets[r + 1] - k0 != length:
                continue
            same = True
            for j in range(length):
                if q_data[a + j] != k_data[k0 + j]:
                    same = False
                    break
            if same:
                out[i] = r
                break
