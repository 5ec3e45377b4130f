"""Avro container files -> usage batches, every writer schema resolved to the latest usage schema.

The container framing (header, blocks, sync markers) is read here. A block whose compressed bytes
the codec reports corrupt (a codec error, a deflate stream that ends before its final block, a
snappy CRC32 that does not match) fails the whole file with an :class:`InputFileError`, like a
truncated .gz: the file was damaged in transit and none of it is rated, so the run fails and
publishes nothing until it is sent again. A block that decompresses but one of whose datums
cannot be decoded costs only that block's records from there: they become MALFORMED_RECORD
rejects (record boundaries are unknown after corruption), made a batch at a time, so a large count
costs one batch of memory. Framing that cannot be trusted (bad magic, unreadable header or writer
schema, a block cut short, a wrong sync marker) means the record count itself is unknown: that is
an :class:`InputFileError` too.

The count is checked against the block's bytes before anything is allocated for its records:
every datum of the writer schema takes at least a known number of bytes, so a block claiming more
records than its decompressed bytes can hold, or no records in some bytes, has a corrupt count. Such a block is ONE
MALFORMED_RECORD reject (its bytes as raw, the block number and byte offset in the detail), and
the input positions after it count it as one record.

Two paths decode a block's datums, with the same results:

* the fast path: a Numba kernel walks the block's bytes datum by datum, driven by a program
  compiled from the writer schema resolved against the latest usage schema (``avro_program``,
  ``avro_kernel``), and writes column buffers that become the batch's Arrow arrays without a copy
  (``avro_columns``). It takes a block only when every datum in it decodes cleanly;
* the per-datum path, the definition: fastavro decodes each datum with the file's writer schema
  and, when its parsing canonical form differs from the latest usage schema's, that schema as
  reader schema (Avro resolution: new fields take their defaults). ``timestamp-micros`` is read as
  the plain long it is stored as, not as a datetime. It decodes every block the kernel refuses (a
  corrupt datum, invalid UTF-8, an enum symbol the reader lacks, a timestamp-millis beyond the
  years 1 to 9999...), so rejects are its rejects, and every file whose writer schema the program
  compiler does not support. A datum whose bytes are well formed but whose content is not
  acceptable (it does not resolve, or a value is outside its logical type's range) is rejected
  alone.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import zlib
from typing import BinaryIO, Iterator, Sequence

import fastavro
import fastavro.read
import numpy as np
import pyarrow as pa
from fastavro.schema import to_parsing_canonical_form

from cdr_schemas.decoders.common import (
    DecodedBatch,
    STREAM_ERRORS,
    InputFileError,
    Rejects,
    usage_batch,
    usage_fields,
)
from cdr_schemas.reasons import Reason
from cdr_schemas.registry import USAGE_LATEST, load_schema

_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16
_READ_PIECE_BYTES = 16 << 20
# The most bytes one block may decompress to: Java's Avro reader refuses larger blocks, and string
# columns have int32 offsets. A bound on the memory a block takes, and on the records it can hold.
_MAX_BLOCK_BYTES = 2**31 - 1
_FIRST_BUFFER_ROWS = 1 << 16     # rows the kernel's first buffers of a batch hold (they grow)
# The container header after the magic: metadata (schema, codec) and the sync marker.
_HEADER_AFTER_MAGIC = fastavro.parse_schema({
    "type": "record", "name": "AvroContainerHeader",
    "fields": [
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": _SYNC_SIZE}},
    ],
})


def raw_inflater():
    """The library that inflates deflate blocks (raw deflate, wbits -15): python-isal's ``isal_zlib``
    (ISA-L: 1.7x zlib's inflate on generated CDR blocks, the deflate fast path 1.25x; perf/RESULTS.md
    "Decoding") when it is installed, else the standard library's ``zlib``.

    Both inflate every valid stream to the same bytes; their errors differ in type only
    (``_decompress`` raises ``zlib.error`` for either). On corrupt streams ISA-L is a little more
    lenient: some code-length tables zlib refuses ("invalid distances set") it inflates, so such a
    block reaches the datum decoders (rejects) instead of failing the file. Raw deflate carries no
    checksum: zlib too inflates many corrupt blocks to wrong bytes.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib
    return isal_zlib


