"""JSON lines files -> usage batches.

Each non-blank line is one JSON object with the usage schema's field names (unknown keys are
ignored). ``service`` is its symbol string; ``start_time`` is either an ISO 8601 string with ``Z``
or a UTC offset (``2026-01-05T08:15:00.250Z``, at most 6 fraction digits) or an integer of epoch
microseconds. A field that has a default may be absent or null: it takes the default. Blank lines
(only spaces, tabs, CR) are not records: they are skipped but still counted in line numbers.

Two paths give the same answer for every line:

* the slow path, :func:`decode_line`, is the definition: ``json.loads`` and a check per field;
* the fast path reads many lines at once with ``pyarrow.json`` and an explicit schema, then checks
  nulls, service symbols and timestamps with vectorised compute. When Arrow refuses a segment
  (invalid JSON, a wrong type anywhere in it), the segment is split around the row Arrow names,
  or halved, and the pieces retried; small pieces and the lines Arrow cannot be trusted with go
  to the slow path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from cdr_schemas.decoders.common import (
    DecodedBatch,
    STREAM_ERRORS,
    InputFileError,
    Rejects,
    UsageField,
    service_symbols,
    usage_batch,
    usage_fields,
)
from cdr_schemas.reasons import Reason

_READ_BYTES = 8 << 20
_BLANK = b" \t\r"
BOM = b"\xef\xbb\xbf"
_SEGMENT_LINES = 2048           # lines per pyarrow.json call: about as fast as bigger ones, cheaper to retry
_SLOW_SEGMENT_LINES = 8          # segments this small go line by line
_INT_RANGES = {pa.int64(): (-(1 << 63), (1 << 63) - 1), pa.int32(): (-(1 << 31), (1 << 31) - 1)}
_INT_NAMES = {pa.int64(): "an integer (64-bit)", pa.int32(): "an integer (32-bit)"}

# ISO 8601 with seconds, up to 6 fraction digits and a mandatory zone (Z or +hh:mm). The year 0000
# is excluded: Python's datetime cannot hold it. Python and Arrow (RE2) both read this pattern.
_ISO_PATTERN = (r"([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-[0-9]{2}-[0-9]{2}"
                r"T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_ISO = re.compile(_ISO_PATTERN)
_ISO_ANCHORED = f"^{_ISO_PATTERN}$"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def decode_jsonl(path: str, stream: BinaryIO, batch_size: int, *, fast: bool = True) -> Iterator[DecodedBatch]:
    """Decode the JSON lines file open as ``stream``: one batch per ``batch_size`` lines.

    ``fast=False`` decodes every line with :func:`decode_line` (the reference the tests compare
    the fast path with); the results are the same, only slower.
    """
    decoder = _ChunkDecoder(path, fast=fast)
    for chunk in _line_chunks(path, stream, batch_size):
        decoded = decoder.decode(chunk)
        if decoded.num_records:
            yield decoded


# --- the definition: one line ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LineReject:
    """Why a line is not a usage record, and what of it could be read."""

    reason: Reason
    detail: str
    record_id: str | None = None
    source: str | None = None
    start_time_us: int | None = None


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so repeated keys can be seen."""


