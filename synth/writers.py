"""Fast writers of usage batches to files: Avro container files, Parquet and JSON lines.

Every writer takes Arrow record batches shaped like :func:`cdr_schemas.usage_batch_schema` (the
provenance columns and any other extra column are ignored) and writes the fields of one usage
schema version, ``"v1"``, ``"v2"`` or ``"v3"``. A v2 or v3 field missing from the batch is written with its Avro
default; a missing field without a default is a ``ValueError``.

* **Avro**: a batch becomes Avro binary datums, then standard container blocks (``null`` or
  ``deflate`` codec, 16-byte sync markers); fastavro reads the files back unchanged. Supported field
  types: string, bytes, int, long, boolean, float, double, enum, ``timestamp-micros``/``-millis``
  longs, and ``["null", T]`` unions of those; that covers the usage schemas.
* **Parquet**: pyarrow, with the Arrow schema mapped from the Avro schema.
* **JSON lines**: one plain JSON object per line (not Avro's JSON encoding: a union value is written
  bare), ``start_time`` as an ISO 8601 UTC string (``2026-01-05T08:30:00Z``), enums as their
  symbol, null fields omitted. JSON lines are the loosely typed edge format, so this writer does not
  enforce required fields or enum symbols: a batch with a null ``served_msisdn`` gives a line
  without that key. Avro and Parquet reject such batches with a ``ValueError``.

Two engines encode Avro datums and JSON lines, picked by name: ``"numba"`` (default; one compiled
loop over the rows, 3-8x faster, releases the GIL) and ``"numpy"`` (NumPy and Arrow compute only,
column at a time; the reference the tests hold the other to). Numba is imported only when its engine
is first used. Column checks (required fields, enum symbols, int ranges) happen before either runs.

Output is deterministic: the same batches give the same bytes. The Avro sync marker defaults to a
hash of the file name and schema; pass ``sync_marker`` to choose it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_schemas.arrow_mapping import avro_to_arrow
from cdr_schemas.registry import USAGE_V1, USAGE_V2, USAGE_V3, load_schema

FORMATS = ("avro", "parquet", "jsonl")
SCHEMA_VERSIONS = {"v1": USAGE_V1, "v2": USAGE_V2, "v3": USAGE_V3}
AVRO_CODECS = ("null", "deflate")
FILE_SUFFIXES = {"avro": ".avro", "parquet": ".parquet", "jsonl": ".jsonl"}

_AVRO_MAGIC = b"Obj\x01"
_ENCODE_ROWS = 65_536          # rows encoded per vectorised pass (bounds temporary memory)
_BLOCK_ROWS = 8_192            # rows per Avro block: ~1 MB of usage records
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
ENGINES = ("numba", "numpy")


def usage_avro_schema(schema_version: str) -> dict:
    """The Avro usage schema (parsed ``.avsc`` dict) for ``"v1"``, ``"v2"`` or ``"v3"``."""
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(f"schema_version must be one of {', '.join(SCHEMA_VERSIONS)}, got {schema_version!r}")
    return load_schema(SCHEMA_VERSIONS[schema_version])


def write_usage_file(path: str | os.PathLike, batches: Iterable[pa.RecordBatch], fmt: str,
                     schema_version: str = "v1", **options) -> int:
    """Write ``batches`` to one file at ``path`` in ``fmt``; return the number of records written.

    ``options`` are passed to :class:`UsageFileWriter` (``avro_codec``, ``deflate_level``,
    ``deflate_threads``, ``sync_marker``, ``parquet_compression``, ``engine``).
    """
    with UsageFileWriter(path, fmt, schema_version, **options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return writer.records_written


class UsageFileWriter:
    """Streams usage batches into one file; use as a context manager.

    ``avro_codec`` is ``"deflate"`` (default, raw DEFLATE at ``deflate_level``) or ``"null"``.
    ``sync_marker`` (16 bytes) defaults to a hash of the file name and the schema.
    ``parquet_compression`` is any pyarrow Parquet codec name (default ``"zstd"``).
    ``engine`` picks the Avro and JSON encoder (see the module docs). ``deflate_threads`` compress
    Avro blocks side by side (zlib releases the GIL; the file's bytes do not depend on it).
    """

    def __init__(self, path: str | os.PathLike, fmt: str, schema_version: str = "v1", *,
                 avro_codec: str = "deflate", deflate_level: int = 1, sync_marker: bytes | None = None,
                 parquet_compression: str = "zstd", engine: str = "numba", deflate_threads: int = 2):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if avro_codec not in AVRO_CODECS:
            raise ValueError(f"avro_codec must be one of {', '.join(AVRO_CODECS)}, got {avro_codec!r}")
        if not 0 <= deflate_level <= 9:
            raise ValueError(f"deflate_level must be 0..9, got {deflate_level}")
        if deflate_threads < 1:
            raise ValueError(f"deflate_threads must be at least 1, got {deflate_threads}")
        self.path = Path(path)
        self.fmt = fmt
        self.avro_schema = usage_avro_schema(schema_version)
        self.fields = _parse_fields(self.avro_schema)
        self.records_written = 0
        self._codec = avro_codec
        self._engine = engine
        self._compressors = None
        if fmt == "avro" and avro_codec == "deflate" and deflate_threads > 1:
            self._compressors = ThreadPoolExecutor(max_workers=deflate_threads, thread_name_prefix="avro-deflate")
        self._deflate_level = deflate_level
        self._parquet = None
        if fmt == "parquet":
            self._arrow_schema = avro_to_arrow(self.avro_schema)
            self._parquet = pq.ParquetWriter(self.path, self._arrow_schema, compression=parquet_compression)
            self._file = None
            return
        self._file = open(self.path, "wb")
        if fmt == "avro":
            schema_json = json.dumps(self.avro_schema, separators=(",", ":")).encode()
            if sync_marker is None:
                sync_marker = hashlib.md5(self.path.name.encode() + b"\0" + schema_json).digest()
            if len(sync_marker) != 16:
                raise ValueError(f"sync_marker must be 16 bytes, got {len(sync_marker)}")
            self._sync = bytes(sync_marker)
            self._file.write(_avro_header(schema_json, avro_codec.encode(), self._sync))

    def __enter__(self) -> UsageFileWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._compressors is not None:
            self._compressors.shutdown()
            self._compressors = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append the rows of ``batch``; raises ``ValueError`` naming the column on bad data."""
        if self.fmt == "parquet":
            self._parquet.write_batch(_parquet_batch(batch, self.fields, self._arrow_schema))
        elif self.fmt == "jsonl":
            for start in range(0, batch.num_rows, _ENCODE_ROWS):
                lines = encode_jsonl_lines(batch.slice(start, _ENCODE_ROWS), self.fields, newline=True,
                                           engine=self._engine)
                self._file.write(_values_buffer(lines))
        else:
            for start in range(0, batch.num_rows, _ENCODE_ROWS):
                self._write_avro_rows(encode_avro_datums(batch.slice(start, _ENCODE_ROWS), self.fields,
                                                         engine=self._engine))
        self.records_written += batch.num_rows

    def write_jsonl_lines(self, lines: pa.Array) -> None:
        """Append already encoded JSON lines verbatim: binary values that each end with their one
        newline, as :func:`encode_jsonl_lines` makes them with ``newline=True``.

        This is how a test or the generator writes a deliberately broken line: encode a batch,
        replace some lines, write them here.
        """
        if self.fmt != "jsonl":
            raise ValueError(f"write_jsonl_lines needs fmt='jsonl', this writer writes {self.fmt!r}")
        if lines.type not in (pa.binary(), pa.string(), pa.large_binary()) or lines.null_count:
            raise ValueError(f"write_jsonl_lines needs non-null binary lines, got {lines.type} "
                             f"with {lines.null_count} null(s)")
        if len(lines) == 0:
            return
        offsets = _offsets(lines)
        data = np.frombuffer(_values_buffer(lines), np.uint8)
        ends = offsets[1:] - offsets[0] - 1
        if len(lines) and (np.any(np.diff(offsets) == 0) or np.any(data[ends] != 10)
                           or np.count_nonzero(data == 10) != len(lines)):
            raise ValueError("write_jsonl_lines: every line must end with one newline and contain no other")
        self._file.write(data)
        self.records_written += len(lines)

    def _write_avro_rows(self, rows: pa.BinaryArray) -> None:
        offsets = _offsets(rows)
        data = _values_buffer(rows)
        base = int(offsets[0])
        bounds = [(start, min(start + _BLOCK_ROWS, len(rows))) for start in range(0, len(rows), _BLOCK_ROWS)]
        blocks = [data[int(offsets[start]) - base:int(offsets[stop]) - base] for start, stop in bounds]
        if self._codec == "deflate":
            deflate = functools.partial(_deflate, level=self._deflate_level)
            blocks = list(self._compressors.map(deflate, blocks)) if self._compressors else map(deflate, blocks)
        for (start, stop), block in zip(bounds, blocks):
            self._file.write(_zigzag_bytes(stop - start) + _zigzag_bytes(len(block)))
            self._file.write(block)
            self._file.write(self._sync)


def _deflate(block: memoryview, level: int) -> bytes:
    """Raw DEFLATE (no zlib header), as the Avro deflate codec wants."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(block) + compressor.flush()


# --- schema -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    kind: str                  # string bytes int long boolean float double enum timestamp-micros timestamp-millis
    null_branch: int | None    # index of "null" in the union; None when the field is not nullable
    value_branch: int          # index of the value type in the union (0 when not a union)
    symbols: tuple[str, ...]   # enum symbols
    has_default: bool
    default: object


_SIMPLE_KINDS = ("string", "bytes", "int", "long", "boolean", "float", "double")


def _kind(avro_type, field_name: str) -> tuple[str, tuple[str, ...]]:
    if isinstance(avro_type, str):
        if avro_type in _SIMPLE_KINDS:
            return avro_type, ()
    elif isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if avro_type.get("type") == "long" and logical in ("timestamp-micros", "timestamp-millis"):
            return logical, ()
        if avro_type.get("type") == "enum":
            return "enum", tuple(avro_type["symbols"])
        if avro_type.get("type") in _SIMPLE_KINDS:
            return avro_type["type"], ()
    raise ValueError(f"Avro field {field_name!r}: type {avro_type!r} is not supported by the usage writers "
                     f"(flat records of primitives, enums, timestamps and [\"null\", T] unions only)")


def _parse_fields(avro_schema: dict) -> tuple[_Field, ...]:
    fields = []
    for f in avro_schema["fields"]:
        avro_type, null_branch, value_branch = f["type"], None, 0
        if isinstance(avro_type, list):
            others = [i for i, t in enumerate(avro_type) if t != "null"]
            if len(others) != 1 or len(avro_type) != 2:
                raise ValueError(f"Avro field {f['name']!r}: only [\"null\", T] unions are supported")
            value_branch = others[0]
            null_branch = 1 - value_branch
            avro_type = avro_type[value_branch]
        kind, symbols = _kind(avro_type, f["name"])
        fields.append(_Field(f["name"], kind, null_branch, value_branch, symbols, "default" in f, f.get("default")))
    return tuple(fields)


def _column(batch: pa.RecordBatch, field: _Field) -> pa.Array:
    index = batch.schema.get_field_index(field.name)
    if index >= 0:
        return batch.column(index)
    if not field.has_default:
        raise ValueError(f"batch has no column {field.name!r}, which the Avro schema requires and has no default; "
                         f"columns present: {', '.join(batch.schema.names)}")
    if field.default is None:
        return pa.nulls(batch.num_rows, _arrow_type(field))
    return pa.array(np.full(batch.num_rows, field.default), _arrow_type(field))


def _arrow_type(field: _Field) -> pa.DataType:
    return {"string": pa.string(), "enum": pa.string(), "bytes": pa.binary(), "int": pa.int32(),
            "long": pa.int64(), "boolean": pa.bool_(), "float": pa.float32(), "double": pa.float64(),
            "timestamp-micros": pa.timestamp("us", tz="UTC"),
            "timestamp-millis": pa.timestamp("ms", tz="UTC")}[field.kind]


def _check_required(column: pa.Array, field: _Field) -> None:
    if field.null_branch is None and column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"column {field.name!r} has {column.null_count} null value(s) (first at row {first}) "
                         f"but the Avro field is not nullable; fill it or reject those records first")


def _epoch_values(column: pa.Array, field: _Field) -> np.ndarray:
    """int64 values of a timestamp column in the field's logical unit (µs or ms since the epoch)."""
    unit = "us" if field.kind == "timestamp-micros" else "ms"
    if pa.types.is_timestamp(column.type):
        if column.type.unit != unit:
            column = pc.cast(column, pa.timestamp(unit, tz=column.type.tz))
        column = column.view(pa.int64())
    elif not pa.types.is_integer(column.type):
        raise ValueError(f"column {field.name!r}: expected a timestamp or int64 column, got {column.type}")
    return _int_values(column)


def _int_values(column: pa.Array) -> np.ndarray:
    if column.null_count:
        column = pc.fill_null(column, 0)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _check_binary_like(column: pa.Array, field: _Field) -> None:
    t = column.type
    if not (pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t)
            or pa.types.is_large_binary(t)):
        raise ValueError(f"column {field.name!r}: expected a string column, got {t}")