_INFLATER = raw_inflater()   # chosen once per process (each worker imports this module)


def decode_avro(path: str, stream: BinaryIO, batch_size: int, *, fast: bool = True) -> Iterator[DecodedBatch]:
    """Decode the Avro container file open as ``stream``; see the module docstring.

    ``fast=False`` decodes every block datum by datum (the reference the fast path is tested
    against); the batches are the same, only slower.
    """
    writer_schema, codec, sync = _read_header(path, stream)
    datums = _DatumReader(path, writer_schema)
    assembler = _Assembler(path, batch_size, _fast_program(writer_schema) if fast else None)
    position = 0
    for block_number, (offset, count, payload) in enumerate(_iter_blocks(path, stream, sync)):
        block = f"block {block_number} at byte {offset}"
        try:
            data = _decompress(codec, payload)
        except Exception as error:  # each codec library raises its own error types
            raise InputFileError(path, f"Avro {block} could not be decompressed with codec {codec!r} "
                                       f"({type(error).__name__}: {error}): the file is damaged; nothing of it "
                                       "is rated, send it again") from error
        impossible = _impossible_count(count, data, datums.min_datum_bytes)
        if impossible is not None:
            count = 1  # the count is corrupt: the block is one reject, and input positions go on after it
            assembler.add_block(_Block([], [], [dict(
                reason=Reason.MALFORMED_RECORD, raw=data, position=position,
                detail=f"Avro {block} {impossible}; the block is rejected as one record, raw holding its bytes")]),
                position, count)
        elif not assembler.add_fast(data, count, position):
            assembler.add_block(datums.decode_block(data, count, position, block_number), position, count)
        position += count
        yield from assembler.full_batches(position)
    if assembler.pending:
        yield assembler.flush()


def warm_up() -> None:
    """Load the fast path's compiled kernel now (from Numba's on-disk cache, else compiling it,
    a few seconds) instead of at the first file: call it once per worker process, e.g. in a
    DoFn's ``setup()``."""
    from cdr_schemas.decoders.avro_columns import ColumnBuffers

    program = _fast_program(load_schema(USAGE_LATEST))
    ColumnBuffers(program, 1, np.zeros(program.n_string)).append_block(b"", 0, 0)


def _fast_program(writer_schema: dict):
    """The kernel program for this writer schema, or None when only the datum path can read it."""
    from cdr_schemas.decoders.avro_program import UnsupportedSchema, compile_program

    try:
        return compile_program(writer_schema, load_schema(USAGE_LATEST))
    except (UnsupportedSchema, KeyError, TypeError):  # KeyError, TypeError: shapes fastavro tolerates
        return None


def _read_header(path: str, stream: BinaryIO) -> tuple[dict, str, bytes]:
    """(writer schema, codec name, sync marker) of the container file; InputFileError if unreadable."""
    magic = _read_exactly(path, stream, len(_MAGIC))
    if magic != _MAGIC:
        raise InputFileError(path, "not an Avro container file (bad magic)")
    try:
        header = fastavro.schemaless_reader(stream, _HEADER_AFTER_MAGIC)
    except Exception as error:  # fastavro raises EOFError, ValueError, ... on a corrupt header
        raise InputFileError(path, f"unreadable Avro header: {type(error).__name__}: {error}") from error
    meta = header["meta"]
    if "avro.schema" not in meta:
        raise InputFileError(path, "Avro header has no avro.schema entry")
    try:
        writer_schema = json.loads(meta["avro.schema"])
    except (ValueError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"unreadable writer schema in the Avro header: {error}") from error
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace") or "null"
    _check_codec(path, codec)
    return writer_schema, codec, header["sync"]


def _check_codec(path: str, codec: str) -> None:
    """Raise InputFileError for a codec fastavro does not know or cannot load here."""
    read_block = fastavro.read.BLOCK_READERS.get(codec)
    if read_block is None:
        known = ", ".join(sorted(fastavro.read.BLOCK_READERS))
        raise InputFileError(path, f"Avro codec {codec!r} is not supported (supported: {known})")
    # fastavro registers a stub that raises "... you need to install ..." for codecs whose library
    # is missing; probe it with an empty block so that is a file error, not a block of rejects.
    try:
        read_block(io.BytesIO(b"\x00"))
    except ValueError as error:
        if "install" in str(error):
            raise InputFileError(path, f"Avro codec {codec!r}: {error}") from error
    except Exception:  # an empty payload is not valid for every codec; only the stub matters here
        pass