def decode_line(line: bytes) -> dict | LineReject:
    """The usage values of one JSON line (start_time as epoch micros), or why it is rejected.

    This is the reference the fast path is tested against; ``line`` is not blank.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return LineReject(Reason.MALFORMED_RECORD, f"line is not valid UTF-8: {error}")
    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError) as error:
        return LineReject(Reason.MALFORMED_RECORD, f"line is not valid JSON: {error}")
    if not isinstance(parsed, _Pairs):
        return LineReject(Reason.MALFORMED_RECORD, f"line is a JSON {_json_kind(parsed)}, not an object")
    known = {field.name for field in usage_fields()}
    values = {}
    for key, value in parsed:
        if key in known:
            if key in values:
                return LineReject(Reason.MALFORMED_RECORD, f"field {key!r} appears twice in the object")
            values[key] = value
    record_id, source = values.get("record_id"), values.get("source")
    start_time_us = _start_time_or_none(values.get("start_time"))
    record = {}
    for field in usage_fields():
        value = values.get(field.name)
        if value is None:
            if field.required:
                return LineReject(Reason.MISSING_FIELD, _missing(field.name), record_id, source, start_time_us)
            record[field.name] = field.default
            continue
        problem = _field_problem(field, value)
        if problem is not None:
            return LineReject(Reason.INVALID_FIELD, problem, record_id, source, start_time_us)
        record[field.name] = start_time_us if field.name == "start_time" else value
    return record


def _field_problem(field: UsageField, value) -> str | None:
    """Why ``value`` (not None) cannot be this field's value, or None when it can."""
    if field.name == "start_time":
        return None if _start_time_or_none(value) is not None else _bad_start_time(value)
    if field.name == "service":
        return None if isinstance(value, str) and value in service_symbols() else _bad_service(value)
    if field.arrow_type == pa.string():
        if isinstance(value, str) and _is_utf8(value):
            return None
        return f"{field.name} must be a string, got {_show(value)}"
    low, high = _INT_RANGES[field.arrow_type]
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return None
    return f"{field.name} must be {_INT_NAMES[field.arrow_type]}, got {_show(value)}"


def _start_time_or_none(value) -> int | None:
    """Epoch microseconds of a start_time value, or None when it is not a valid one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        low, high = _INT_RANGES[pa.int64()]
        return value if low <= value <= high else None
    if isinstance(value, str) and _ISO.fullmatch(value):
        try:
            return (dt.datetime.fromisoformat(value) - _EPOCH) // _ONE_MICROSECOND
        except ValueError:  # e.g. February 30th
            return None
    return None


def _missing(name: str) -> str:
    return f"{name} is absent or null"


def _bad_service(value) -> str:
    return f"service {_show(value)} is not one of {', '.join(service_symbols())}"


def _bad_start_time(value) -> str:
    return (f"start_time {_show(value)} is neither an ISO 8601 timestamp with Z or a UTC offset "
            "(e.g. 2026-01-05T08:15:00.250Z) nor an integer of epoch microseconds")


def _show(value) -> str:
    if isinstance(value, _Pairs):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        return False
    return True


# --- reading lines in chunks ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """Consecutive lines of the file: ``data[starts[i]:ends[i]]`` is line ``first_line + i``.

    ``ends`` excludes the line's ``\\n`` and a ``\\r`` before it.
    """

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    first_line: int

    def line(self, index: int) -> bytes:
        return self.data[self.starts[index]:self.ends[index]]


def _line_chunks(path: str, stream: BinaryIO, max_lines: int) -> Iterator[_Chunk]:
    """The file's lines in chunks of at most ``max_lines`` lines."""
    buffer = b""
    line_ends = np.empty(0, np.int64)   # offset in buffer of each complete line's b"\n"
    first_line = 1
    at_start = True
    while True:
        try:
            block = stream.read(_READ_BYTES)
        except STREAM_ERRORS as error:
            raise InputFileError(path, f"read failed: {type(error).__name__}: {error}") from error
        if at_start:
            block = block[len(BOM):] if block.startswith(BOM) else block
            at_start = False
        if block:
            found = np.flatnonzero(np.frombuffer(block, np.uint8) == 0x0A) + len(buffer)
            buffer += block
            line_ends = np.concatenate([line_ends, found])
        elif buffer and (not len(line_ends) or line_ends[-1] != len(buffer) - 1):
            line_ends = np.append(line_ends, len(buffer))  # the last line has no b"\n"
        offset = taken = 0
        while len(line_ends) - taken >= max_lines or (not block and taken < len(line_ends)):
            ends = line_ends[taken:taken + max_lines]
            end = int(ends[-1]) + 1
            yield _make_chunk(buffer[offset:end], ends - offset, first_line)
            first_line += len(ends)
            offset, taken = end, taken + len(ends)
        if not block:
            return
        buffer, line_ends = buffer[offset:], line_ends[taken:] - offset