def _enum_index(column: pa.Array, field: _Field) -> np.ndarray:
    """Symbol index per row (0 for nulls); ``ValueError`` listing values that are not symbols."""
    index = pc.index_in(column, value_set=pa.array(field.symbols, column.type))
    unknown = pc.and_(column.is_valid(), index.is_null())
    if pc.any(unknown).as_py():
        bad = sorted(set(pc.filter(column, unknown).to_pylist()))[:5]
        raise ValueError(f"column {field.name!r}: value(s) {bad} are not symbols of the Avro enum "
                         f"({', '.join(field.symbols)})")
    return _int_values(index)


def _checked_ints(column: pa.Array, field: _Field) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise ValueError(f"column {field.name!r}: expected an integer column, got {column.type}")
    values = _int_values(column)
    if field.kind == "int" and len(values) and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
        raise ValueError(f"column {field.name!r}: values outside the Avro int (32-bit) range")
    return values


def _present(column: pa.Array) -> np.ndarray | None:
    if column.null_count == 0:
        return None
    return column.is_valid().to_numpy(zero_copy_only=False)


# --- the "numba" engine: one compiled loop over the rows ----------------------------------------
#
# Columns are first flattened into a few homogeneous arrays the loop can read:
#   ops[f]       (kind, slot, null_branch, value_branch) per field; kind 0 = integer (nums[slot]),
#                1 = string (strs[slot]; Avro: length + bytes, JSON: quoted and escaped),
#                2 = raw bytes (strs[slot] copied as they are: Avro booleans and floats, JSON
#                literals already rendered: true/false, numbers as text)
#   nums         (integer fields, rows) int64
#   str_offsets  (string fields, rows + 1) int64 offsets into str_data
#   valid        (fields, rows) uint8: 0 where the value is null
# and for JSON the key literals (``,"name":``) of every field. ``str_data`` and ``out`` end with
# _SLACK spare bytes for the block copies of _put_bytes.

