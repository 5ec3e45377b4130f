"""Numba kernel: the Avro datums of one decompressed container block -> column buffers.

The walk is driven by a *program* compiled from the writer schema (see ``avro_program.py``): one
row per writer field, in writer order, ``(opcode, target, valid_slot, arg0, arg1)``. A union field's
row says where its branch rows start (``arg0``) and how many there are (``arg1``); each branch row
is a plain value op (Avro has no union directly inside a union).

Outputs are caller-supplied buffers, one row per output column of a kind, one column per record:
``longs`` (int64), ``ints`` (int32), ``enums`` (int32 reader symbol index), ``valid`` (uint8, 0
where a nullable value is null). Strings: string column ``s`` owns the region
``str_data[str_base[s]:str_base[s] + str_cap[s]]`` of one byte buffer, and ``str_offsets[s]`` holds
Arrow-style offsets into that region (record ``r`` is bytes ``str_offsets[s, r]`` to
``str_offsets[s, r + 1]`` of it). Records are written at rows ``row0 .. row0 + count - 1``;
``str_offsets[:, row0]`` must already hold where each string column continues.

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
ERR_CAPACITY = 9         # a string column's region is full (out_error[2] says which): grow, run again
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


# Ops that start with a varint: a length, a number, an index or a branch.
_NEEDS_VARINT = np.zeros(16, np.bool_)
for _op in (OP_LONG, OP_INT, OP_MILLIS, OP_STRING, OP_ENUM, OP_UNION, OP_SKIP_VARINT, OP_SKIP_STRING,
            OP_SKIP_BYTES, OP_SKIP_ENUM):
    _NEEDS_VARINT[_op] = True


@njit(nogil=True, cache=True)
def decode_block(data, count, program, n_fields, enum_map, row0,
                 longs, ints, enums, valid, str_offsets, str_base, str_cap, str_data, out_error):
    """Decode the ``count`` datums of the block ``data`` (uint8) into rows ``row0..`` of the buffers.

    ``out_error`` (int64[3]) receives ``(record index, ERR_* code, byte offset of that record)``:
    ``(-1, ERR_NONE, len(data))`` when every datum decoded and the block had no bytes left over;
    for ERR_CAPACITY the third value is the string column that is full instead.
    On an error, the rows written so far are not meaningful; the caller discards them.

    One function on purpose: Numba reference-counts arrays passed to helpers, which costs more
    than the decoding itself, so the op dispatch and the varint reading are written inline.
    """
    needs_varint = _NEEDS_VARINT
    end = data.shape[0]
    pos = 0
    error = ERR_NONE
    full_column = -1
    i = 0
    while i < count and error == ERR_NONE:
        row = row0 + i
        record_start = pos
        f = 0
        while f < n_fields and error == ERR_NONE:
            k = f
            while True:   # runs twice for a union: the branch index, then the branch's value
                op = program[k, OPCODE]
                x = np.int64(0)
                if needs_varint[op]:
                    # Avro long: zigzag varint, at most 10 bytes (the 10th 0 or 1).
                    if pos >= end:
                        error = ERR_TRUNCATED
                        break
                    b = data[pos]
                    pos += 1
                    if b < 0x80:
                        x = np.int64(b)
                        x = (x >> 1) ^ -(x & 1)
                    else:
                        z = np.uint64(b & 0x7F)
                        shift = np.uint64(7)
                        while True:
                            if pos >= end:
                                error = ERR_TRUNCATED
                                break
                            b = data[pos]
                            pos += 1
                            if shift == np.uint64(63) and b > 1:
                                error = ERR_VARINT
                                break
                            z |= np.uint64(b & 0x7F) << shift
                            if b < 0x80:
                                break
                            shift += np.uint64(7)
                        if error != ERR_NONE:
                            break
                        x = np.int64(z >> np.uint64(1)) ^ -np.int64(z & np.uint64(1))
                if op == OP_UNION:
                    if x < 0 or x >= program[k, ARG1]:
                        error = ERR_INDEX
                        break
                    k = program[k, ARG0] + x
                    continue
                target = program[k, TARGET]
                slot = program[k, VALID]
                if op == OP_STRING or op == OP_SKIP_STRING or op == OP_SKIP_BYTES:
                    if x < 0:
                        error = ERR_NEGATIVE_LENGTH
                        break
                    if x > end - pos:
                        error = ERR_TRUNCATED
                        break
                    if op == OP_STRING:
                        start = np.int64(str_offsets[target, row])
                        if start + x > str_cap[target]:
                            error = ERR_CAPACITY
                            full_column = target
                            break
                        out = str_base[target] + start
                        seen = 0
                        for j in range(x):
                            c = data[pos + j]
                            str_data[out + j] = c
                            seen |= c
                        str_offsets[target, row + 1] = start + x
                    else:
                        seen = 0
                        if op == OP_SKIP_STRING:
                            for j in range(x):
                                seen |= data[pos + j]
                    if seen >= 0x80 and not is_utf8(data, pos, pos + x):
                        error = ERR_UTF8
                        break
                    pos += x
                elif op == OP_LONG:
                    longs[target, row] = x
                elif op == OP_INT:
                    if x < INT32_MIN or x > INT32_MAX:
                        error = ERR_RANGE
                        break
                    ints[target, row] = x
                elif op == OP_MILLIS:
                    if x < MILLIS_MIN or x > MILLIS_MAX:
                        error = ERR_RANGE
                        break
                    longs[target, row] = x * 1000
                elif op == OP_ENUM or op == OP_SKIP_ENUM:
                    if x < 0 or x >= program[k, ARG1]:
                        error = ERR_INDEX
                        break
                    if op == OP_ENUM:
                        symbol = enum_map[program[k, ARG0] + x]
                        if symbol < 0:
                            error = ERR_UNRESOLVED
                            break
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
                    break
                elif op == OP_SKIP_FIXED:
                    if program[k, ARG0] > end - pos:
                        error = ERR_TRUNCATED
                        break
                    pos += program[k, ARG0]
                elif op == OP_SKIP_BOOLEAN:
                    if pos >= end:
                        error = ERR_TRUNCATED
                        break
                    if data[pos] > 1:
                        error = ERR_BOOLEAN
                        break
                    pos += 1
                elif op == OP_FAIL:
                    error = ERR_UNRESOLVED
                    break
                # OP_SKIP_VARINT: the varint is read; OP_SKIP_NULL: nothing to read.
                if slot >= 0:
                    valid[slot, row] = 1
                break
            f += 1
        if error != ERR_NONE:
            out_error[0] = i
            out_error[1] = error
            out_error[2] = full_column if error == ERR_CAPACITY else record_start
            return
        i += 1
    if pos != end:
        out_error[0] = count
        out_error[1] = ERR_LEFTOVER
        out_error[2] = pos
        return
    out_error[0] = -1
    out_error[1] = ERR_NONE
    out_error[2] = end