def _make_chunk(data: bytes, newline_offsets: np.ndarray, first_line: int) -> _Chunk:
    starts = np.concatenate([[0], newline_offsets[:-1] + 1]).astype(np.int64)
    ends = newline_offsets.astype(np.int64).copy()
    view = np.frombuffer(data, np.uint8)
    has_cr = ends > starts
    has_cr[has_cr] = view[ends[has_cr] - 1] == 0x0D
    ends[has_cr] -= 1
    return _Chunk(data, starts, ends, first_line)


# --- the fast path ------------------------------------------------------------------------------


class _FastPathRefused(Exception):
    """Arrow could not read a segment; ``row`` is the segment row it named, if any."""

    def __init__(self, row: int | None):
        super().__init__(row)
        self.row = row


@dataclasses.dataclass
class _Pieces:
    """What a chunk decodes to before it is put in line order."""

    usage: list[tuple[np.ndarray, dict[str, pa.Array]]] = dataclasses.field(default_factory=list)
    rejects: list[tuple[int, LineReject]] = dataclasses.field(default_factory=list)
    slow_lines: list[int] = dataclasses.field(default_factory=list)


class _ChunkDecoder:
    """Decodes chunks of one file; remembers whether its start_time values are strings or integers."""

    def __init__(self, path: str, *, fast: bool = True):
        self._path = path
        self._fast = fast
        self._start_time_as_text = True

    def decode(self, chunk: _Chunk) -> DecodedBatch:
        pieces = _Pieces()
        fast_lines = self._classify(chunk, pieces)
        if self._fast:
            self._decode_fast(chunk, fast_lines, pieces)
        else:
            pieces.slow_lines.extend(fast_lines.tolist())
        self._decode_slow(chunk, pieces)
        return self._assemble(chunk, pieces)

    def _classify(self, chunk: _Chunk, pieces: _Pieces) -> np.ndarray:
        """Indices of the lines to try on the fast path; blank lines dropped, odd lines to slow."""
        view = np.frombuffer(chunk.data, np.uint8)
        starts, ends = chunk.starts, chunk.ends
        looks_like_object = ends > starts
        looks_like_object[looks_like_object] = ((view[starts[looks_like_object]] == 0x7B)
                                                & (view[ends[looks_like_object] - 1] == 0x7D))
        keep = np.ones(len(starts), bool)
        for index in np.flatnonzero(~looks_like_object):
            stripped = chunk.line(index).strip(_BLANK)
            keep[index] = False
            if stripped and stripped[:1] == b"{" and stripped[-1:] == b"}":
                keep[index] = True
            elif stripped:
                pieces.slow_lines.append(int(index))
        try:
            chunk.data.isascii() or chunk.data.decode("utf-8")
        except UnicodeDecodeError:  # Arrow accepts invalid UTF-8 in strings: such lines go slow
            for index in np.flatnonzero(keep):
                try:
                    chunk.line(index).decode("utf-8")
                except UnicodeDecodeError:
                    keep[index] = False
                    pieces.slow_lines.append(int(index))
        return np.flatnonzero(keep)

    def _decode_fast(self, chunk: _Chunk, lines: np.ndarray, pieces: _Pieces) -> None:
        work = [(low, min(low + _SEGMENT_LINES, len(lines))) for low in range(0, len(lines), _SEGMENT_LINES)]
        failures, max_failures = 0, 32 + len(lines) // 64   # then the rest goes line by line
        read: dict[pa.Schema, list[tuple[np.ndarray, pa.Table]]] = {}
        while work:
            low, high = work.pop()
            if high <= low:
                continue
            segment = lines[low:high]
            if high - low <= _SLOW_SEGMENT_LINES or failures >= max_failures:
                pieces.slow_lines.extend(segment.tolist())
                continue
            try:
                table = self._read_segment(chunk, segment)
            except _FastPathRefused as refused:
                failures += 1
                if refused.row is not None and 0 <= refused.row < high - low:
                    middle = low + refused.row
                    work += [(low, middle), (middle + 1, high)]
                    pieces.slow_lines.append(int(lines[middle]))
                else:
                    middle = (low + high) // 2
                    work += [(low, middle), (middle, high)]
                continue
            read.setdefault(table.schema, []).append((segment, table))
        for tables in read.values():  # one vectorised check per start_time type, not per segment
            tables.sort(key=lambda item: item[0][0])
            _check_fast_rows(pa.concat_tables([t for _, t in tables]),
                             np.concatenate([segment for segment, _ in tables]), pieces)

    def _read_segment(self, chunk: _Chunk, segment: np.ndarray) -> pa.Table:
        """Arrow's reading of the lines ``segment`` (row i = line segment[i]), or _FastPathRefused."""
        if segment[-1] - segment[0] + 1 == len(segment):
            start, end = int(chunk.starts[segment[0]]), int(chunk.ends[segment[-1]])
            buffer = pa.py_buffer(chunk.data).slice(start, end - start)
        else:
            buffer = pa.py_buffer(b"\n".join(chunk.line(i) for i in segment))
        read_options = pa_json.ReadOptions(use_threads=False, block_size=min(buffer.size + 1, (1 << 31) - 1))
        first_error = None
        for as_text in (self._start_time_as_text, not self._start_time_as_text):
            parse_options = pa_json.ParseOptions(explicit_schema=_arrow_read_schema(as_text),
                                                 unexpected_field_behavior="ignore")
            try:
                table = pa_json.read_json(pa.BufferReader(buffer), read_options=read_options,
                                          parse_options=parse_options)
            except pa.ArrowException as failure:
                first_error = first_error or failure
                if "Column(/start_time) changed from" in str(failure):
                    continue  # the other start_time type may fit this segment
                break
            if table.num_rows != len(segment):  # two objects on a line, or one over two lines
                raise _FastPathRefused(None)
            self._start_time_as_text = as_text
            return table
        raise _FastPathRefused(_row_named_by(first_error, buffer))

    def _decode_slow(self, chunk: _Chunk, pieces: _Pieces) -> None:
        if not pieces.slow_lines:
            return
        indices, records = [], []
        for index in sorted(pieces.slow_lines):
            outcome = decode_line(chunk.line(index))
            if isinstance(outcome, LineReject):
                pieces.rejects.append((index, outcome))
            else:
                indices.append(index)
                records.append(outcome)
        if records:
            columns = {field.name: _slow_column(field, [r[field.name] for r in records])
                       for field in usage_fields()}
            pieces.usage.append((np.array(indices, np.int64), columns))

    def _assemble(self, chunk: _Chunk, pieces: _Pieces) -> DecodedBatch:
        if pieces.usage:
            indices = np.concatenate([i for i, _ in pieces.usage])
            columns = {field.name: pa.concat_arrays([c[field.name] for _, c in pieces.usage])
                       for field in usage_fields()}
            if len(indices) > 1 and np.any(np.diff(indices) < 0):
                order = np.argsort(indices, kind="stable")
                indices = indices[order]
                columns = {name: array.take(pa.array(order)) for name, array in columns.items()}
        else:
            indices = np.empty(0, np.int64)
            columns = {field.name: pa.array([], field.arrow_type) for field in usage_fields()}
        usage = usage_batch(columns, self._path, indices + chunk.first_line)
        rejects = Rejects()
        for index, reject in sorted(pieces.rejects, key=lambda item: item[0]):
            rejects.add(reject.reason, reject.detail, raw=chunk.line(index), position=chunk.first_line + index,
                        record_id=reject.record_id, source=reject.source, start_time_us=reject.start_time_us)
        return DecodedBatch(usage=usage, rejected=rejects.to_batch(self._path))