def _iter_blocks(path: str, stream: BinaryIO, sync: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset in the file, record count as written, compressed payload) of each block, sync
    markers checked (the count is checked against the bytes by the caller)."""
    while True:
        offset = stream.tell()
        count = _read_long(path, stream, at_block_start=True)
        if count is None:
            return
        size = _read_long(path, stream, at_block_start=False)
        if count < 0 or size < 0:
            raise InputFileError(path, f"corrupt Avro block header at byte {offset}: count={count}, size={size}")
        payload = _read_exactly(path, stream, size)
        if len(payload) != size:
            raise InputFileError(path, f"Avro block at byte {offset} is cut short: {size} bytes announced, "
                                       f"{len(payload)} present (truncated file?)")
        marker = _read_exactly(path, stream, _SYNC_SIZE)
        if marker != sync:
            raise InputFileError(path, f"Avro sync marker mismatch after the block at byte {offset}: the file's "
                                       "block framing is corrupt, so its record count is unknown")
        yield offset, count, payload


def _read_long(path: str, stream: BinaryIO, *, at_block_start: bool) -> int | None:
    """One zig-zag varint long; None at a clean end of file before a block."""
    result = shift = 0
    while True:
        byte = _read_exactly(path, stream, 1)
        if not byte:
            if shift == 0 and at_block_start:
                return None
            raise InputFileError(path, "Avro block header is cut short (truncated file?)")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
        if shift > 63:
            raise InputFileError(path, "corrupt Avro block header: a length has more than 64 bits")


def _read_exactly(path: str, stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at end of file), read in pieces to bound memory."""
    pieces = []
    remaining = size
    try:
        while remaining > 0:
            piece = stream.read(min(remaining, _READ_PIECE_BYTES))
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
    except STREAM_ERRORS as error:
        raise InputFileError(path, f"read failed: {type(error).__name__}: {error}") from error
    return b"".join(pieces)


def _decompress(codec: str, payload: bytes) -> bytes:
    """The block's datum bytes. Raises as fastavro's block reader for ``codec`` does, and also when
    a deflate stream ends before its final block (fastavro returns what a cut stream holds), when
    a snappy block's CRC32 does not match, and when the bytes would exceed ``_MAX_BLOCK_BYTES``."""
    if codec == "null" or not payload:  # fastavro reads an empty payload as an empty deflate block
        return payload
    if codec == "deflate":  # fastavro's deflate reader without its framing round trip, output bounded
        decompressor = _INFLATER.decompressobj(-15)
        try:
            data = decompressor.decompress(payload, _MAX_BLOCK_BYTES + 1)
        except _INFLATER.error as error:   # isal's IsalError is not a zlib.error: one type whichever inflates
            raise zlib.error(str(error)) from error
        if not decompressor.eof and len(data) <= _MAX_BLOCK_BYTES:
            raise zlib.error("the deflate stream ends before its final block (truncated or corrupt)")
    else:
        framed = io.BytesIO(_zigzag(len(payload)) + payload)  # fastavro's block readers expect the size first
        data = fastavro.read.BLOCK_READERS[codec](framed).getvalue()
        # Avro's snappy blocks end with the CRC32 (big-endian) of the uncompressed bytes; fastavro skips it.
        if codec == "snappy" and zlib.crc32(data) != int.from_bytes(payload[-4:], "big"):
            raise ValueError("the CRC32 of the decompressed bytes does not match the block's")
    if len(data) > _MAX_BLOCK_BYTES:
        raise ValueError(f"the block decompresses to more than {_MAX_BLOCK_BYTES} bytes")
    return data


def _impossible_count(count: int, data: bytes, min_datum_bytes: int) -> str | None:
    """Why a block of ``data`` cannot hold ``count`` records, or None when it can: each record takes
    at least ``min_datum_bytes``, so a count beyond what the bytes hold is corrupt, and so is no
    record in some bytes. Checked before anything is allocated for the records."""
    if count > len(data) // min_datum_bytes:
        return (f"claims {count} records in {len(data)} bytes (decompressed), but a record of the writer schema "
                f"takes at least {min_datum_bytes} bytes, so at most {len(data) // min_datum_bytes} fit: "
                "the count is corrupt")
    return f"claims no records but holds {len(data)} bytes" if count == 0 and data else None