_INTEGER, _STRING, _RAW = 0, 1, 2


def _string_buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets from 0, uint8 bytes) of a string or binary array, slice offset honoured."""
    if pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type):
        offset_type, width = np.int64, 8
    else:
        offset_type, width = np.int32, 4
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], offset_type, count=len(column) + 1,
                            offset=column.offset * width).astype(np.int64)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    start, stop = int(offsets[0]), int(offsets[-1])
    return offsets - start, data[start:stop]


def _encode_with_kernel(batch: pa.RecordBatch, fields, json_lines: bool, newline: bool) -> pa.BinaryArray:
    n = batch.num_rows
    ops = np.zeros((len(fields), 4), np.int64)
    valid = np.ones((len(fields), n), np.uint8)
    nums, strings = [], []
    for f, field in enumerate(fields):
        column = _column(batch, field)
        if not json_lines:
            _check_required(column, field)
        if column.null_count:
            valid[f] = column.is_valid().to_numpy(zero_copy_only=False)
        kind, values = (_json_column if json_lines else _avro_column)(column, field)
        slot = len(nums) if kind == _INTEGER else len(strings)
        (nums if kind == _INTEGER else strings).append(values)
        null_branch = -1 if field.null_branch is None else field.null_branch
        ops[f] = (kind, slot, null_branch, field.value_branch)
    num_matrix = np.stack(nums) if nums else np.zeros((0, n), np.int64)
    str_offsets = np.zeros((len(strings), n + 1), np.int64)
    base = 0
    for k, (offsets, data) in enumerate(strings):
        str_offsets[k] = offsets + base
        base += len(data)
    str_data = np.concatenate([data for _, data in strings] + [np.zeros(_SLACK, np.uint8)])
    out_offsets = np.zeros(n + 1, np.int64)
    kernels = _kernels()
    if json_lines:
        keys = [b"," + json.dumps(field.name).encode() + b":" for field in fields]
        key_offsets = np.zeros(len(keys) + 1, np.int64)
        np.cumsum([len(k) for k in keys], out=key_offsets[1:])
        key_data = np.frombuffer(b"".join(keys) + bytes(_SLACK), np.uint8)
        plain = np.array([not _needs_escapes(data) for _, data in strings] + [False])
        bound = n * (3 + sum(len(k) + 24 for k in keys)) + 6 * len(str_data) + _SLACK
        out = np.empty(bound, np.uint8)
        used = kernels.json_rows(ops, num_matrix, valid, str_offsets, str_data, plain, key_offsets, key_data,
                                 newline, out, out_offsets)
    else:
        bound = n * 20 * len(fields) + len(str_data) + _SLACK
        out = np.empty(bound, np.uint8)
        used = kernels.avro_rows(ops, num_matrix, valid, str_offsets, str_data, out, out_offsets)
    if used >= 2**31:
        return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(out_offsets),
                                                                       pa.py_buffer(out[:used])])
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(out_offsets.astype(np.int32)),
                                                        pa.py_buffer(out[:used])])


def _needs_escapes(data: np.ndarray) -> bool:
    """Whether UTF-8 bytes hold a quote, a backslash or a control character (JSON must escape)."""
    return bool(np.any((data < 0x20) | (data == 0x22) | (data == 0x5C)))


def _fixed_bytes(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, width = matrix.shape
    return np.arange(rows + 1, dtype=np.int64) * width, np.ascontiguousarray(matrix).reshape(-1)


def _avro_column(column: pa.Array, field: _Field):
    """(kind, values) of one field for the Avro kernel, after the field's checks."""
    kind = field.kind
    if kind in ("string", "bytes"):
        _check_binary_like(column, field)
        return _STRING, _string_buffers(column)
    if kind == "enum":
        return _INTEGER, _enum_index(column, field)
    if kind in ("int", "long"):
        return _INTEGER, _checked_ints(column, field)
    if kind.startswith("timestamp"):
        return _INTEGER, _epoch_values(column, field)
    if kind == "boolean":
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
        return _RAW, _fixed_bytes(values.reshape(-1, 1))
    dtype = "<f4" if kind == "float" else "<f8"
    values = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(dtype)
    return _RAW, _fixed_bytes(values.view(np.uint8).reshape(len(values), -1))


