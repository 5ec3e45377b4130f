"""What every decoder shares: the output type, the file error, the usage fields and reject rows.

A decoder turns one input file into :class:`DecodedBatch` values. Records that cannot become a
usage row are collected as rejected rows (reason code, detail, raw bytes); a file that cannot be
read at all raises :class:`InputFileError`.
"""

from __future__ import annotations

import bz2
import dataclasses
import datetime as dt
import functools
import gzip
import json
import lzma
import zlib
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from cdr_schemas.arrow_mapping import rejected_schema, usage_batch_schema
from cdr_schemas.reasons import Reason
from cdr_schemas.registry import USAGE_LATEST, load_schema

# What reading an opened input can raise: I/O errors, and corrupt or truncated .gz/.bz2 data
# (EOFError: the stream ended before its end marker; gzip.BadGzipFile, an OSError: a CRC or length
# mismatch or a bad header; zlib.error: corrupt deflate data).
STREAM_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)

# Compressed inputs, by the suffix after the format's extension: how the stream is decompressed.
# Python's gzip and bz2 modules check that each stream reaches its end marker (and gzip its CRC and
# length); Beam's transparent decompression stops silently where a truncated file ends.
COMPRESSION_SUFFIXES = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True)
class DecodedBatch:
    """One slice of an input file: its usage rows and the records that could not be decoded.

    ``usage`` has exactly :func:`cdr_schemas.usage_batch_schema`, ``rejected`` exactly
    :func:`cdr_schemas.rejected_schema`. Together they hold every input record of the slice once.
    """

    usage: pa.RecordBatch
    rejected: pa.RecordBatch

    @property
    def num_records(self) -> int:
        """Input records the batch accounts for (usage rows plus rejected rows)."""
        return self.usage.num_rows + self.rejected.num_rows


class InputFileError(ValueError):
    """A whole input file cannot be decoded (not found, wrong format, corrupt framing or schema).

    The message names the path and the reason. Records already yielded from the file before the
    error must be discarded with the rest of it: the file as a whole has failed.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot open {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class UsageField:
    """One field of the latest usage record schema, as the decoders need it."""

    name: str
    arrow_type: pa.DataType
    nullable: bool
    has_default: bool
    default: object

    @property
    def required(self) -> bool:
        """True when a record without a value for this field cannot be a usage row."""
        return not self.nullable and not self.has_default


@functools.cache
def usage_fields() -> tuple[UsageField, ...]:
    """The latest usage schema's fields in order (without the provenance columns)."""
    arrow_schema = usage_batch_schema()
    fields = []
    for avro_field in load_schema(USAGE_LATEST)["fields"]:
        arrow_field = arrow_schema.field(avro_field["name"])
        fields.append(UsageField(
            name=avro_field["name"],
            arrow_type=arrow_field.type,
            nullable=arrow_field.nullable,
            has_default="default" in avro_field,
            default=avro_field.get("default"),
        ))
    return tuple(fields)


@functools.cache
def service_symbols() -> tuple[str, ...]:
    """The symbols of the usage schema's ``service`` enum: VOICE, SMS, DATA."""
    (service,) = [f for f in load_schema(USAGE_LATEST)["fields"] if f["name"] == "service"]
    return tuple(service["type"]["symbols"])


def open_input(path: str) -> BinaryIO:
    """Open ``path`` for reading through Beam's FileSystems (local paths, gs://, ...).

    A name ending in one of :data:`COMPRESSION_SUFFIXES` (``.gz``, ``.bz2``, any case) is
    decompressed on the fly; reading a truncated or corrupt stream then raises one of
    :data:`STREAM_ERRORS` (at the latest when its end is reached), never a silent short read.
    Raises :class:`InputFileError` when the file cannot be opened.
    """
    # Imported here so that the schema layer can be used without Beam installed.
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as error:  # Beam raises a different error type per filesystem.
        raise InputFileError(path, f"{type(error).__name__}: {error}") from error
    for suffix, decompress in COMPRESSION_SUFFIXES.items():
        if path.lower().endswith(suffix):
            return _Decompressed(raw, decompress(raw))
    return raw


