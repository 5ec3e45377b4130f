"""Column buffers the Avro kernel decodes whole blocks into, turned into Arrow arrays without copies.

A :class:`ColumnBuffers` holds the rows of consecutive blocks that decoded cleanly, with their
input positions. :meth:`ColumnBuffers.append_block` runs the kernel over one block and keeps its
records only when every datum decoded (otherwise it reports why, and the buffers are as before);
:meth:`ColumnBuffers.arrays` hands the first rows to Arrow (zero-copy views of the buffers, which
must not be written again: the caller starts new buffers, :meth:`ColumnBuffers.tail` copies the
rows that are left over into them).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from cdr_schemas.decoders import avro_kernel
from cdr_schemas.decoders.avro_program import Program

_MAX_STRING_BYTES = 2**31 - 1   # int32 Arrow offsets


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
    """Growable per-kind 2-D buffers (one row per output column) for ``program``'s columns."""

    def __init__(self, program: Program, row_capacity: int, byte_capacity: int):
        self.program = program
        self.rows = 0
        self._error = np.zeros(3, np.int64)
        self._allocate(max(1, row_capacity), max(1, byte_capacity))

    def _allocate(self, rows: int, nbytes: int) -> None:
        p = self.program
        self.positions = np.empty(rows, np.int64)
        self.longs = np.empty((p.n_long, rows), np.int64)
        self.ints = np.empty((p.n_int, rows), np.int32)
        self.enums = np.empty((p.n_enum, rows), np.int32)
        self.valid = np.empty((p.n_valid, rows), np.uint8)
        self.str_offsets = np.zeros((p.n_string, rows + 1), np.int32)
        self.str_data = np.empty((p.n_string, nbytes), np.uint8)

    @property
    def row_capacity(self) -> int:
        return self.positions.shape[0]

    @property
    def string_bytes(self) -> int:
        """Bytes used by the fullest string column."""
        if not self.program.n_string:
            return 0
        return int(self.str_offsets[:, self.rows].max())

    def _grow(self, rows: int, nbytes: int) -> None:
        old = dict(positions=self.positions, longs=self.longs, ints=self.ints, enums=self.enums,
                   valid=self.valid, str_offsets=self.str_offsets, str_data=self.str_data)
        used_bytes = self.string_bytes
        self._allocate(rows, nbytes)
        n = self.rows
        self.positions[:n] = old["positions"][:n]
        for name in ("longs", "ints", "enums", "valid"):
            getattr(self, name)[:, :n] = old[name][:, :n]
        self.str_offsets[:, :n + 1] = old["str_offsets"][:, :n + 1]
        self.str_data[:, :used_bytes] = old["str_data"][:, :used_bytes]

    def append_block(self, data: bytes, count: int, first_position: int) -> BlockError | None:
        """Decode the block's ``count`` datums after the rows already held; None when they all
        decoded (they are then held, at ``first_position``...), else why not (nothing is kept)."""
        view = np.frombuffer(data, np.uint8)
        if len(view) > _MAX_STRING_BYTES:
            return BlockError(0, avro_kernel.ERR_CAPACITY, 0)
        if self.rows + count > self.row_capacity:
            self._grow(max(2 * self.row_capacity, self.rows + count), self.str_data.shape[1])
        p = self.program
        while True:
            avro_kernel.decode_block(view, count, p.ops, p.n_fields, p.enum_map, self.rows, self.longs, self.ints,
                                     self.enums, self.valid, self.str_offsets, self.str_data, self._error)
            record, code, offset = (int(x) for x in self._error)
            if code != avro_kernel.ERR_CAPACITY:
                break
            # A column's new bytes cannot exceed the block's size: one growth always suffices.
            needed = self.string_bytes + len(view)
            if needed > _MAX_STRING_BYTES:
                return BlockError(record, code, offset)
            self._grow(self.row_capacity, max(2 * self.str_data.shape[1], needed))
        if code != avro_kernel.ERR_NONE:
            return BlockError(record, code, offset)
        self.positions[self.rows:self.rows + count] = np.arange(first_position, first_position + count)
        self.rows += count
        return None

    def fits_more(self, nbytes: int) -> bool:
        """False when a block of ``nbytes`` might overflow a string column's int32 offsets."""
        return self.string_bytes + nbytes <= _MAX_STRING_BYTES

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
                data = self.str_data[column.slot, :int(offsets[-1])]
                array = pa.Array.from_buffers(arrow_type, stop, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                              null_count=null_count)
            elif column.kind == "enum":
                indices = pa.Array.from_buffers(pa.int32(), stop, [validity, pa.py_buffer(self.enums[column.slot, :stop])],
                                                null_count=null_count)
                array = pa.array(column.symbols, arrow_type).take(indices)
            else:
                values = (self.longs if column.kind == "long" else self.ints)[column.slot, :stop]
                array = pa.Array.from_buffers(arrow_type, stop, [validity, pa.py_buffer(values)], null_count=null_count)
            columns[column.name] = array
        return columns

    def tail(self, start: int, row_capacity: int) -> ColumnBuffers:
        """New buffers holding copies of rows ``start..`` of these (the rows past a batch's end)."""
        n = self.rows - start
        first = self.str_offsets[:, start]
        last = self.str_offsets[:, self.rows]
        nbytes = int((last - first).max()) if self.program.n_string else 0
        out = ColumnBuffers(self.program, max(row_capacity, n), max(self.str_data.shape[1], nbytes))
        out.positions[:n] = self.positions[start:self.rows]
        for name in ("longs", "ints", "enums", "valid"):
            getattr(out, name)[:, :n] = getattr(self, name)[:, start:self.rows]
        out.str_offsets[:, :n + 1] = self.str_offsets[:, start:self.rows + 1] - first[:, None]
        for s in range(self.program.n_string):
            out.str_data[s, :last[s] - first[s]] = self.str_data[s, first[s]:last[s]]
        out.rows = n
        return out


def _constant(value, length: int, arrow_type: pa.DataType) -> pa.Array:
    """A column of a field the writer lacks: its default in every row (None: all null)."""
    if value is None:
        return pa.nulls(length, arrow_type)
    return pa.array([value], arrow_type).take(pa.array(np.zeros(length, np.int32)))
