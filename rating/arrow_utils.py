"""Arrow <-> NumPy helpers for the rating wrappers: string buffers in, dictionary-coded strings out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
    return _names_array(names).take(pa.array(ids, pa.int64()))


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


def digits_to_strings(digits: np.ndarray, lengths: np.ndarray, present: np.ndarray) -> pa.Array:
    """Rows of digit values (0..9) with lengths -> string array; rows not present -> null."""
    n = len(lengths)
    lengths = np.where(present, lengths, 0).astype(np.int64)
    mask = np.arange(digits.shape[1])[None, :] < lengths[:, None]
    data = (digits + 48).astype(np.uint8)[mask]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    validity = pa.array(present).buffers()[1] if not present.all() else None
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), validity,
                                       null_count=int((~present).sum()))


def is_in(arr: pa.Array, values: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.is_in(arr, value_set=values), False).to_numpy(zero_copy_only=False)