def _json_column(column: pa.Array, field: _Field):
    """(kind, values) of one field for the JSON kernel."""
    kind = field.kind
    if kind in ("string", "enum"):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise ValueError(f"column {field.name!r}: expected a string column, got {column.type}")
        return _STRING, _string_buffers(column)
    if kind in ("int", "long"):
        if not pa.types.is_integer(column.type):
            raise ValueError(f"column {field.name!r}: expected an integer column, got {column.type}")
        return _INTEGER, _int_values(column)
    if kind.startswith("timestamp"):
        micros = _epoch_values(column, dataclasses.replace(field, kind="timestamp-micros"))
        return _STRING, _string_buffers(iso_utc_strings(micros))
    return _RAW, _string_buffers(_json_values(column, field))   # booleans, floats: rendered by Arrow


_SLACK = 16   # bytes after the data and the output that _put_bytes may read or overwrite


def _put_bytes(out, pos, data, start, stop):
    """``data[start:stop]`` at ``out[pos]``, in 16-byte blocks (a fixed-size inner loop the compiler
    turns into one wide move; the last block may read and write up to 15 bytes past the end, which
    the slack after ``data`` and ``out`` allows). Returns the next position."""
    length = stop - start
    done = 0
    while done < length:
        for k in range(16):
            out[pos + done + k] = data[start + done + k]
        done += 16
    return pos + length