def _zigzag(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _as_stored(schema, logical_types: tuple[str, ...] | None = None):
    """The schema with the logical types ``logical_types`` (default: all) removed, so their values
    are read as stored (``timestamp-micros``: epoch-micro longs)."""
    if isinstance(schema, list):
        return [_as_stored(s, logical_types) for s in schema]
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical is not None and (logical_types is None or logical in logical_types):
            schema = {k: v for k, v in schema.items() if k != "logicalType"}
            if set(schema) == {"type"} and isinstance(schema["type"], str):
                return schema["type"]
        return {k: _as_stored(v, logical_types) for k, v in schema.items()}
    return schema


# The fewest bytes a value of each primitive takes: a varint, a length or a boolean is one byte.
_MIN_PRIMITIVE_BYTES = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1,
                        "string": 1}


def _min_datum_bytes(schema, named: dict, visiting: frozenset = frozenset()) -> int:
    """The fewest bytes a datum of ``schema`` (as fastavro parses it: full names, named types by
    reference) can take. A lower bound: a type it cannot size counts as 0 bytes, so that no block
    a writer could have written is ever taken for one whose count is impossible."""
    if isinstance(schema, str):
        if schema in _MIN_PRIMITIVE_BYTES:
            return _MIN_PRIMITIVE_BYTES[schema]
        if schema in named and schema not in visiting:
            return _min_datum_bytes(named[schema], named, visiting)
        return 0  # a record inside itself (a union branch elsewhere ends it), or an unknown name
    if isinstance(schema, list):  # a union: the branch index, then the smallest branch
        return 1 + min((_min_datum_bytes(branch, named, visiting) for branch in schema), default=0)
    if not isinstance(schema, dict):
        return 0
    kind = schema.get("type")
    if kind in ("record", "error"):
        inside = visiting | {schema.get("name")}
        return sum(_min_datum_bytes(field.get("type"), named, inside) for field in schema.get("fields", ()))
    if kind == "fixed":
        size = schema.get("size")
        return size if isinstance(size, int) and size > 0 else 0
    if kind in ("enum", "array", "map"):  # an index; a block count (0 for an empty array or map)
        return 1
    return _min_datum_bytes(kind, named, visiting)  # {"type": "long", "logicalType": ...} and the like


def _full_name(schema: dict) -> str:
    name = schema.get("name", "")
    return name if "." in name or not schema.get("namespace") else f"{schema['namespace']}.{name}"


