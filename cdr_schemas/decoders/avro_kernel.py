"""Numba kernel: the Avro datums of one decompressed container block -> column buffers.

The walk is driven by a *program* compiled from the writer schema (see ``avro_program.py``): one
row per writer field, in writer order, ``(opcode, target, valid_slot, arg0, arg1)``. A union field's
row says where its branch rows start (``arg0``) and how many there are (``arg1``); each branch row
is a plain value op (Avro has no union directly inside a union).

Outputs are caller-supplied 2-D buffers, one row per output column of a kind, one column per
record: ``longs`` (int64), ``ints`` (int32), ``enums`` (int32 reader symbol index), ``valid``
(uint8, 0 where a nullable value is null), and for strings ``str_offsets`` (int32, Arrow-style:
record ``r`` of string column ``s`` is ``str_data[s, str_offsets[s, r]:str_offsets[s, r + 1]]``).
Records are written at rows ``row0 .. row0 + count - 1``; ``str_offsets[:, row0]`` must already
hold where each string column's data continues.

The kernel is deliberately *stricter* than fastavro, never laxer: a datum it has any doubt about
(see the ``ERR_*`` codes) stops the walk and is reported in ``out_error``; the caller then decodes
that whole block with the per-datum reference path, which decides what the bad bytes become.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# --- program layout ------------------------------------------------------------------------------
OPCODE, TARGET, VALID, ARG0, ARG1 = 0, 1, 2, 3, 4
PROGRAM_WIDTH = 5

# Value ops (a writer field's row, or a union branch row).
OP_LONG = 1           # long (or int) -> longs[target]
OP_INT = 2            # int -> ints[target]; must fit 32 bits
OP_MILLIS = 3         # long timestamp-millis -> longs[target] in µs; within datetime's years 1..9999
OP_STRING = 4         # string -> string column target; must be valid UTF-8
OP_ENUM = 5           # enum index i < arg1 -> enums[target] = enum_map[arg0 + i], which must be >= 0
OP_NULL = 6           # null -> valid[valid_slot] = 0 and the target (of kind arg0, COL_*) blanked
OP_FAIL = 7           # a union branch that does not resolve to the reader's field
OP_SKIP_VARINT = 9    # int or long the reader does not have
OP_SKIP_STRING = 10   # string the reader does not have (UTF-8 still checked)
OP_SKIP_BYTES = 11    # bytes the reader does not have
OP_SKIP_FIXED = 12    # arg0 bytes the reader does not have: float (4), double (8), fixed
OP_SKIP_BOOLEAN = 13  # boolean the reader does not have (the byte must be 0 or 1)
OP_SKIP_ENUM = 14     # enum the reader does not have (index < arg1)
OP_SKIP_NULL = 15     # null: nothing to read
# Field op only.
OP_UNION = 8          # branch index b < arg1, then run branch row arg0 + b

# Output column kinds (OP_NULL's arg0).
COL_LONG, COL_INT, COL_ENUM, COL_STRING = 0, 1, 2, 3

# --- why a block could not be decoded (out_error[1]) ---------------------------------------------
ERR_NONE = 0
ERR_TRUNCATED = 1        # a value runs past the end of the block
ERR_VARINT = 2           # a varint longer than 64 bits
ERR_NEGATIVE_LENGTH = 3  # a string or bytes length below zero
ERR_UTF8 = 4             # a string that is not valid UTF-8
ERR_RANGE = 5            # an int beyond 32 bits, or a timestamp-millis beyond datetime's range
ERR_INDEX = 6            # a union branch or enum index out of range
ERR_UNRESOLVED = 7       # the value does not resolve to the reader schema (unknown symbol, null for a required field)
ERR_LEFTOVER = 8         # bytes left in the block after its records
ERR_CAPACITY = 9         # str_data is full: grow it and run the block again
ERR_BOOLEAN = 10         # a boolean byte other than 0 or 1

ERROR_NAMES = {
    ERR_NONE: "none", ERR_TRUNCATED: "value runs past the block end", ERR_VARINT: "varint over 64 bits",
    ERR_NEGATIVE_LENGTH: "negative length", ERR_UTF8: "invalid UTF-8", ERR_RANGE: "value out of range",
    ERR_INDEX: "union or enum index out of range", ERR_UNRESOLVED: "value does not resolve to the reader schema",
    ERR_LEFTOVER: "bytes left after the block's records", ERR_CAPACITY: "string buffer full",
    ERR_BOOLEAN: "boolean byte not 0 or 1",
}

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# epoch + timedelta(milliseconds=x) must be a datetime (years 1..9999), as fastavro builds one.
MILLIS_MIN, MILLIS_MAX = -62_135_596_800_000, 253_402_300_799_999


@njit(nogil=True, cache=True)
def read_long(data, pos, end):
    """Avro long (zigzag varint) at ``data[pos]``: (value, next position), or (0, -ERR_*) when the
    varint runs past ``end`` or has more than 64 bits (at most 10 bytes, the 10th 0 or 1)."""
    if pos >= end:
        return np.int64(0), -ERR_TRUNCATED
    b = data[pos]
    if b < 0x80:
        small = np.int64(b)
        return (small >> 1) ^ -(small & 1), pos + 1
    z = np.uint64(b & 0x7F)
    shift = np.uint64(7)
    pos += 1
    while True:
        if pos >= end:
            return np.int64(0), -ERR_TRUNCATED
        b = data[pos]
        pos += 1
        if shift == np.uint64(63) and b > 1:
            return np.int64(0), -ERR_VARINT
        z |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return np.int64(z >> np.uint64(1)) ^ -np.int64(z & np.uint64(1)), pos
        shift += np.uint64(7)


@njit(nogil=True, cache=True)
def is_utf8(data, start, stop):
    """True when ``data[start:stop]`` is well-formed UTF-8 as Python's strict decoder reads it:
    no overlong forms, no surrogates (U+D800..DFFF), nothing above U+10FFFF, no cut sequence."""
    i = start
    while i < stop:
        c = data[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:                      # a continuation byte, or an overlong 2-byte lead
            return False
        elif c < 0xE0:
            if i + 1 >= stop or (data[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= stop:
                return False
            c1, c2 = data[i + 1], data[i + 2]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):   # overlong; surrogate
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= stop:
                return False
            c1, c2, c3 = data[i + 1], data[i + 2], data[i + 3]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80 or (c3 & 0xC0) != 0x80:
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):   # overlong; > U+10FFFF
                return False
            i += 4
        else:
            return False
    return True


@njit(nogil=True, cache=True)
def _skip_length_prefixed(data, pos, end, check_utf8):
    n, pos = read_long(data, pos, end)
    if pos < 0:
        return pos
    if n < 0:
        return -ERR_NEGATIVE_LENGTH
    if n > end - pos:
        return -ERR_TRUNCATED
    if check_utf8 and not is_utf8(data, pos, pos + n):
        return -ERR_UTF8
    return pos + n


@njit(nogil=True, cache=True)
def _value(program, k, data, pos, end, row, enum_map, longs, ints, enums, valid, str_offsets, str_data):
    """Run value op ``program[k]`` for record ``row``: the next position, or -ERR_*."""
    op = program[k, OPCODE]
    target = program[k, TARGET]
    slot = program[k, VALID]
    if op == OP_STRING:
        n, pos = read_long(data, pos, end)
        if pos < 0:
            return pos
        if n < 0:
            return -ERR_NEGATIVE_LENGTH
        if n > end - pos:
            return -ERR_TRUNCATED
        start = np.int64(str_offsets[target, row])
        if start + n > str_data.shape[1]:
            return -ERR_CAPACITY
        seen = 0
        for j in range(n):
            c = data[pos + j]
            str_data[target, start + j] = c
            seen |= c
        if seen >= 0x80 and not is_utf8(data, pos, pos + n):
            return -ERR_UTF8
        str_offsets[target, row + 1] = start + n
        pos += n
    elif op == OP_LONG or op == OP_INT or op == OP_MILLIS:
        x, pos = read_long(data, pos, end)
        if pos < 0:
            return pos
        if op == OP_LONG:
            longs[target, row] = x
        elif op == OP_INT:
            if x < INT32_MIN or x > INT32_MAX:
                return -ERR_RANGE
            ints[target, row] = x
        else:
            if x < MILLIS_MIN or x > MILLIS_MAX:
                return -ERR_RANGE
            longs[target, row] = x * 1000
    elif op == OP_ENUM:
        x, pos = read_long(data, pos, end)
        if pos < 0:
            return pos
        if x < 0 or x >= program[k, ARG1]:
            return -ERR_INDEX
        symbol = enum_map[program[k, ARG0] + x]
        if symbol < 0:
            return -ERR_UNRESOLVED
        enums[target, row] = symbol
    elif op == OP_NULL:
        valid[slot, row] = 0
        kind = program[k, ARG0]
        if kind == COL_STRING:
            str_offsets[target, row + 1] = str_offsets[target, row]
        elif kind == COL_LONG:
            longs[target, row] = 0
        elif kind == COL_INT:
            ints[target, row] = 0
        else:
            enums[target, row] = 0
        return pos
    elif op == OP_SKIP_VARINT or op == OP_SKIP_ENUM:
        x, pos = read_long(data, pos, end)
        if pos < 0:
            return pos
        if op == OP_SKIP_ENUM and (x < 0 or x >= program[k, ARG1]):
            return -ERR_INDEX
        return pos
    elif op == OP_SKIP_STRING:
        return _skip_length_prefixed(data, pos, end, True)
    elif op == OP_SKIP_BYTES:
        return _skip_length_prefixed(data, pos, end, False)
    elif op == OP_SKIP_FIXED:
        if program[k, ARG0] > end - pos:
            return -ERR_TRUNCATED
        return pos + program[k, ARG0]
    elif op == OP_SKIP_BOOLEAN:
        if pos >= end:
            return -ERR_TRUNCATED
        if data[pos] > 1:
            return -ERR_BOOLEAN
        return pos + 1
    elif op == OP_SKIP_NULL:
        return pos
    else:  # OP_FAIL
        return -ERR_UNRESOLVED
    if slot >= 0:
        valid[slot, row] = 1
    return pos


@njit(nogil=True, cache=True)
def decode_block(data, count, program, n_fields, enum_map, row0,
                 longs, ints, enums, valid, str_offsets, str_data, out_error):
    """Decode the ``count`` datums of the block ``data`` (uint8) into rows ``row0..`` of the buffers.

    ``out_error`` (int64[3]) receives ``(record index, ERR_* code, byte offset of that record)``:
    ``(-1, ERR_NONE, len(data))`` when every datum decoded and the block had no bytes left over.
    On an error, the rows written so far are not meaningful; the caller discards them.
    """
    end = data.shape[0]
    pos = 0
    for i in range(count):
        row = row0 + i
        start = pos
        for f in range(n_fields):
            k = f
            if program[f, OPCODE] == OP_UNION:
                branch, pos = read_long(data, pos, end)
                if pos < 0:
                    break
                if branch < 0 or branch >= program[f, ARG1]:
                    pos = -ERR_INDEX
                    break
                k = program[f, ARG0] + branch
            pos = _value(program, k, data, pos, end, row, enum_map, longs, ints, enums, valid,
                         str_offsets, str_data)
            if pos < 0:
                break
        if pos < 0:
            out_error[0] = i
            out_error[1] = -pos
            out_error[2] = start
            return
    if pos != end:
        out_error[0] = count
        out_error[1] = ERR_LEFTOVER
        out_error[2] = pos
        return
    out_error[0] = -1
    out_error[1] = ERR_NONE
    out_error[2] = end
