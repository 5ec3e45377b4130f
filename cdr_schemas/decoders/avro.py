"""Avro container files -> usage batches, every writer schema resolved to the latest usage schema.

The container framing (header, blocks, sync markers) is read here so that a block whose bytes are
corrupt costs only that block's records, never the count: a block says how many records it holds,
so when one cannot be decompressed, or one of its datums cannot be decoded, its remaining records
become MALFORMED_RECORD rejects (record boundaries are unknown after corruption). Framing that
cannot be trusted (bad magic, unreadable header or writer schema, a block cut short, a wrong sync
marker) means the record count itself is unknown: that is an :class:`InputFileError`.

Two paths decode a block's datums, with the same results:

* the fast path: a Numba kernel walks the block's bytes datum by datum, driven by a program
  compiled from the writer schema resolved against the latest usage schema (``avro_program``,
  ``avro_kernel``), and writes column buffers that become the batch's Arrow arrays without a copy
  (``avro_columns``). It takes a block only when every datum in it decodes cleanly;
* the per-datum path, the definition: fastavro decodes each datum with the file's writer schema
  and, when its parsing canonical form differs from the latest usage schema's, that schema as
  reader schema (Avro resolution: new fields take their defaults). ``timestamp-micros`` is read as
  the plain long it is stored as, not as a datetime. It decodes every block the kernel refuses (a
  corrupt datum, invalid UTF-8, an enum symbol the reader lacks...), so rejects are its rejects,
  and every file whose writer schema the program compiler does not support.
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
_FIRST_BUFFER_ROWS = 1 << 16     # rows the kernel's first buffers of a batch hold (they grow)
# The container header after the magic: metadata (schema, codec) and the sync marker.
_HEADER_AFTER_MAGIC = fastavro.parse_schema({
    "type": "record", "name": "AvroContainerHeader",
    "fields": [
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": _SYNC_SIZE}},
    ],
})


def decode_avro(path: str, stream: BinaryIO, batch_size: int, *, fast: bool = True) -> Iterator[DecodedBatch]:
    """Decode the Avro container file open as ``stream``; see the module docstring.

    ``fast=False`` decodes every block datum by datum (the reference the fast path is tested
    against); the batches are the same, only slower.
    """
    writer_schema, codec, sync = _read_header(path, stream)
    datums = _DatumReader(path, writer_schema)
    assembler = _Assembler(path, batch_size, _fast_program(writer_schema) if fast else None)
    position = 0
    for block_number, (count, payload) in enumerate(_iter_blocks(path, stream, sync)):
        try:
            data = _decompress(codec, payload)
        except Exception as error:  # each codec library raises its own error types
            assembler.add_block(_Block([], [], _corrupt_rest(
                count, position, payload,
                f"block {block_number} (records {position}..{position + count - 1}) could not be decompressed "
                f"with codec {codec!r}: {type(error).__name__}: {error}")), position, count)
        else:
            if not assembler.add_fast(data, count, position):
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


def _iter_blocks(path: str, stream: BinaryIO, sync: bytes) -> Iterator[tuple[int, bytes]]:
    """(record count, compressed payload) of each block, sync markers checked."""
    records = 0
    while True:
        count = _read_long(path, stream, at_block_start=True)
        if count is None:
            return
        size = _read_long(path, stream, at_block_start=False)
        if count < 0 or size < 0:
            raise InputFileError(path, f"corrupt Avro block header after record {records}: "
                                       f"count={count}, size={size}")
        payload = _read_exactly(path, stream, size)
        if len(payload) != size:
            raise InputFileError(path, f"Avro block of {count} records after record {records} is cut short: "
                                       f"{size} bytes announced, {len(payload)} present (truncated file?)")
        marker = _read_exactly(path, stream, _SYNC_SIZE)
        if marker != sync:
            raise InputFileError(path, f"Avro sync marker mismatch after records {records}..{records + count - 1}: "
                                       "the file's block framing is corrupt, so its record count is unknown")
        yield count, payload
        records += count


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
    """The block's datum bytes; raises as fastavro's block reader for ``codec`` does."""
    if codec == "null":
        return payload
    if codec == "deflate":  # what fastavro's deflate reader does, without its framing round trip
        return zlib.decompressobj(-15).decompress(payload)
    framed = io.BytesIO(_zigzag(len(payload)) + payload)  # fastavro's block readers expect the size first
    return fastavro.read.BLOCK_READERS[codec](framed).getvalue()


def _zigzag(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _timestamp_micros_as_long(schema):
    """The schema with ``timestamp-micros`` logical types removed: values stay epoch-micro longs."""
    if isinstance(schema, list):
        return [_timestamp_micros_as_long(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros" and schema.get("type") == "long":
            return "long"
        return {k: _timestamp_micros_as_long(v) for k, v in schema.items()}
    return schema


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
        writer = _timestamp_micros_as_long(writer_schema)
        reader = _timestamp_micros_as_long(reader_schema)
        try:
            self._writer = fastavro.parse_schema(writer)
            # Same parsing canonical form: the writer schema alone decodes to the same values, faster.
            same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(reader)
            self._reader = None if same else fastavro.parse_schema(reader)
        except Exception as error:  # fastavro raises SchemaParseError, UnknownType, ValueError, ...
            raise InputFileError(path, f"unreadable writer schema: {type(error).__name__}: {error}") from error

    def decode_block(self, data: bytes, count: int, first_position: int, block_number: int) -> _Block:
        """The ``count`` datums in ``data``: records (dicts of the latest schema) and rejects."""
        stream = io.BytesIO(data)
        records, rejects = [], []
        read = fastavro.schemaless_reader
        writer, reader = self._writer, self._reader
        for index in range(count):
            start = stream.tell()
            try:
                records.append(read(stream, writer, reader))
                continue
            except Exception as error:  # fastavro raises many types on bad bytes; all mean "reject"
                failure = error
            single = self._single_reject(stream, start, first_position + index, failure)
            if single is None:
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
        rejected_positions = {reject["position"] for reject in rejects}
        positions = [p for p in range(first_position, first_position + count) if p not in rejected_positions]
        return _Block(records, positions, rejects)

    def _single_reject(self, stream: io.BytesIO, start: int, position: int, failure: Exception):
        """A reject for one datum whose bytes are well formed but whose content is not acceptable.

        Re-reads the datum with the writer schema alone and lenient UTF-8: if that works, the record
        boundary is known and only this record is rejected. Returns None when it does not.
        """
        stream.seek(start)
        try:
            record = fastavro.schemaless_reader(stream, self._writer, None, handle_unicode_errors="replace")
        except Exception:  # still undecodable: a corrupt datum, handled by the caller
            return None
        known = dict(raw=stream.getvalue()[start:stream.tell()], position=position,
                     record_id=record.get("record_id"), source=record.get("source"),
                     start_time_us=_micros_or_none(record.get("start_time")))
        if isinstance(failure, UnicodeDecodeError):
            return dict(reason=Reason.MALFORMED_RECORD, **known,
                        detail=f"a string in the Avro datum is not valid UTF-8 ({failure})")
        return dict(reason=Reason.INVALID_FIELD, **known,
                    detail=f"record does not resolve to {USAGE_LATEST}: {type(failure).__name__}: {failure}")


def _micros_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _corrupt_rest(count: int, first_position: int, raw: bytes, what: str) -> list[dict]:
    """Rejects for ``count`` records whose boundaries are lost; the first carries the bytes."""
    rejects = [dict(reason=Reason.MALFORMED_RECORD, raw=raw, position=first_position,
                    detail=f"{what}; this record and the {count - 1} after it in the block are rejected "
                           "because record boundaries are unknown after corruption; raw holds the "
                           "block's remaining bytes")]
    rejects.extend(
        dict(reason=Reason.MALFORMED_RECORD, raw=b"", position=first_position + k,
             detail=f"in a corrupt Avro block ({what}); the block's bytes are in the raw of the "
                    f"reject at input position {first_position}")
        for k in range(1, count))
    return rejects


@dataclasses.dataclass(frozen=True)
class _Block:
    """A block's decoded records with their input positions, and its rejects (by position)."""

    records: list[dict]
    positions: Sequence[int]
    rejects: list[dict]


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
        self._rejects: collections.deque[dict] = collections.deque()   # ascending positions
        self._bytes_per_row = None          # per string column, to size new buffers
        if program is not None:             # Numba loads with the kernel: only when it is used
            from cdr_schemas.decoders.avro_columns import ColumnBuffers
            self._new_buffers = ColumnBuffers

    @property
    def pending(self) -> int:
        """Records (usage rows and rejects) held for the batches still to come."""
        rows = sum(len(piece.positions) for piece in self._pieces)
        return rows + (self._buffers.rows if self._buffers is not None else 0) + len(self._rejects)

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
        self._rejects.extend(r for r in block.rejects if first_position <= r["position"] < end)

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
        while self._rejects and self._rejects[0]["position"] < end:
            rejects.add(**self._rejects.popleft())
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
