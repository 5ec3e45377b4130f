"""Column buffers the Avro kernel decodes whole blocks into, turned into Arrow arrays without copies.

A :class:`ColumnBuffers` holds the rows of consecutive blocks that decoded cleanly, with their
input positions. :meth:`ColumnBuffers.append_block` runs the kernel over one block and keeps its
records only when every datum decoded (otherwise it says why, and the buffers are as before).
:meth:`ColumnBuffers.arrays` hands rows to Arrow as views of the buffers, which must then not be
written again: the caller starts new buffers, and :meth:`ColumnBuffers.tail` copies the rows past
a batch's end into them.

Buffers are sized from the bytes per record seen so far, so that their pages are touched densely:
sparse buffers cost a page fault every few records (far more with transparent huge pages, which
NumPy asks for on large arrays), and that, not the decoding, would bound the speed. They are plain
NumPy arrays: the C allocator hands the memory of released batches back to the next ones, where
Arrow's default pool (mimalloc) returned it to the system and faulted it in again (~13k page
faults per million records against a few hundred, measured with ``perf/bench_decode.py`` inputs).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from cdr_schemas.decoders import avro_kernel
from cdr_schemas.decoders.avro_program import Program

_MAX_COLUMN_BYTES = 2**31 - 1   # Arrow string offsets are int32
_MIN_COLUMN_BYTES = 256
_FIRST_COLUMN_BYTES = 1 << 26   # at most this much per column from an estimate; more only when used


@dataclasses.dataclass(frozen=True)
class BlockError:
    """Why the kernel stopped: the record index in the block, an ``avro_kernel.ERR_*`` code and the
    byte offset of that record in the decompressed block."""

    record: int
    code: int
    offset: int

    def __str__(self) -> str:
        return f"record {self.record}: {avro_kernel.ERROR_NAMES.get(self.code, self.code)} (byte {self.offset})"


class ColumnBuffers:
    """Buffers for ``program``'s columns: ``row_capacity`` rows, and per string column
    ``bytes_per_row`` (an estimate, grown on demand) times that many bytes."""

    def __init__(self, program: Program, row_capacity: int, bytes_per_row: np.ndarray):
        self.program = program
        self.rows = 0
        self._error = np.zeros(3, np.int64)
        p = program
        self._allocate_rows(max(1, row_capacity))
        estimate = np.ceil(np.asarray(bytes_per_row, np.float64) * self.row_capacity * 1.125)
        self.str_cap = np.clip(estimate, _MIN_COLUMN_BYTES, _FIRST_COLUMN_BYTES).astype(np.int64)
        self.str_base = np.zeros(p.n_string, np.int64)
        self.str_base[1:] = np.cumsum(self.str_cap)[:-1]
        self.str_data = np.empty((int(self.str_cap.sum()),), np.uint8)

    def _allocate_rows(self, rows: int) -> None:
        p = self.program
        self.positions = np.empty((rows,), np.int64)
        self.longs = np.empty((p.n_long, rows), np.int64)
        self.ints = np.empty((p.n_int, rows), np.int32)
        self.enums = np.empty((p.n_enum, rows), np.int32)
        self.valid = np.empty((p.n_valid, rows), np.uint8)
        self.str_offsets = np.empty((p.n_string, rows + 1), np.int32)
        self.str_offsets[:, 0] = 0

    @property
    def row_capacity(self) -> int:
        return self.positions.shape[0]

    def used_bytes(self, row: int | None = None) -> np.ndarray:
        """Bytes each string column holds before ``row`` (default: all rows)."""
        return self.str_offsets[:, self.rows if row is None else row].astype(np.int64)

    def bytes_per_row(self) -> np.ndarray:
        """Mean bytes per record of each string column so far (for sizing the next buffers)."""
        return self.used_bytes() / max(self.rows, 1)

    def _grow_rows(self, rows: int) -> None:
        old = (self.positions, self.longs, self.ints, self.enums, self.valid, self.str_offsets)
        self._allocate_rows(rows)
        n = self.rows
        self.positions[:n] = old[0][:n]
        for new, previous in zip((self.longs, self.ints, self.enums, self.valid), old[1:5]):
            new[:, :n] = previous[:, :n]
        self.str_offsets[:, :n + 1] = old[5][:, :n + 1]

    def _grow_column(self, column: int, needed: int) -> None:
        used = self.used_bytes()
        cap = self.str_cap.copy()
        cap[column] = min(max(2 * cap[column], needed), _MAX_COLUMN_BYTES)
        base = np.zeros_like(self.str_base)
        base[1:] = np.cumsum(cap)[:-1]
        data = np.empty((int(cap.sum()),), np.uint8)
        for s in range(len(cap)):
            data[base[s]:base[s] + used[s]] = self.str_data[self.str_base[s]:self.str_base[s] + used[s]]
        self.str_cap, self.str_base, self.str_data = cap, base, data

    def append_block(self, data: bytes, count: int, first_position: int) -> BlockError | None:
        """Decode the block's ``count`` datums after the rows already held; None when they all
        decoded (they are then held, at input positions ``first_position`` on), else why not
        (nothing of the block is kept)."""
        view = np.frombuffer(data, np.uint8)
        if self.rows + count > self.row_capacity:
            self._grow_rows(max(2 * self.row_capacity, self.rows + count))
        p = self.program
        while True:
            avro_kernel.decode_block(view, count, p.ops, p.n_fields, p.enum_map, self.rows, self.longs, self.ints,
                                     self.enums, self.valid, self.str_offsets, self.str_base, self.str_cap,
                                     self.str_data, self._error)
            record, code, offset = (int(x) for x in self._error)
            if code != avro_kernel.ERR_CAPACITY:
                break
            # One column is full: grow it (a block adds at most len(data) bytes to it) and rerun.
            needed = int(self.used_bytes()[offset]) + min(len(view), 2 * int(self.str_cap[offset]))
            if needed > _MAX_COLUMN_BYTES or self.str_cap[offset] >= _MAX_COLUMN_BYTES:
                return BlockError(record, code, offset)
            self._grow_column(offset, needed)
        if code != avro_kernel.ERR_NONE:
            return BlockError(record, code, offset)
        self.positions[self.rows:self.rows + count] = np.arange(first_position, first_position + count)
        self.rows += count
        return None

    def fits_more(self, nbytes: int) -> bool:
        """False when a block of ``nbytes`` might take a string column past int32 offsets."""
        return not self.program.n_string or int(self.used_bytes().max()) + nbytes <= _MAX_COLUMN_BYTES

    def arrays(self, stop: int, arrow_types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
        """Arrow arrays of rows ``0..stop-1`` of every column (by name), viewing the buffers."""
        columns = {}
        for column in self.program.columns:
            arrow_type = arrow_types[column.name]
            if not column.from_writer:
                columns[column.name] = _constant(column.default, stop, arrow_type)
                continue
            validity, null_count = None, 0
            if column.valid_slot >= 0:
                present = self.valid[column.valid_slot, :stop]
                null_count = stop - int(np.count_nonzero(present))
                if null_count:
                    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
            if column.kind == "string":
                offsets = self.str_offsets[column.slot, :stop + 1]
                base = self.str_base[column.slot]
                data = self.str_data[base:base + int(offsets[-1])]
                array = pa.Array.from_buffers(arrow_type, stop, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                              null_count=null_count)
            elif column.kind == "enum":
                codes = pa.py_buffer(self.enums[column.slot, :stop])
                indices = pa.Array.from_buffers(pa.int32(), stop, [validity, codes], null_count=null_count)
                array = pa.array(column.symbols, arrow_type).take(indices)
            else:
                values = (self.longs if column.kind == "long" else self.ints)[column.slot, :stop]
                array = pa.Array.from_buffers(arrow_type, stop, [validity, pa.py_buffer(values)], null_count=null_count)
            columns[column.name] = array
        return columns

    def tail(self, start: int, row_capacity: int) -> ColumnBuffers:
        """New buffers holding copies of rows ``start..`` of these (the rows past a batch's end),
        sized for ``row_capacity`` rows at the bytes per record seen here."""
        n = self.rows - start
        out = ColumnBuffers(self.program, max(row_capacity, n), self.bytes_per_row())
        first, last = self.used_bytes(start), self.used_bytes()
        for s in np.flatnonzero(last - first > out.str_cap):
            out._grow_column(int(s), int(last[s] - first[s]))
        out.positions[:n] = self.positions[start:self.rows]
        for new, old in ((out.longs, self.longs), (out.ints, self.ints), (out.enums, self.enums),
                         (out.valid, self.valid)):
            new[:, :n] = old[:, start:self.rows]
        out.str_offsets[:, :n + 1] = self.str_offsets[:, start:self.rows + 1] - first[:, None].astype(np.int32)
        for s in range(self.program.n_string):
            source = self.str_base[s]
            out.str_data[out.str_base[s]:out.str_base[s] + last[s] - first[s]] = \
                self.str_data[source + first[s]:source + last[s]]
        out.rows = n
        return out


def _constant(value, length: int, arrow_type: pa.DataType) -> pa.Array:
    """A column of a field the writer lacks: its default in every row (None: all null)."""
    if value is None:
        return pa.nulls(length, arrow_type)
    return pa.array([value], arrow_type).take(pa.array(np.zeros(length, np.int32)))