class _DatumReader:
    """Decodes the datums of one file's blocks to dicts of the latest usage schema."""

    def __init__(self, path: str, writer_schema):
        reader_schema = load_schema(USAGE_LATEST)
        if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
            raise InputFileError(path, "the writer schema is not an Avro record schema")
        names = {_full_name(reader_schema), *reader_schema.get("aliases", ())}
        if _full_name(writer_schema) not in names:
            raise InputFileError(path, f"writer schema {_full_name(writer_schema)!r} is not a usage record "
                                       f"(expected {_full_name(reader_schema)!r}, schema {USAGE_LATEST})")
        writer_fields = {f.get("name") for f in writer_schema.get("fields", ())}
        for field in reader_schema["fields"]:
            if "default" not in field and not ({field["name"], *field.get("aliases", ())} & writer_fields):
                raise InputFileError(path, f"writer schema has no field {field['name']!r}, which {USAGE_LATEST} "
                                           "requires (it has no default): the file cannot be resolved")
        writer = _as_stored(writer_schema, ("timestamp-micros",))
        reader = _as_stored(reader_schema, ("timestamp-micros",))
        try:
            self._writer = fastavro.parse_schema(writer)
            # For telling a datum whose bytes are fine but a logical value is not (a timestamp-millis
            # beyond year 9999) from a corrupt one: every logical type read as stored.
            self._writer_as_stored = fastavro.parse_schema(_as_stored(writer_schema))
            # Same parsing canonical form: the writer schema alone decodes to the same values, faster.
            same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(reader)
            self._reader = None if same else fastavro.parse_schema(reader)
        except Exception as error:  # fastavro raises SchemaParseError, UnknownType, ValueError, ...
            raise InputFileError(path, f"unreadable writer schema: {type(error).__name__}: {error}") from error
        # Every writer schema that can hold a usage record takes at least a byte (its record_id):
        # a schema whose datums can be empty is checked as if they took one.
        self.min_datum_bytes = max(1, _min_datum_bytes(self._writer_as_stored,
                                                       self._writer_as_stored["__named_schemas"]))

    def decode_block(self, data: bytes, count: int, first_position: int, block_number: int) -> _Block:
        """The ``count`` datums in ``data``: records (dicts of the latest schema) and rejects."""
        stream = io.BytesIO(data)
        records, rejects = [], []
        read = fastavro.schemaless_reader
        writer, reader = self._writer, self._reader
        decoded = count   # datums whose boundaries are known
        for index in range(count):
            start = stream.tell()
            try:
                records.append(read(stream, writer, reader))
                continue
            except Exception as error:  # fastavro raises many types on bad bytes; all mean "reject"
                failure = error
            single = self._single_reject(stream, start, first_position + index, failure)
            if single is None:
                decoded = index
                rejects += _corrupt_rest(
                    count - index, first_position + index, data[start:],
                    f"Avro datum {index} of block {block_number} could not be decoded "
                    f"({type(failure).__name__}: {failure})")
                break
            rejects.append(single)
        else:
            leftover = len(data) - stream.tell()
            if leftover:
                return _Block([], [], _corrupt_rest(
                    count, first_position, data,
                    f"block {block_number} has {leftover} bytes left after its {count} records"))
        if not rejects:
            return _Block(records, range(first_position, first_position + count), [])
        rejected_positions = {reject["position"] for reject in rejects if isinstance(reject, dict)}
        positions = [p for p in range(first_position, first_position + decoded) if p not in rejected_positions]
        return _Block(records, positions, rejects)

    def _single_reject(self, stream: io.BytesIO, start: int, position: int, failure: Exception):
        """A reject for one datum whose bytes are well formed but whose content is not acceptable.

        Re-reads the datum with the writer schema alone and lenient UTF-8, and if that fails too,
        with every logical type read as stored (a value out of its logical type's range, such as
        a timestamp-millis beyond year 9999): if either works, the record boundary is known and
        only this record is rejected. Returns None when neither does.
        """
        for writer in (self._writer, self._writer_as_stored):
            stream.seek(start)
            try:
                record = fastavro.schemaless_reader(stream, writer, None, handle_unicode_errors="replace")
                break
            except Exception:  # still undecodable: try the next schema, else a corrupt datum
                continue
        else:
            return None
        as_stored = writer is self._writer_as_stored   # start_time may then be millis, not micros
        known = dict(raw=stream.getvalue()[start:stream.tell()], position=position,
                     record_id=record.get("record_id"), source=record.get("source"),
                     start_time_us=None if as_stored else _micros_or_none(record.get("start_time")))
        if isinstance(failure, UnicodeDecodeError):
            return dict(reason=Reason.MALFORMED_RECORD, **known,
                        detail=f"a string in the Avro datum is not valid UTF-8 ({failure})")
        if as_stored:
            return dict(reason=Reason.INVALID_FIELD, **known,
                        detail=f"a value is outside the range of its logical type, e.g. a timestamp-millis "
                               f"outside the years 1 to 9999 ({type(failure).__name__}: {failure})")
        return dict(reason=Reason.INVALID_FIELD, **known,
                    detail=f"record does not resolve to {USAGE_LATEST}: {type(failure).__name__}: {failure}")


def _micros_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _corrupt_rest(count: int, first_position: int, raw: bytes, what: str) -> list[_LostRecords]:
    """Rejects for ``count`` records whose boundaries are lost; the first carries the bytes."""
    return [_LostRecords(
        first_position, count, first_position, raw,
        first_detail=f"{what}; this record and the {count - 1} after it in the block are rejected because "
                     "record boundaries are unknown after corruption; raw holds the block's remaining bytes",
        other_detail=f"in a corrupt Avro block ({what}); the block's bytes are in the raw of the reject at "
                     f"input position {first_position}")]