def _put_long(out, pos, value):
    """Avro long (zigzag varint) at ``out[pos]``; returns the next position."""
    z = np.uint64((value << 1) ^ (value >> 63))
    while z >= np.uint64(0x80):
        out[pos] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
        pos += 1
        z >>= np.uint64(7)
    out[pos] = np.uint8(z)
    return pos + 1


def _avro_rows(ops, nums, valid, str_offsets, str_data, out, out_offsets):
    """Avro datums of every row into ``out`` (row i ends at ``out_offsets[i + 1]``); returns the
    bytes used. ``out`` must be large enough (the caller sizes it for the worst case)."""
    pos = 0
    for i in range(out_offsets.shape[0] - 1):
        for f in range(ops.shape[0]):
            kind, slot, null_branch = ops[f, 0], ops[f, 1], ops[f, 2]
            if null_branch >= 0:
                if valid[f, i] == 0:
                    pos = _put_long(out, pos, null_branch)
                    continue
                pos = _put_long(out, pos, ops[f, 3])
            if kind == 0:
                pos = _put_long(out, pos, nums[slot, i])
            else:
                start, stop = str_offsets[slot, i], str_offsets[slot, i + 1]
                if kind == 1:
                    pos = _put_long(out, pos, stop - start)
                pos = _put_bytes(out, pos, str_data, start, stop)
        out_offsets[i + 1] = pos
    return pos


def _put_decimal(out, pos, value):
    """``value`` (int64) as decimal ASCII at ``out[pos]``; returns the next position."""
    if value < 0:
        out[pos] = 45  # "-"
        pos += 1
        magnitude = np.uint64(0) - np.uint64(value)
    else:
        magnitude = np.uint64(value)
    digits = 1
    probe = magnitude
    while probe >= np.uint64(10):
        probe //= np.uint64(10)
        digits += 1
    for k in range(digits - 1, -1, -1):
        out[pos + k] = np.uint8(48 + magnitude % np.uint64(10))
        magnitude //= np.uint64(10)
    return pos + digits


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _put_json_string(out, pos, data, start, stop, hex_digits):
    """A quoted JSON string of ``data[start:stop]`` (UTF-8), escaped as ``json.dumps`` does."""
    out[pos] = 34
    pos += 1
    for j in range(start, stop):
        c = data[j]
        if c == 34 or c == 92:                  # " and \
            out[pos] = 92
            out[pos + 1] = c
            pos += 2
        elif c < 32:
            out[pos] = 92
            if c == 8:
                out[pos + 1] = 98               # \b
                pos += 2
            elif c == 9:
                out[pos + 1] = 116              # \t
                pos += 2
            elif c == 10:
                out[pos + 1] = 110              # \n
                pos += 2
            elif c == 12:
                out[pos + 1] = 102              # \f
                pos += 2
            elif c == 13:
                out[pos + 1] = 114              # \r
                pos += 2
            else:                               # \u00XX
                out[pos + 1] = 117
                out[pos + 2] = 48
                out[pos + 3] = 48
                out[pos + 4] = hex_digits[c >> 4]
                out[pos + 5] = hex_digits[c & 15]
                pos += 6
        else:
            out[pos] = c
            pos += 1
    out[pos] = 34
    return pos + 1


