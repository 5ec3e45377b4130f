"""Arrow <-> NumPy helpers for the rating wrappers: string buffers in, dictionary-coded strings out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rating.kernels.gather import (digit_string_offsets, gather_bytes, gather_row_prefixes, gather_strings,
                                  gathered_offsets)

_MAX_STRING_BYTES = 2**31 - 1   # int32 offsets of pa.string()
_STAGGER_BYTES = 4096           # pool_empty starts arrays anywhere in a page, on a cache line

def column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets int64 [n+1], data uint8, present bool [n]) of a string array, zero-copy where possible."""
    if arr.type == pa.large_string():
        arr = arr.cast(pa.string())
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset: arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    present = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else np.ones(n, np.bool_)
    return offsets, data, present


def int_column(arr: pa.Array, dtype=np.int64) -> np.ndarray:
    """A non-null integer or timestamp column as NumPy (timestamps as their int64 ticks)."""
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    if arr.null_count:
        raise ValueError(f"column has {arr.null_count} nulls where none are allowed; validate the batch first")
    return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


_NAME_ARRAYS: dict[int, tuple[tuple, pa.Array]] = {}   # id(names tuple) -> (the tuple, its Arrow array)
_KEEP_NAME_ARRAYS = 64


def take_names(names: tuple[str, ...] | list[str], ids: np.ndarray) -> pa.Array:
    """Strings ``names[ids]`` as an Arrow string array (ids >= 0).

    The Arrow array of a tuple of names (e.g. every account id of the reference) is built once and
    kept with the tuple itself, so the id cannot be reused while the entry exists.
    """
    return take_strings(_names_array(names), ids)


def pool_empty(n: int, dtype) -> np.ndarray:
    """``np.empty(n, dtype)`` in a buffer of Arrow's memory pool.

    The pool keeps memory it got back for the next request, where NumPy's large arrays are fresh
    pages from the OS each time: zeroed and faulted in on first touch, ~0.1 ms per MB.

    The pool hands out large blocks on 4 KiB boundaries, so arrays that a kernel walks side by side
    would all start at the same offset in a page and compete for the same cache sets (rate_events
    ran 50% slower on its inputs and outputs so placed). Each array starts at a cache line chosen
    from its block's address instead.
    """
    dtype = np.dtype(dtype)
    nbytes = max(n, 1) * dtype.itemsize
    buffer = pa.allocate_buffer(nbytes + _STAGGER_BYTES)
    lines = _STAGGER_BYTES // 64
    shift = ((buffer.address >> 12) * 0x9E3779B1 >> 11) % lines * 64
    return np.frombuffer(buffer, np.uint8)[shift: shift + nbytes].view(dtype)[:n]


def take_strings(arr: pa.Array, rows: np.ndarray) -> pa.Array:
    """``arr.take(rows)`` for a string array (nulls kept), as a ``pa.string()`` array.

    Same values as Arrow's take, in a fraction of its time (two loops, rating.kernels.gather).
    Raises IndexError when a row is out of range; a result over 2 GiB of text falls back to Arrow.
    """
    rows = np.asarray(rows, np.int64)
    n = len(arr)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise IndexError(f"take_strings: rows must be in [0, {n}), got [{rows.min()}, {rows.max()}]")
    if arr.type == pa.large_string():
        arr = arr.cast(pa.string())
    if arr.type != pa.string():
        raise TypeError(f"take_strings: expected a string array, got {arr.type}")
    offsets_buf, data_buf = arr.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    present = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else np.ones(n, np.bool_)
    out_offsets = pool_empty(len(rows) + 1, np.int32)
    # One pass when the result fits in as many bytes as the column holds (rows of a permutation);
    # else (rows repeated, as from a table of names) the lengths first, then the bytes.
    total = -1
    if len(rows) <= n:
        out_data = pool_empty(max(int(offsets[-1]) - int(offsets[0]), 1), np.uint8)
        total = gather_strings(offsets, data, present, rows, out_offsets, out_data)
    if total < 0:
        total = gathered_offsets(offsets, present, rows, out_offsets)
        if total <= _MAX_STRING_BYTES:
            out_data = pool_empty(max(total, 1), np.uint8)
            gather_bytes(offsets, data, rows, out_offsets, out_data)
    if total > _MAX_STRING_BYTES:   # the int32 offsets wrapped: Arrow says why it cannot
        return arr.take(pa.array(rows, pa.int64()))
    return _string_array(out_offsets, out_data[:total], None if arr.null_count == 0 else present[rows])


def _string_array(offsets: np.ndarray, data: np.ndarray, present: np.ndarray | None) -> pa.Array:
    """A ``pa.string()`` array from int32 offsets, bytes and an optional validity (bool per row)."""
    n = len(offsets) - 1
    null_count = 0 if present is None else n - int(np.count_nonzero(present))
    validity = None
    if null_count:
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), validity, null_count=null_count)


def _names_array(names) -> pa.Array:
    if not isinstance(names, tuple):
        return pa.array(list(names), pa.string())
    entry = _NAME_ARRAYS.get(id(names))
    if entry is None or entry[0] is not names:
        if len(_NAME_ARRAYS) >= _KEEP_NAME_ARRAYS:
            _NAME_ARRAYS.pop(next(iter(_NAME_ARRAYS)))
        entry = (names, pa.array(list(names), pa.string()))
        _NAME_ARRAYS[id(names)] = entry
    return entry[1]


def take_digit_strings(digits: np.ndarray, lengths: np.ndarray, present: np.ndarray, rows: np.ndarray) -> pa.Array:
    """Digit rows ``rows`` (values 0..9, ``lengths`` of them) as text; rows not ``present`` -> null."""
    rows = np.asarray(rows, np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(lengths)):
        raise IndexError(f"take_digit_strings: rows must be in [0, {len(lengths)}), got [{rows.min()}, {rows.max()}]")
    if digits.dtype != np.uint8 or digits.ndim != 2 or (len(lengths) and lengths.max() > digits.shape[1]):
        raise ValueError(f"take_digit_strings: expected uint8 digit rows of at most {digits.shape[1]} digits")
    if len(rows) * digits.shape[1] > _MAX_STRING_BYTES:
        raise ValueError(f"take_digit_strings: {len(rows):,} rows may exceed 2 GiB of text; rate smaller batches")
    offsets = pool_empty(len(rows) + 1, np.int32)
    total = digit_string_offsets(lengths, present, rows, offsets)
    data = pool_empty(max(total, 1), np.uint8)
    gather_row_prefixes(np.ascontiguousarray(digits + np.uint8(48)), rows, offsets, data)
    kept = present[rows]
    return _string_array(offsets, data[:total], None if kept.all() else kept)


def is_in(arr: pa.Array, values: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.is_in(arr, value_set=values), False).to_numpy(zero_copy_only=False)
