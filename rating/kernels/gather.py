"""Gathers of variable-length strings given as offsets and bytes (Arrow's string layout).

``pyarrow.compute.take`` on a string column costs 20-70 ns a row. These loops compute the
offsets in one pass and copy each string with one ``memcpy`` in a second: a byte loop in Numba
costs several ns a byte (68-byte file names: 7x Arrow), a ``memcpy`` a few ns a string. The Arrow
side is ``rating.arrow_utils.take_strings``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _copy_bytes(typingctx, dst, dst_at, src, src_at, count):
    """``dst[dst_at:dst_at + count] = src[src_at:src_at + count]`` as one ``memcpy`` (no bounds checks:
    the caller's offsets must be in range; the two arrays must not overlap)."""
    sig = types.void(dst, dst_at, src, src_at, count)

    def codegen(context, builder, signature, args):
        dst_array = context.make_array(signature.args[0])(context, builder, args[0])
        src_array = context.make_array(signature.args[2])(context, builder, args[2])
        cgutils.raw_memcpy(builder, builder.gep(dst_array.data, [args[1]]), builder.gep(src_array.data, [args[3]]),
                           args[4], 1)
        return context.get_dummy_value()
    return sig, codegen


@njit(nogil=True, cache=True)
def gather_strings(offsets, data, present, rows, out_offsets, out_data):
    """Offsets and bytes of strings ``rows`` of a column in one pass (an absent row has length 0).

    Returns the total bytes, or -1 as soon as ``out_data`` is too small (rows repeated): then use
    ``gathered_offsets`` and ``gather_bytes``. ``out_offsets`` has ``len(rows) + 1`` entries; if
    it is int32 and the total passes 2^31 - 1 the offsets wrapped: the caller checks the total.
    """
    total = 0
    out_offsets[0] = 0
    capacity = len(out_data)
    for i in range(len(rows)):
        r = rows[i]
        if present[r]:
            start = np.int64(offsets[r])
            count = offsets[r + 1] - start
            if count > 0:
                if total + count > capacity:
                    return -1
                _copy_bytes(out_data, total, data, start, count)
                total += count
        out_offsets[i + 1] = total
    return total


@njit(nogil=True, cache=True)
def gathered_offsets(offsets, present, rows, out_offsets):
    """Offsets of strings ``rows`` of a column (an absent row has length 0); returns the total bytes.

    ``out_offsets`` has ``len(rows) + 1`` entries; ``out_offsets[0]`` is set to 0. If it is int32
    and the total passes 2^31 - 1, the offsets wrapped: the caller must check the total first.
    """
    total = 0
    out_offsets[0] = 0
    for i in range(len(rows)):
        r = rows[i]
        if present[r]:
            total += offsets[r + 1] - offsets[r]
        out_offsets[i + 1] = total
    return total


@njit(nogil=True, cache=True)
def gather_bytes(offsets, data, rows, out_offsets, out_data):
    """Copy the bytes of strings ``rows`` to ``out_data`` at ``out_offsets`` (from ``gathered_offsets``)."""
    for i in range(len(rows)):
        at = out_offsets[i]
        count = out_offsets[i + 1] - at
        if count > 0:
            _copy_bytes(out_data, at, data, np.int64(offsets[rows[i]]), count)


@njit(nogil=True, cache=True)
def digit_string_offsets(lengths, present, rows, out_offsets):
    """Offsets of digit rows ``rows`` written as text (an absent row has length 0); returns the total."""
    total = 0
    out_offsets[0] = 0
    for i in range(len(rows)):
        r = rows[i]
        if present[r]:
            total += lengths[r]
        out_offsets[i + 1] = total
    return total


@njit(nogil=True, cache=True)
def gather_row_prefixes(matrix, rows, out_offsets, out_data):
    """Copy the first ``out_offsets[i + 1] - out_offsets[i]`` bytes of row ``rows[i]`` of a C-ordered
    uint8 ``matrix`` to ``out_data`` at ``out_offsets[i]`` (from ``digit_string_offsets``)."""
    flat = matrix.reshape(-1)
    width = matrix.shape[1]
    for i in range(len(rows)):
        at = out_offsets[i]
        count = out_offsets[i + 1] - at
        if count > 0:
            _copy_bytes(out_data, at, flat, rows[i] * width, count)


@njit(nogil=True, cache=True)
def positive_entry_offsets(rows, amounts, out_offsets):
    """List offsets of the entries of rows ``rows`` of ``amounts`` (n x k) that are > 0; returns the total."""
    total = 0
    out_offsets[0] = 0
    for i in range(len(rows)):
        r = rows[i]
        for q in range(amounts.shape[1]):
            if amounts[r, q] > 0:
                total += 1
        out_offsets[i + 1] = total
    return total


@njit(nogil=True, cache=True)
def gather_positive_entries(rows, keys, amounts, out_keys, out_amounts):
    """The (key, amount) entries of rows ``rows`` whose amount is > 0, row by row, in column order."""
    at = 0
    for i in range(len(rows)):
        r = rows[i]
        for q in range(amounts.shape[1]):
            if amounts[r, q] > 0:
                out_keys[at] = keys[r, q]
                out_amounts[at] = amounts[r, q]
                at += 1