def _json_rows(ops, nums, valid, str_offsets, str_data, plain, key_offsets, key_data, newline, out, out_offsets):
    """JSON objects of every row into ``out``, null fields omitted; returns the bytes used.
    ``key_data`` holds ``,"name":`` per field; ``plain[slot]`` says a string column needs no escapes."""
    hex_digits = _HEX
    pos = 0
    for i in range(out_offsets.shape[0] - 1):
        out[pos] = 123  # {
        pos += 1
        first = True
        for f in range(ops.shape[0]):
            if valid[f, i] == 0:
                continue
            skip = 1 if first else 0        # the first field written has no leading comma
            first = False
            pos = _put_bytes(out, pos, key_data, key_offsets[f] + skip, key_offsets[f + 1])
            kind, slot = ops[f, 0], ops[f, 1]
            if kind == 0:
                pos = _put_decimal(out, pos, nums[slot, i])
            elif kind == 1 and not plain[slot]:
                pos = _put_json_string(out, pos, str_data, str_offsets[slot, i], str_offsets[slot, i + 1],
                                       hex_digits)
            elif kind == 1:
                out[pos] = 34
                pos = _put_bytes(out, pos + 1, str_data, str_offsets[slot, i], str_offsets[slot, i + 1])
                out[pos] = 34
                pos += 1
            else:
                pos = _put_bytes(out, pos, str_data, str_offsets[slot, i], str_offsets[slot, i + 1])
        out[pos] = 125  # }
        pos += 1
        if newline:
            out[pos] = 10
            pos += 1
        out_offsets[i + 1] = pos
    return pos


@dataclasses.dataclass(frozen=True)
class _Kernels:
    avro_rows: object
    json_rows: object


_KERNELS_LOCK = threading.Lock()


def _kernels() -> _Kernels:
    """The loops above compiled with Numba (once per process, on first use; no on-disk cache)."""
    with _KERNELS_LOCK:      # writer threads may ask at the same moment: set the helpers up once
        return _compiled_kernels()


@functools.cache
def _compiled_kernels() -> _Kernels:
    from numba import njit

    jit = njit(nogil=True, cache=False)
    global _put_bytes, _put_long, _put_decimal, _put_json_string   # compiled loops call compiled helpers
    _put_bytes, _put_long = jit(_put_bytes), jit(_put_long)
    _put_decimal, _put_json_string = jit(_put_decimal), jit(_put_json_string)
    return _Kernels(avro_rows=jit(_avro_rows), json_rows=jit(_json_rows))


# --- the "numpy" engine and Avro container helpers ----------------------------------------------

def _zigzag_bytes(value: int) -> bytes:
    """Avro encoding of one long (zigzag varint)."""
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_header(schema_json: bytes, codec: bytes, sync: bytes) -> bytes:
    meta = {b"avro.codec": codec, b"avro.schema": schema_json}
    out = bytearray(_AVRO_MAGIC)
    out += _zigzag_bytes(len(meta))
    for key, value in meta.items():
        out += _zigzag_bytes(len(key)) + key + _zigzag_bytes(len(value)) + value
    out += _zigzag_bytes(0)
    return bytes(out) + sync


class _Datums:
    """Builds Avro datums column by column as a list of binary pieces joined per row at the end.

    Consecutive numbers (longs, union branches, string lengths) are grouped into one piece: their
    zigzag varints are laid out in a (rows, bytes) matrix and compacted with a mask.
    """

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.pieces: list[pa.Array] = []
        self._numbers: list[tuple[np.ndarray, np.ndarray | None]] = []

    def add_long(self, values: np.ndarray, present: np.ndarray | None = None) -> None:
        """A long per row; where ``present`` is False nothing is written."""
        values = np.asarray(values, dtype=np.int64)
        self._numbers.append((((values << 1) ^ (values >> 63)).view(np.uint64), present))

    def add_bytes(self, values: pa.Array) -> None:
        """Raw bytes per row (nulls written as nothing)."""
        self._flush_numbers()
        values = pc.cast(values, pa.binary()) if values.type != pa.binary() else values
        if values.null_count:
            values = pc.fill_null(values, pa.scalar(b"", pa.binary()))
        self.pieces.append(values)

    def add_fixed(self, matrix: np.ndarray, present: np.ndarray | None) -> None:
        """``matrix[i]`` (uint8, fixed width) per row where present."""
        self._flush_numbers()
        width = matrix.shape[1]
        lengths = np.full(self.num_rows, width, np.int64) if present is None else present * width
        data = matrix.reshape(-1) if present is None else matrix[present].reshape(-1)
        self.pieces.append(_binary_from(lengths, np.ascontiguousarray(data)))

    def _flush_numbers(self) -> None:
        if not self._numbers:
            return
        columns, masks = [], []
        total = np.zeros(self.num_rows, np.int64)
        for z, present in self._numbers:
            for byte, mask in _varint_bytes(z, present):
                columns.append(byte)
                masks.append(mask)
                total += 1 if mask is None else mask
        self._numbers = []
        matrix = np.stack(columns, axis=1)
        if all(mask is None for mask in masks):
            data = matrix.reshape(-1)        # every varint has its full width: no compaction
        else:
            keep = np.empty(matrix.shape, bool)
            for k, mask in enumerate(masks):
                keep[:, k] = True if mask is None else mask
            data = matrix[keep]
        self.pieces.append(_binary_from(total, data))

    def finish(self) -> pa.BinaryArray:
        self._flush_numbers()
        if not self.pieces:
            return _binary_from(np.zeros(self.num_rows, np.int64), np.zeros(0, np.uint8))
        if len(self.pieces) == 1:
            return self.pieces[0]
        return pc.binary_join_element_wise(*self.pieces, pa.scalar(b"", pa.binary()))


