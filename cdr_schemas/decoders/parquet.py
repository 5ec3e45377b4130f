"""Parquet files -> usage batches, columns matched to the latest usage schema by name.

The file's columns are checked once, before any row is read: a usage field that is missing and has
no default, or a column whose type cannot be converted, is an InputFileError. Accepted conversions:
any integer width, signed or unsigned, to the field's integer type, string-like and
dictionary-encoded strings to string, any timestamp unit with a time zone to
``timestamp[us, UTC]``, and an all-null column of type null to any type. Fields missing from the
file that have a default (the v2-only ``rat_type`` and ``partial_sequence``, for a file written
with v1) take it. Row by row, a null in a required column is a MISSING_FIELD reject, an integer
that does not fit the field (e.g. an int64 into the int32 ``message_count``, a uint64 above
2^63 - 1) is an INVALID_FIELD reject, and a null in a column with a default takes the default, as
in the other formats.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_schemas.decoders.common import (
    DecodedBatch,
    InputFileError,
    Rejects,
    UsageField,
    rows_as_json,
    usage_batch,
    usage_fields,
)
from cdr_schemas.reasons import Reason
from cdr_schemas.registry import USAGE_LATEST

_INT_RANGES = {pa.int64(): (-(1 << 63), (1 << 63) - 1), pa.int32(): (-(1 << 31), (1 << 31) - 1)}


@dataclasses.dataclass(frozen=True)
class _Column:
    """How one usage field is obtained: read from the file (and cast), or filled with its default."""

    field: UsageField
    in_file: bool


def decode_parquet(path: str, stream: BinaryIO, batch_size: int) -> Iterator[DecodedBatch]:
    """Decode the Parquet file open as ``stream``; see the module docstring."""
    try:
        parquet_file = pq.ParquetFile(stream)
        file_schema = parquet_file.schema_arrow
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for a non-Parquet file
        raise InputFileError(path, f"not a readable Parquet file: {type(error).__name__}: {error}") from error
    columns = [_plan_column(path, file_schema, field) for field in usage_fields()]
    names = [c.field.name for c in columns if c.in_file]
    position = 0
    batches = parquet_file.iter_batches(batch_size=batch_size, columns=names)
    while True:
        try:
            batch = next(batches, None)
        except Exception as error:  # corrupt pages, I/O errors: the row count is no longer known
            raise InputFileError(path, f"unreadable Parquet data after row {position}: "
                                       f"{type(error).__name__}: {error}") from error
        if batch is None:
            return
        if batch.num_rows:
            yield _decode_batch(path, batch, columns, position)
        position += batch.num_rows


def _plan_column(path: str, file_schema: pa.Schema, field: UsageField) -> _Column:
    index = file_schema.get_field_index(field.name)
    if index < 0:
        if field.required:
            raise InputFileError(
                path, f"column {field.name!r} is missing; {USAGE_LATEST} requires it (it has no default). "
                      "Add the column, or write the file with cdr_schemas.usage_batch_schema()")
        return _Column(field, in_file=False)
    source = file_schema.field(index).type
    if not _converts_without_loss(source, field.arrow_type):
        raise InputFileError(
            path, f"column {field.name!r} has type {source}, expected {field.arrow_type} "
                  "(or a type that converts to it without loss); write the file with "
                  "cdr_schemas.usage_batch_schema()")
    return _Column(field, in_file=True)


def _converts_without_loss(source: pa.DataType, target: pa.DataType) -> bool:
    if source == target or pa.types.is_null(source):  # an all-null column is typed null by some writers
        return True
    if pa.types.is_dictionary(source):
        return _converts_without_loss(source.value_type, target)
    if target == pa.string():
        return pa.types.is_large_string(source) or pa.types.is_string_view(source)
    if pa.types.is_integer(target):
        return pa.types.is_integer(source)  # values that do not fit are rejected row by row
    if pa.types.is_timestamp(target):
        # A timestamp without a time zone is ambiguous (local time of which zone?): not accepted.
        return pa.types.is_timestamp(source) and source.tz is not None
    return False


def _decode_batch(path: str, batch: pa.RecordBatch, columns: list[_Column], first_position: int) -> DecodedBatch:
    length = batch.num_rows
    arrays = {}
    failed_field = np.full(length, -1, np.int16)   # index in usage_fields() of a row's first problem
    missing = np.zeros(length, bool)               # True: MISSING_FIELD, False: INVALID_FIELD
    for index, column in enumerate(columns):
        field = column.field
        if not column.in_file:
            arrays[field.name] = _constant(field, length)
            continue
        array = batch.column(field.name)
        if field.required and array.null_count:
            rows = array.is_null().to_numpy(zero_copy_only=False) & (failed_field < 0)
            failed_field[rows], missing[rows] = index, True
        if pa.types.is_integer(field.arrow_type) and array.type != field.arrow_type:
            too_big = _out_of_range(array, *_INT_RANGES[field.arrow_type])
            if too_big is not None:
                rows = pc.fill_null(too_big, False).to_numpy(zero_copy_only=False) & (failed_field < 0)
                failed_field[rows] = index
                array = pc.if_else(too_big, pa.scalar(None, array.type), array)
        if pa.types.is_timestamp(field.arrow_type) and pa.types.is_timestamp(array.type):
            lossy = _lossy_instants(array, field.arrow_type)
            if lossy is not None:
                rows = lossy & (failed_field < 0)
                failed_field[rows] = index
                array = pc.if_else(pa.array(lossy), pa.scalar(None, array.type), array)
        try:
            array = array.cast(field.arrow_type, safe=True)
        except pa.ArrowInvalid as error:  # e.g. nanoseconds that microseconds cannot hold
            raise InputFileError(path, f"column {field.name!r} rows {first_position}..{first_position + length - 1} "
                                       f"do not convert to {field.arrow_type} without loss: {error}") from error
        if field.has_default and not field.nullable and array.null_count:
            array = pc.fill_null(array, pa.scalar(field.default, field.arrow_type))
        arrays[field.name] = array

    positions = np.arange(first_position, first_position + length, dtype=np.int64)
    rejected_rows = np.flatnonzero(failed_field >= 0)
    rejects = Rejects()
    if len(rejected_rows):
        table = pa.table({name: batch.column(name) if name in batch.schema.names else array
                          for name, array in arrays.items()})  # the values as read, for raw
        raws = rows_as_json(table, rejected_rows)
        head = pa.table({"record_id": arrays["record_id"], "source": arrays["source"],
                         "start_time": arrays["start_time"].cast(pa.int64())}).take(rejected_rows).to_pylist()
        fields = usage_fields()
        for row, raw, info in zip(rejected_rows, raws, head):
            field = fields[failed_field[row]]
            if missing[row]:
                reason, detail = Reason.MISSING_FIELD, f"{field.name} is null"
            else:
                column = batch.column(field.name)
                if pa.types.is_timestamp(column.type):  # as_py() cannot build a datetime that far out
                    value = f"{column.cast(pa.int64())[int(row)].as_py()} {column.type.unit}"
                else:
                    value = column[int(row)].as_py()
                reason, detail = Reason.INVALID_FIELD, f"{field.name} {value} does not fit {field.arrow_type}"
            rejects.add(reason, detail, raw=raw, position=int(positions[row]),
                        record_id=info["record_id"], source=info["source"], start_time_us=info["start_time"])
        keep = pa.array(failed_field < 0)
        arrays = {name: pc.filter(array, keep) for name, array in arrays.items()}
        positions = positions[failed_field < 0]
    return DecodedBatch(usage=usage_batch(arrays, path, positions), rejected=rejects.to_batch(path))


def _out_of_range(array: pa.Array, low: int, high: int) -> pa.Array | None:
    """Where the integers of ``array`` fall outside ``low..high`` (None: nowhere, by its type).

    The bounds are compared as scalars of the array's own type, so a uint64 column (whose values
    may exceed int64) is compared without a cast; a bound its type cannot reach is no check.
    """
    value_type = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    info = np.iinfo(f"{'int' if pa.types.is_signed_integer(value_type) else 'uint'}{value_type.bit_width}")
    checks = []
    if low > info.min:
        checks.append(pc.less(array, pa.scalar(low, value_type)))
    if high < info.max:
        checks.append(pc.greater(array, pa.scalar(high, value_type)))
    if not checks:
        return None
    return checks[0] if len(checks) == 1 else pc.or_kleene(*checks)


_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _lossy_instants(array: pa.Array, target: pa.DataType) -> np.ndarray | None:
    """Rows of a timestamp column that ``target``'s unit cannot hold exactly (None: none): an
    instant beyond int64 in the finer unit (seconds or milliseconds far from 1970), or one with
    more precision than the coarser unit keeps (nanoseconds that are not whole microseconds)."""
    source_per_s, target_per_s = _UNITS_PER_SECOND[array.type.unit], _UNITS_PER_SECOND[target.unit]
    if source_per_s == target_per_s:
        return None
    ticks = array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    if source_per_s < target_per_s:
        limit = np.iinfo(np.int64).max // (target_per_s // source_per_s)
        lossy = (ticks > limit) | (ticks < -limit)
    else:
        lossy = ticks % (source_per_s // target_per_s) != 0
    return lossy if lossy.any() else None


def _constant(field: UsageField, length: int) -> pa.Array:
    if field.has_default and field.default is not None:
        return pa.array(np.full(length, field.default), field.arrow_type)
    return pa.nulls(length, field.arrow_type)