@dataclasses.dataclass(frozen=True)
class _LostRecords:
    """The MALFORMED_RECORD rejects of ``count`` records from input ``position`` on, whose
    boundaries were lost in a corrupt block; the reject at ``first`` carries ``raw``, the others an
    empty raw.

    They are made a batch at a time (:meth:`take`), so the records a block claims cost the memory
    of one batch, not of all of them.
    """

    position: int
    count: int
    first: int
    raw: bytes
    first_detail: str
    other_detail: str

    def take(self, end: int) -> tuple[list[dict], _LostRecords | None]:
        """The rejects of the records before input position ``end``, and the records after it."""
        stop = min(end, self.position + self.count)
        rejects = [dict(reason=Reason.MALFORMED_RECORD, position=p, raw=self.raw if p == self.first else b"",
                        detail=self.first_detail if p == self.first else self.other_detail)
                   for p in range(self.position, stop)]
        rest = self.position + self.count - stop
        return rejects, dataclasses.replace(self, position=stop, count=rest) if rest else None


def _first_position(reject: dict | _LostRecords) -> int:
    return reject.position if isinstance(reject, _LostRecords) else reject["position"]


@dataclasses.dataclass(frozen=True)
class _Block:
    """A block's decoded records with their input positions, and its rejects (by position): single
    ones, and at most one run of records lost to corruption, last."""

    records: list[dict]
    positions: Sequence[int]
    rejects: list[dict | _LostRecords]


@functools.cache
def _record_type() -> pa.StructType:
    return pa.struct([pa.field(f.name, f.arrow_type) for f in usage_fields()])


@functools.cache
def _arrow_types() -> dict[str, pa.DataType]:
    return {f.name: f.arrow_type for f in usage_fields()}


@dataclasses.dataclass(frozen=True)
class _Piece:
    """Decoded usage rows at ascending input ``positions``: Arrow ``columns`` (the fast path) or
    dicts (the datum path; ``records[first:first + len(positions)]``, converted when their batch
    is cut). Splitting shares the columns and the records list, it copies neither."""

    positions: np.ndarray
    columns: dict[str, pa.Array] | None = None
    records: list[dict] | None = None
    first: int = 0

    def split(self, count: int) -> tuple[_Piece, _Piece]:
        """(the first ``count`` rows, the rest)."""
        head, rest = self.positions[:count], self.positions[count:]
        if self.records is not None:
            return (_Piece(head, records=self.records, first=self.first),
                    _Piece(rest, records=self.records, first=self.first + count))
        return (_Piece(head, {k: v.slice(0, count) for k, v in self.columns.items()}),
                _Piece(rest, {k: v.slice(count) for k, v in self.columns.items()}))

    def dicts(self) -> list[dict]:
        return self.records[self.first:self.first + len(self.positions)]