def _varint_bytes(z: np.ndarray, present: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The zigzagged longs ``z`` (uint64) as varint byte columns: (byte k of every row, rows that
    have a byte k, or None for all rows). Rows not ``present`` have no bytes."""
    width = max(1, (int(z.max(initial=0)).bit_length() + 6) // 7)
    if width == 1:                                    # small values: one byte each
        return [(z.astype(np.uint8), present)]
    low = int(z.min(initial=0) if present is None else z[present].min(initial=0))
    if present is None and low >= 1 << (7 * (width - 1)):
        nbytes = None                                 # every value has the full width (timestamps)
    else:
        nbytes = np.ones(len(z), np.int8)
        for k in range(1, width):
            nbytes += z >= np.uint64(1 << (7 * k))
        if present is not None:
            nbytes *= present
    out = []
    for k in range(width):
        byte = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        if k < width - 1:
            byte |= np.uint8(0x80) if nbytes is None else (nbytes > k + 1).view(np.uint8) << np.uint8(7)
        out.append((byte, None if nbytes is None else nbytes > k))
    return out


def _binary_from(lengths: np.ndarray, data: np.ndarray) -> pa.BinaryArray:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), len(lengths),
                                       [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _offsets(array: pa.Array) -> np.ndarray:
    """The value offsets of a (non-null) binary or string array, honouring its slice offset."""
    large = pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type)
    dtype, width = (np.int64, 8) if large else (np.int32, 4)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array) + 1, offset=array.offset * width)


def _values_buffer(array: pa.Array) -> memoryview:
    """The contiguous bytes of all values of a (non-null) binary array."""
    offsets = _offsets(array)
    return memoryview(array.buffers()[2])[int(offsets[0]):int(offsets[-1])]


def encode_avro_datums(batch: pa.RecordBatch, fields, engine: str = "numba") -> pa.BinaryArray:
    """One Avro binary datum per row of ``batch`` for the schema ``fields`` (an Avro record schema
    dict, or the parsed fields of one). Raises ``ValueError`` naming the column on nulls in a
    required field, unknown enum symbols or ints out of range."""
    if isinstance(fields, dict):
        fields = _parse_fields(fields)
    if engine == "numba":
        return _encode_with_kernel(batch, fields, json_lines=False, newline=False)
    if engine != "numpy":
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    datums = _Datums(batch.num_rows)
    for field in fields:
        column = _column(batch, field)
        _check_required(column, field)
        present = _present(column)
        if field.null_branch is not None:
            branch = np.full(batch.num_rows, field.value_branch, np.int64)
            if present is not None:
                branch[~present] = field.null_branch
            datums.add_long(branch)
        kind = field.kind
        if kind in ("string", "bytes"):
            _check_binary_like(column, field)
            column = pc.cast(column, pa.binary())
            datums.add_long(_int_values(pc.binary_length(column)), present)
            datums.add_bytes(column)
        elif kind == "enum":
            datums.add_long(_enum_index(column, field), present)
        elif kind in ("int", "long"):
            datums.add_long(_checked_ints(column, field), present)
        elif kind.startswith("timestamp"):
            datums.add_long(_epoch_values(column, field), present)
        elif kind == "boolean":
            values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
            datums.add_fixed(values.reshape(-1, 1), present)
        else:  # float, double: little-endian IEEE 754
            dtype = "<f4" if kind == "float" else "<f8"
            values = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(dtype)
            datums.add_fixed(values.view(np.uint8).reshape(len(values), -1), present)
    return datums.finish()


# --- JSON lines ---------------------------------------------------------------------------------

def _json_strings(column: pa.Array) -> pa.Array:
    """Quoted JSON string literals; rows needing escapes (quotes, backslashes, control characters,
    rare in CDRs) are rendered by ``json.dumps``, the rest by Arrow string kernels."""
    column = pc.cast(column, pa.string())
    quoted = pc.binary_join_element_wise('"', column, '"', "")
    offsets, data = _string_buffers(column)
    special = np.flatnonzero((data < 0x20) | (data == 0x22) | (data == 0x5C))
    if len(special):
        needs = np.zeros(len(column), bool)
        needs[np.searchsorted(offsets, special, side="right") - 1] = True
        needs = pa.array(needs)
        escaped = [json.dumps(value, ensure_ascii=False) for value in pc.filter(column, needs).to_pylist()]
        quoted = pc.replace_with_mask(quoted, needs, pa.array(escaped, pa.string()))
    return quoted


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(rows, width) ASCII digits of non-negative ints, zero-padded."""
    out = np.empty((len(values), width), np.uint8)
    rest = values.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = rest % 10 + 48
        rest //= 10
    return out


def iso_utc_strings(micros: np.ndarray) -> pa.StringArray:
    """ISO 8601 UTC strings of µs since the epoch: ``2026-01-05T08:30:00Z``, with ``.ffffff``
    before the ``Z`` when any value in the array has a fraction of a second. Raises ``ValueError``
    for instants outside the years 0001..9999."""
    micros = np.asarray(micros, dtype=np.int64)
    rows = len(micros)
    seconds, fraction = np.divmod(micros, 1_000_000)
    days, second_of_day = np.divmod(seconds, 86_400)
    first, last = (int(days.min()), int(days.max())) if rows else (0, 0)
    if first < _DAY_MIN or last > _DAY_MAX:
        raise ValueError("timestamps outside years 0001..9999 cannot be written as ISO 8601 strings")
    if last - first < 4 * rows:    # batches span a few days: format each day once, then look it up
        dates = _date_matrix(np.arange(first, last + 1))[days - first]
    else:
        dates = _date_matrix(days)
    parts = [dates, _sep(rows, b"T"), _clock_table()[second_of_day]]
    if fraction.any():
        parts += [_sep(rows, b"."), _digits(fraction, 6)]
    parts.append(_sep(rows, b"Z"))
    matrix = np.concatenate(parts, axis=1)
    offsets = np.arange(rows + 1, dtype=np.int32) * matrix.shape[1]
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(matrix.reshape(-1)))