@functools.cache
def _arrow_read_schema(start_time_as_text: bool) -> pa.Schema:
    """The explicit schema Arrow reads lines with: start_time as ISO text or as epoch micros."""
    return pa.schema([
        pa.field(f.name, pa.string() if f.name == "start_time" and start_time_as_text
                 else pa.int64() if f.name == "start_time" else f.arrow_type)
        for f in usage_fields()
    ])


def _row_named_by(error: Exception | None, buffer: pa.Buffer) -> int | None:
    """The segment row an Arrow JSON error names: "... in row N", or the line holding the value
    in "couldn't parse:VALUE". Only a hint: a wrong one costs time, not correctness."""
    message = str(error)
    match = re.search(r" in row (\d+)", message)
    if match:
        return int(match.group(1))
    match = re.search(r"couldn't parse:(.+)$", message)
    if match:
        data = buffer.to_pybytes()
        value = re.search(rb"[:\s]" + re.escape(match.group(1).encode()) + rb"\s*[,}]", data)
        if value:
            return data.count(b"\n", 0, value.start())
    return None


def _check_fast_rows(table: pa.Table, segment: np.ndarray, pieces: _Pieces) -> None:
    """Split Arrow's rows into usage rows and rejects, with the same rules as :func:`decode_line`."""
    length = table.num_rows
    failed_field = np.full(length, -1, np.int16)     # index in usage_fields() of the first problem
    missing = np.zeros(length, bool)                 # True: MISSING_FIELD, False: INVALID_FIELD
    columns: dict[str, pa.Array] = {}
    fields = usage_fields()

    def mark(index: int, rows: np.ndarray, is_missing: bool) -> None:
        new = rows & (failed_field < 0)
        failed_field[new] = index
        missing[new] = is_missing

    for index, field in enumerate(fields):
        array = table.column(field.name).combine_chunks()
        is_null = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
        if field.name == "start_time":
            array, invalid = _fast_start_time(array)
            if is_null is not None:
                mark(index, is_null, True)
            mark(index, invalid, False)
        elif field.required and is_null is not None:
            mark(index, is_null, True)
        elif field.has_default and not field.nullable and is_null is not None:
            array = pc.fill_null(array, pa.scalar(field.default, field.arrow_type))
        if field.name == "service":
            unknown = pc.invert(pc.is_in(array, value_set=pa.array(service_symbols())))
            mark(index, pc.fill_null(unknown, False).to_numpy(zero_copy_only=False), False)
        columns[field.name] = array

    bad_rows = np.flatnonzero(failed_field >= 0)
    if len(bad_rows):
        good = pa.array(failed_field < 0)
        head = {name: columns[name].take(pa.array(bad_rows)).to_pylist() for name in ("record_id", "source")}
        starts = columns["start_time"].cast(pa.int64()).take(pa.array(bad_rows)).to_pylist()
        raw_values = {f.name: table.column(f.name).take(pa.array(bad_rows)).to_pylist()
                      for f in fields if f.name in ("service", "start_time")}
        for k, row in enumerate(bad_rows):
            field = fields[failed_field[row]]
            if missing[row]:
                detail, reason = _missing(field.name), Reason.MISSING_FIELD
            elif field.name == "service":
                detail, reason = _bad_service(raw_values["service"][k]), Reason.INVALID_FIELD
            else:
                detail, reason = _bad_start_time(raw_values["start_time"][k]), Reason.INVALID_FIELD
            pieces.rejects.append((int(segment[row]), LineReject(
                reason, detail, head["record_id"][k], head["source"][k], starts[k])))
        columns = {name: pc.filter(array, good) for name, array in columns.items()}
        segment = segment[failed_field < 0]
    pieces.usage.append((segment, columns))


def _fast_start_time(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(timestamps, invalid mask) for Arrow's start_time column, strings or integers."""
    invalid = np.zeros(len(array), bool)
    if pa.types.is_integer(array.type):
        return array.cast(_TIMESTAMP), invalid
    matches = pc.match_substring_regex(array, _ISO_ANCHORED)
    invalid = pc.fill_null(pc.invert(matches), False).to_numpy(zero_copy_only=False)
    candidates = pc.if_else(matches, array, pa.scalar(None, pa.string()))
    try:
        return candidates.cast(_TIMESTAMP), invalid
    except pa.ArrowInvalid:  # a well-formed but impossible date (February 30th): ask Python per value
        values = [_start_time_or_none(v) for v in candidates.to_pylist()]
        invalid |= np.array([v is None for v in values]) & candidates.is_valid().to_numpy(zero_copy_only=False)
        return pa.array(values, pa.int64()).cast(_TIMESTAMP), invalid


def _slow_column(field: UsageField, values: list) -> pa.Array:
    if field.name == "start_time":
        return pa.array(values, pa.int64()).cast(_TIMESTAMP)
    return pa.array(values, field.arrow_type)