class _Assembler:
    """Cuts the decoded blocks into batches of ``batch_size`` consecutive input records.

    Blocks the kernel decodes go into :class:`ColumnBuffers` that grow across blocks, so a batch of
    clean blocks becomes Arrow arrays without a copy; a block that falls back to the datum path
    seals the buffers into a piece and adds its records and rejects. Without a ``program`` every
    block takes the datum path.
    """

    def __init__(self, path: str, batch_size: int, program):
        self._path = path
        self._batch_size = batch_size
        self._program = program
        self._batch_start = 0               # input position of the current batch's first record
        self._pieces: list[_Piece] = []     # rows before the buffers' rows, in input order
        self._buffers = None                # ColumnBuffers or None
        self._rejects: collections.deque[dict | _LostRecords] = collections.deque()   # ascending positions
        self._bytes_per_row = None          # per string column, to size new buffers
        if program is not None:             # Numba loads with the kernel: only when it is used
            from cdr_schemas.decoders.avro_columns import ColumnBuffers
            self._new_buffers = ColumnBuffers

    @property
    def pending(self) -> int:
        """Records (usage rows and rejects) held for the batches still to come."""
        rows = sum(len(piece.positions) for piece in self._pieces)
        rejects = sum(r.count if isinstance(r, _LostRecords) else 1 for r in self._rejects)
        return rows + (self._buffers.rows if self._buffers is not None else 0) + rejects

    def add_fast(self, data: bytes, count: int, first_position: int) -> bool:
        """Decode the block with the kernel; False (nothing kept) when it must take the datum path."""
        if self._program is None:
            return False
        if self._buffers is not None and not self._buffers.fits_more(len(data)):
            self._seal()
        if self._buffers is None:
            if self._bytes_per_row is None:  # first block: its bytes shared evenly by the string columns
                self._bytes_per_row = np.full(self._program.n_string, len(data) / max(count, 1) / 4)
            rows = min(self._batch_size, _FIRST_BUFFER_ROWS) + count
            self._buffers = self._new_buffers(self._program, rows, self._bytes_per_row)
        return self._buffers.append_block(data, count, first_position) is None

    def add_block(self, block: _Block, first_position: int, count: int) -> None:
        """Take a block decoded by the datum path (records ``first_position`` .. + ``count``)."""
        self._seal()
        if block.records:
            self._pieces.append(_Piece(np.asarray(block.positions, np.int64), records=block.records))
        end = first_position + count
        self._rejects.extend(r for r in block.rejects if first_position <= _first_position(r) < end)

    def _seal(self) -> None:
        """Turn the buffers' rows into a piece; later fast blocks go into new buffers."""
        buffers, self._buffers = self._buffers, None
        if buffers is not None and buffers.rows:
            self._bytes_per_row = buffers.bytes_per_row()
            self._pieces.append(_Piece(buffers.positions[:buffers.rows], buffers.arrays(buffers.rows, _arrow_types())))

    def full_batches(self, position: int) -> Iterator[DecodedBatch]:
        """The batches that end at or before input ``position`` (all records before it are added)."""
        while position >= self._batch_start + self._batch_size:
            yield self.flush()

    def flush(self) -> DecodedBatch:
        """The next batch: held records before ``batch_start + batch_size``."""
        end = self._batch_start + self._batch_size
        buffers = self._buffers
        if buffers is not None and buffers.rows:
            count = int(np.searchsorted(buffers.positions[:buffers.rows], end))
            if 0 < count < buffers.rows - count:
                # Batches smaller than the rows held: hand the rest out as slices, not copies.
                self._seal()
        taken, kept = [], []
        for piece in self._pieces:
            count = int(np.searchsorted(piece.positions, end))
            if count == len(piece.positions):
                taken.append(piece)
            elif count == 0:
                kept.append(piece)
            else:
                first, rest = piece.split(count)
                taken.append(first)
                kept.append(rest)
        self._pieces = kept
        buffers = self._buffers
        if buffers is not None and buffers.rows:
            count = int(np.searchsorted(buffers.positions[:buffers.rows], end))
            if count:  # the rows left over (fewer than those taken) move to new buffers
                self._bytes_per_row = buffers.bytes_per_row()
                taken.append(_Piece(buffers.positions[:count], buffers.arrays(count, _arrow_types())))
                self._buffers = buffers.tail(count, buffers.row_capacity) if count < buffers.rows else None
        rejects = Rejects()
        while self._rejects and _first_position(self._rejects[0]) < end:
            head = self._rejects.popleft()
            if isinstance(head, _LostRecords):
                lost, rest = head.take(end)
                for reject in lost:
                    rejects.add(**reject)
                if rest is not None:
                    self._rejects.appendleft(rest)
            else:
                rejects.add(**head)
        self._batch_start = end
        positions = np.concatenate([p.positions for p in taken]) if taken else np.empty(0, np.int64)
        usage = usage_batch(_columns(taken), self._path, positions)
        return DecodedBatch(usage=usage, rejected=rejects.to_batch(self._path))


def _columns(pieces: list[_Piece]) -> dict[str, pa.Array]:
    """One array per usage field holding the pieces' rows in order."""
    groups: list[dict[str, pa.Array]] = []
    records: list[dict] = []
    for piece in pieces:
        if piece.records is not None:
            records.extend(piece.dicts())
            continue
        if records:
            groups.append(_record_columns(records))
            records = []
        groups.append(piece.columns)
    if records or not groups:
        groups.append(_record_columns(records))
    if len(groups) == 1:
        return groups[0]
    return {name: pa.concat_arrays([g[name] for g in groups]) for name in _arrow_types()}


def _record_columns(records: list[dict]) -> dict[str, pa.Array]:
    # One conversion of the dicts to a struct array is several times faster than one per column.
    columns = pa.array(records, type=_record_type()).flatten()
    return dict(zip(_record_type().names, columns))