_DAY_MIN, _DAY_MAX = -719_162, 2_932_896      # 0001-01-01 and 9999-12-31 as days since 1970-01-01


def _date_matrix(days: np.ndarray) -> np.ndarray:
    """(rows, 10) ASCII ``YYYY-MM-DD`` of day counts since 1970-01-01 (proleptic Gregorian;
    civil_from_days by H. Hinnant)."""
    z = days + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    rows = len(days)
    return np.concatenate([_digits(year, 4), _sep(rows, b"-"), _digits(month, 2), _sep(rows, b"-"),
                           _digits(day, 2)], axis=1)


@functools.cache
def _clock_table() -> np.ndarray:
    """(86400, 8) ASCII ``HH:MM:SS`` of every second of a day."""
    second = np.arange(86_400)
    rows = len(second)
    return np.concatenate([_digits(second // 3600, 2), _sep(rows, b":"), _digits(second // 60 % 60, 2),
                           _sep(rows, b":"), _digits(second % 60, 2)], axis=1)


def _sep(rows: int, char: bytes) -> np.ndarray:
    return np.full((rows, 1), char[0], np.uint8)


def _json_values(column: pa.Array, field: _Field) -> pa.Array:
    kind = field.kind
    if kind in ("string", "enum"):
        return _json_strings(column)
    if kind in ("int", "long"):
        return pc.cast(column, pa.string())
    if kind.startswith("timestamp"):
        micros = _epoch_values(column, dataclasses.replace(field, kind="timestamp-micros"))
        values = pc.binary_join_element_wise('"', iso_utc_strings(micros), '"', "")
        return pc.if_else(column.is_valid(), values, pa.scalar(None, pa.string())) if column.null_count else values
    if kind == "boolean":
        return pc.if_else(column, "true", "false")
    if kind in ("float", "double"):
        if not pc.all(pc.is_finite(pc.fill_null(column, 0.0))).as_py():
            raise ValueError(f"column {field.name!r}: NaN or infinity cannot be written as JSON")
        return pc.cast(column, pa.string())
    raise ValueError(f"column {field.name!r}: {kind} fields are not supported in JSON lines")


def encode_jsonl_lines(batch: pa.RecordBatch, fields, newline: bool = False,
                       engine: str = "numba") -> pa.BinaryArray:
    """One JSON object per row of ``batch`` (binary, UTF-8), with a trailing ``\\n`` if ``newline``.

    ``fields`` is an Avro record schema dict or its parsed fields. Null values are omitted.
    """
    if isinstance(fields, dict):
        fields = _parse_fields(fields)
    if engine == "numba":
        return _encode_with_kernel(batch, fields, json_lines=True, newline=newline)
    if engine != "numpy":
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    n = batch.num_rows
    pieces: list = ["{"]
    any_before = None   # BooleanArray: some earlier field was written in this row
    for field in fields:
        column = _column(batch, field)
        values = _json_values(column, field)
        if any_before is None:
            separator = ""
        elif any_before is True:
            separator = ","
        else:
            separator = pc.if_else(any_before, ",", "")
        key = json.dumps(field.name) + ":"
        piece = pc.binary_join_element_wise(separator, key, values, "")   # null where the value is null
        pieces.append(pc.fill_null(piece, "") if column.null_count else piece)
        if column.null_count == 0:
            any_before = True
        elif any_before is None:
            any_before = column.is_valid()
        elif any_before is not True:
            any_before = pc.or_(any_before, column.is_valid())
    pieces.append("}\n" if newline else "}")
    if n == 0:
        return pa.array([], pa.binary())
    lines = pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else pa.scalar(p) for p in pieces],
                                        pa.scalar(""))
    return pc.cast(lines, pa.binary())


# --- Parquet ------------------------------------------------------------------------------------

def _parquet_batch(batch: pa.RecordBatch, fields, schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for field, target in zip(fields, schema):
        column = _column(batch, field)
        _check_required(column, field)
        if column.type != target.type:
            column = pc.cast(column, target.type)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
