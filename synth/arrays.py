"""Array helpers of the generator: weighted sampling and building Arrow string columns fast."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Sampler:
    """Draws indices with probability proportional to ``weights`` (inverse CDF with a guide table:
    one table lookup and usually no more than a step or two of linear search per draw)."""

    def __init__(self, weights: np.ndarray):
        weights = np.asarray(weights, dtype=np.float64)
        if len(weights) == 0 or weights.sum() <= 0:
            raise ValueError("Sampler needs at least one positive weight")
        cdf = np.cumsum(weights)
        self.cdf = cdf / cdf[-1]
        self.cdf[-1] = 1.0
        self.size = 1 << max(10, min(24, int(4 * len(weights)).bit_length()))
        self.guide = np.searchsorted(self.cdf, np.arange(self.size) / self.size, side="right")

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """Index for each uniform ``u`` in [0, 1): the first ``i`` with ``cdf[i] > u``."""
        index = self.guide[(u * self.size).astype(np.int64)]
        behind = np.flatnonzero(self.cdf[index] <= u)
        while len(behind):
            index[behind] += 1
            behind = behind[self.cdf[index[behind]] <= u[behind]]
        return index


def digit_strings(values: np.ndarray, width: int) -> pa.StringArray:
    """Zero-padded decimal strings of non-negative ints below ``10**width`` (Arrow's integer cast
    of ``10**width + value``, then the leading 1 of every fixed-width string dropped)."""
    values = np.asarray(values, dtype=np.int64)
    text = pc.cast(pa.array(values + 10 ** width), pa.string())
    data = np.frombuffer(text.buffers()[2], np.uint8, count=len(values) * (width + 1))
    matrix = np.ascontiguousarray(data.reshape(len(values), width + 1)[:, 1:])
    offsets = np.arange(len(values) + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(matrix.reshape(-1)))


def sentinel_strings(values: np.ndarray, plus: np.ndarray, valid: np.ndarray) -> pa.StringArray:
    """Decimal strings of ``values`` whose first digit is a sentinel 1: dropped, or replaced by
    ``+`` where ``plus``; null where not ``valid``. This keeps leading zeros ("0151…", "0044…")."""
    rows = np.flatnonzero(valid)
    text = pc.cast(pa.array(values[rows]), pa.string())
    offsets = np.frombuffer(text.buffers()[1], np.int32, count=len(rows) + 1)
    data = np.frombuffer(text.buffers()[2], np.uint8, count=int(offsets[-1])).copy()
    data[offsets[:-1][plus[rows]]] = ord("+")
    keep = np.ones(len(data), bool)
    drop = ~plus[rows]
    keep[offsets[:-1][drop]] = False
    lengths = np.zeros(len(values), np.int64)
    lengths[rows] = np.diff(offsets) - drop
    out_offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(lengths, out=out_offsets[1:])
    bitmap = None if len(rows) == len(values) else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(out_offsets), pa.py_buffer(data[keep]), bitmap,
                                       len(values) - len(rows))


def take_or_null(values: pa.Array, index: np.ndarray, present: np.ndarray) -> pa.Array:
    """``values[index]`` where ``present``, null elsewhere (one take with a masked index)."""
    bitmap = pa.py_buffer(np.packbits(present, bitorder="little"))
    indices = pa.Array.from_buffers(pa.int64(), len(index), [bitmap, pa.py_buffer(index.astype(np.int64))],
                                    int(len(index) - present.sum()))
    return values.take(indices)