class _Decompressed:
    """A compressed input read through ``decompressed``; closing it closes the raw file too
    (Python's gzip and bz2 files leave a file object they were given open)."""

    def __init__(self, raw: BinaryIO, decompressed: BinaryIO):
        self._raw = raw
        self._decompressed = decompressed

    def read(self, size: int = -1) -> bytes:
        return self._decompressed.read(size)

    def close(self) -> None:
        try:
            self._decompressed.close()
        finally:
            self._raw.close()


def constant_strings(value: str, length: int) -> pa.Array:
    """A string array of ``length`` copies of ``value``, built without a Python list."""
    return pa.array([value], pa.string()).take(pa.array(np.zeros(length, np.int32)))


def usage_batch(columns: dict[str, pa.Array], input_file: str, positions: np.ndarray) -> pa.RecordBatch:
    """Assemble a usage batch from one array per usage field plus the provenance columns."""
    schema = usage_batch_schema()
    arrays = [columns[field.name] for field in usage_fields()]
    arrays.append(constant_strings(input_file, len(positions)))
    arrays.append(pa.array(np.asarray(positions, np.int64), pa.int64()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class Rejects:
    """Rejected records collected one at a time (they are few), turned into one Arrow batch."""

    def __init__(self):
        self._reason: list[str] = []
        self._detail: list[str] = []
        self._record_id: list[str | None] = []
        self._source: list[str | None] = []
        self._start_time_us: list[int | None] = []
        self._raw: list[bytes] = []
        self._position: list[int] = []

    def __len__(self) -> int:
        return len(self._reason)

    def add(self, reason: Reason, detail: str, *, raw: bytes, position: int,
            record_id: str | None = None, source: str | None = None,
            start_time_us: int | None = None) -> None:
        """Add one rejected record; ``record_id``, ``source`` and ``start_time_us`` when known."""
        self._reason.append(reason.name)
        self._detail.append(detail)
        self._record_id.append(record_id if isinstance(record_id, str) else None)
        self._source.append(source if isinstance(source, str) else None)
        self._start_time_us.append(start_time_us)
        self._raw.append(bytes(raw))
        self._position.append(position)

    def to_batch(self, input_file: str) -> pa.RecordBatch:
        schema = rejected_schema()
        arrays = [
            pa.array(self._reason, pa.string()),
            pa.array(self._detail, pa.string()),
            _safe_strings(self._record_id),
            _safe_strings(self._source),
            pa.array(self._start_time_us, pa.int64()).cast(schema.field("start_time").type),
            pa.array(self._raw, pa.binary()),
            constant_strings(input_file, len(self._reason)),
            pa.array(self._position, pa.int64()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _safe_strings(values: list[str | None]) -> pa.Array:
    """Strings for a reject's id columns; one that is not valid UTF-8 (lone surrogate) is dropped."""
    try:
        return pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([_utf8_or_none(v) for v in values], pa.string())


def _utf8_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def format_micros(value: int | None) -> str | int | None:
    """Epoch microseconds as ISO 8601 UTC with ``Z``; the integer itself when out of datetime range."""
    if value is None:
        return None
    try:
        moment = _EPOCH + value * _ONE_MICROSECOND
    except OverflowError:
        return value
    text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def rows_as_json(batch: pa.RecordBatch | pa.Table, indices) -> list[bytes]:
    """Usage fields of the rows at ``indices`` as compact UTF-8 JSON objects, one per row.

    Fields come in schema order under their Avro names; ``start_time`` is ISO 8601 with ``Z``
    (see :func:`format_micros`), so the text is itself a valid JSON lines input record. Columns
    that are not usage fields (``input_file``, ``input_position``) are left out.
    """
    names = [f.name for f in usage_fields() if f.name in batch.schema.names]
    rows = batch.select(names).take(pa.array(indices, pa.int64()))
    if "start_time" in names:
        index = names.index("start_time")
        start = rows.column(index)
        if pa.types.is_timestamp(start.type):  # any unit (Parquet may hold ms or ns) -> micros
            micros = start.cast(pa.timestamp("us", start.type.tz), safe=False).cast(pa.int64())
            rows = rows.set_column(index, "start_time", micros)
    out = []
    for row in rows.to_pylist():
        if "start_time" in row:
            row["start_time"] = format_micros(row["start_time"])
        out.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace"))
    return out
