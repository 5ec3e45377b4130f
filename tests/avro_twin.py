"""The slow twin of ``avro_kernel.decode_block``: the same walk in plain Python, written for clarity.

It is the oracle the property tests compare the kernel against, so it shares no code with it: varints
are read with Python's unbounded ints, UTF-8 is checked by ``bytes.decode``, and ranges come from
``datetime``. Same arguments and outputs as the kernel; slow, for small inputs only.
"""

from __future__ import annotations

import datetime as dt

from cdr_schemas.decoders import avro_kernel as k

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class _Failed(Exception):
    def __init__(self, code: int, column: int = -1):
        super().__init__(code)
        self.code = code
        self.column = column   # the full string column, for ERR_CAPACITY


class _Cursor:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Failed(k.ERR_TRUNCATED)
        piece = self.data[self.pos:self.pos + n]
        self.pos += n
        return piece

    def long(self) -> int:
        z = shift = 0
        while True:
            (byte,) = self.take(1)
            z |= (byte & 0x7F) << shift
            if z >= 1 << 64:
                raise _Failed(k.ERR_VARINT)
            if byte < 0x80:
                return (z >> 1) ^ -(z & 1)
            shift += 7
            if shift > 63:
                raise _Failed(k.ERR_VARINT)

    def length_prefixed(self) -> bytes:
        n = self.long()
        if n < 0:
            raise _Failed(k.ERR_NEGATIVE_LENGTH)
        return self.take(n)


def _text(raw: bytes) -> bytes:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed(k.ERR_UTF8) from None
    return raw


def _millis_as_micros(value: int) -> int:
    try:
        _EPOCH + dt.timedelta(milliseconds=value)
    except OverflowError:
        raise _Failed(k.ERR_RANGE) from None
    return value * 1000


def decode_block_twin(data, count, program, n_fields, enum_map, row0,
                      longs, ints, enums, valid, str_offsets, str_base, str_cap, str_data, out_error) -> None:
    """See ``avro_kernel.decode_block``; identical contract."""
    cursor = _Cursor(bytes(data))
    for i in range(count):
        start = cursor.pos
        try:
            for f in range(n_fields):
                row = f
                if program[f][k.OPCODE] == k.OP_UNION:
                    branch = cursor.long()
                    if not 0 <= branch < program[f][k.ARG1]:
                        raise _Failed(k.ERR_INDEX)
                    row = program[f][k.ARG0] + branch
                _one_value(cursor, [int(x) for x in program[row]], enum_map, row0 + i,
                           longs, ints, enums, valid, str_offsets, (str_base, str_cap, str_data))
        except _Failed as failure:
            out_error[:] = (i, failure.code, failure.column if failure.code == k.ERR_CAPACITY else start)
            return
    if cursor.pos != len(cursor.data):
        out_error[:] = (count, k.ERR_LEFTOVER, cursor.pos)
        return
    out_error[:] = (-1, k.ERR_NONE, cursor.pos)


def _one_value(cursor: _Cursor, op, enum_map, row, longs, ints, enums, valid, str_offsets, strings) -> None:
    code, target, slot, arg0, arg1 = op
    str_base, str_cap, str_data = strings
    if code == k.OP_NULL:
        valid[slot, row] = 0
        if arg0 == k.COL_STRING:
            str_offsets[target, row + 1] = str_offsets[target, row]
        else:
            {k.COL_LONG: longs, k.COL_INT: ints, k.COL_ENUM: enums}[arg0][target, row] = 0
        return
    if code == k.OP_FAIL:
        raise _Failed(k.ERR_UNRESOLVED)
    if code == k.OP_STRING:
        value = cursor.length_prefixed()
        start = int(str_offsets[target, row])
        if start + len(value) > str_cap[target]:
            raise _Failed(k.ERR_CAPACITY, target)
        _text(value)
        base = int(str_base[target]) + start
        str_data[base:base + len(value)] = list(value)
        str_offsets[target, row + 1] = start + len(value)
    elif code == k.OP_LONG:
        longs[target, row] = cursor.long()
    elif code == k.OP_INT:
        value = cursor.long()
        if not -(2**31) <= value < 2**31:
            raise _Failed(k.ERR_RANGE)
        ints[target, row] = value
    elif code == k.OP_MILLIS:
        longs[target, row] = _millis_as_micros(cursor.long())
    elif code == k.OP_ENUM:
        index = cursor.long()
        if not 0 <= index < arg1:
            raise _Failed(k.ERR_INDEX)
        if enum_map[arg0 + index] < 0:
            raise _Failed(k.ERR_UNRESOLVED)
        enums[target, row] = enum_map[arg0 + index]
    elif code == k.OP_SKIP_VARINT:
        cursor.long()
    elif code == k.OP_SKIP_ENUM:
        if not 0 <= cursor.long() < arg1:
            raise _Failed(k.ERR_INDEX)
    elif code == k.OP_SKIP_STRING:
        _text(cursor.length_prefixed())
    elif code == k.OP_SKIP_BYTES:
        cursor.length_prefixed()
    elif code == k.OP_SKIP_FIXED:
        cursor.take(arg0)
    elif code == k.OP_SKIP_BOOLEAN:
        if cursor.take(1)[0] > 1:
            raise _Failed(k.ERR_BOOLEAN)
    elif code != k.OP_SKIP_NULL:
        raise ValueError(f"opcode {code} is not a value op")
    if slot >= 0:
        valid[slot, row] = 1
