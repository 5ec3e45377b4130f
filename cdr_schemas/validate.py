"""Record validation: split a usage batch into rows fit for rating and rejected rows.

The checks run vectorised over the whole batch, in this order; a row failing several is rejected
once, for the first:

1. record_id or source null or empty                         -> MISSING_FIELD
2. another non-nullable usage column null                    -> MISSING_FIELD
3. service not VOICE, SMS, DATA or OTHER                     -> INVALID_FIELD
4. OTHER without usage_type (null or empty)                  -> MISSING_FIELD
5. duration_s, bytes_up, bytes_down, message_count or quantity < 0 -> INVALID_FIELD
6. neither served_msisdn nor subscriber                      -> MISSING_FIELD
7. served_msisdn not 1 to 15 digits                          -> INVALID_FIELD
8. subscriber empty, or without a subscriber_kind of msisdn, imsi, sip or account -> INVALID_FIELD
9. VOICE or SMS with other_party null or empty               -> MISSING_DESTINATION
10. start_time before 2000-01-01T00:00Z or after 2100-01-01T00:00Z -> INVALID_FIELD
11. VOICE with duration_s over 72 hours                      -> INVALID_FIELD
12. visited_network longer than 16 characters                -> INVALID_FIELD
   (an MCC+MNC has 5 or 6 digits; rating zones at most 16)

Whether a usage type is declared, and whether a subscriber exists, depends on the reference data:
rating checks them (UNKNOWN_USAGE_TYPE, UNKNOWN_SUBSCRIBER).

The other party's digits are not checked here: rating normalises numbers and rejects what is not
dialable as INVALID_NUMBER. A rejected row keeps the row as compact JSON in ``raw`` (start_time as
ISO 8601 with ``Z``), readable by a billing engineer and itself a valid JSON lines input record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas.arrow_mapping import rejected_schema, usage_batch_schema
from cdr_schemas.decoders.common import format_micros, rows_as_json, service_symbols, usage_fields
from cdr_schemas.reasons import Reason

MAX_VOICE_DURATION_S = 72 * 3600
MAX_VISITED_NETWORK_DIGITS = 16   # the rating kernels' digit buffer (rating.kernels.numbers)
EARLIEST_START = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
_COUNTERS = ("duration_s", "bytes_up", "bytes_down", "message_count", "quantity")
SUBSCRIBER_KINDS = ("msisdn", "imsi", "sip", "account")
_MSISDN_PATTERN = r"^[0-9]{1,15}$"


@dataclasses.dataclass(frozen=True)
class _Check:
    reason: Reason
    failing: Callable[[pa.RecordBatch], pa.Array]   # boolean per row, True = fails (null = passes)
    detail: Callable[[dict], str]                   # for one failing row, as a dict (start_time in micros)


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    return batch.column(batch.schema.get_field_index(name))


def _empty_or_null(array: pa.Array) -> pa.Array:
    return pc.or_kleene(pc.is_null(array), pc.equal(pc.utf8_length(array), 0))


def _empty_id_detail(row: dict) -> str:
    name = "record_id" if not row["record_id"] else "source"
    return f"{name} is {'null' if row[name] is None else 'empty'}"


_NON_NULLABLE = tuple(f.name for f in usage_fields() if not f.nullable and f.name not in ("record_id", "source"))


def _any_null(batch: pa.RecordBatch) -> pa.Array:
    mask = pa.array(np.zeros(batch.num_rows, bool))
    for name in _NON_NULLABLE:
        mask = pc.or_(mask, pc.is_null(_column(batch, name)))
    return mask


def _negative(batch: pa.RecordBatch) -> pa.Array:
    mask = pa.array(np.zeros(batch.num_rows, bool))
    for name in _COUNTERS:
        mask = pc.or_kleene(mask, pc.less(_column(batch, name), 0))
    return mask


def _negative_detail(row: dict) -> str:
    name = next(n for n in _COUNTERS if row[n] is not None and row[n] < 0)
    return f"{name} is negative ({row[name]})"


def _bad_subscriber(batch: pa.RecordBatch) -> pa.Array:
    """A subscriber that is empty or whose kind is missing or unknown (rows without one pass)."""
    subscriber, kind = _column(batch, "subscriber"), _column(batch, "subscriber_kind")
    bad_kind = pc.invert(pc.fill_null(pc.is_in(kind, value_set=pa.array(SUBSCRIBER_KINDS)), False))
    return pc.and_(pc.is_valid(subscriber), pc.or_(pc.equal(pc.utf8_length(subscriber), 0), bad_kind))


def _is_voice_or_sms(batch: pa.RecordBatch) -> pa.Array:
    return pc.is_in(_column(batch, "service"), value_set=pa.array(["VOICE", "SMS"]))


def _start_out_of_range(batch: pa.RecordBatch) -> pa.Array:
    start = _column(batch, "start_time")
    return pc.or_kleene(pc.less(start, pa.scalar(EARLIEST_START, start.type)),
                        pc.greater(start, pa.scalar(LATEST_START, start.type)))


_CHECKS = (
    _Check(Reason.MISSING_FIELD,
           lambda b: pc.or_kleene(_empty_or_null(_column(b, "record_id")), _empty_or_null(_column(b, "source"))),
           _empty_id_detail),
    _Check(Reason.MISSING_FIELD, _any_null,
           lambda row: f"{next(n for n in _NON_NULLABLE if row[n] is None)} is null"),
    _Check(Reason.INVALID_FIELD,
           lambda b: pc.invert(pc.is_in(_column(b, "service"), value_set=pa.array(service_symbols()))),
           lambda row: f"service {row['service']!r} is not one of {', '.join(service_symbols())}"),
    _Check(Reason.MISSING_FIELD,
           lambda b: pc.and_(pc.equal(_column(b, "service"), "OTHER"), _empty_or_null(_column(b, "usage_type"))),
           lambda row: f"service OTHER without a usage_type (it is {'null' if row['usage_type'] is None else 'empty'})"),
    _Check(Reason.INVALID_FIELD, _negative, _negative_detail),
    _Check(Reason.MISSING_FIELD,
           lambda b: pc.and_(pc.is_null(_column(b, "served_msisdn")), pc.is_null(_column(b, "subscriber"))),
           lambda row: "served_msisdn and subscriber are both null: one must identify the subscriber"),
    _Check(Reason.INVALID_FIELD,
           lambda b: pc.invert(pc.match_substring_regex(_column(b, "served_msisdn"), _MSISDN_PATTERN)),
           lambda row: f"served_msisdn {row['served_msisdn']!r} is not 1 to 15 digits"),
    _Check(Reason.INVALID_FIELD, _bad_subscriber,
           lambda row: (f"subscriber {row['subscriber']!r} is empty" if row["subscriber"] == "" else
                        f"subscriber {row['subscriber']!r} has subscriber_kind {row['subscriber_kind']!r}, not one of "
                        f"{', '.join(SUBSCRIBER_KINDS)}")),
    _Check(Reason.MISSING_DESTINATION,
           lambda b: pc.and_(_is_voice_or_sms(b), _empty_or_null(_column(b, "other_party"))),
           lambda row: (f"{row['service']} record without other_party "
                        f"(it is {'null' if row['other_party'] is None else 'empty'})")),
    _Check(Reason.INVALID_FIELD, _start_out_of_range,
           lambda row: (f"start_time {format_micros(row['start_time'])} is outside "
                        f"2000-01-01T00:00:00Z..2100-01-01T00:00:00Z")),
    _Check(Reason.INVALID_FIELD,
           lambda b: pc.and_(pc.equal(_column(b, "service"), "VOICE"),
                             pc.greater(_column(b, "duration_s"), MAX_VOICE_DURATION_S)),
           lambda row: f"VOICE duration_s {row['duration_s']} exceeds 72 hours ({MAX_VOICE_DURATION_S} s)"),
    _Check(Reason.INVALID_FIELD,
           lambda b: pc.greater(pc.utf8_length(_column(b, "visited_network")), MAX_VISITED_NETWORK_DIGITS),
           lambda row: (f"visited_network {row['visited_network']!r} has more than {MAX_VISITED_NETWORK_DIGITS} "
                        "characters; a network code is MCC+MNC (5 or 6 digits)")),
)


def validate_usage(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(valid rows, rejected rows) of a usage batch; see the module docstring for the checks.

    ``batch`` must have :func:`cdr_schemas.usage_batch_schema`; the valid rows are a filter of it
    (same schema, order kept) and the rejected rows have :func:`cdr_schemas.rejected_schema`, in
    input order. The input batch is not modified; when every row is valid it is returned as is.
    Raises ValueError when the schema is not the usage batch schema.
    """
    expected = usage_batch_schema()
    if not batch.schema.equals(expected, check_metadata=False):
        raise ValueError(
            "validate_usage expects a batch with cdr_schemas.usage_batch_schema(); got a different schema: "
            f"{_schema_difference(batch.schema, expected)}. Decode input with cdr_schemas.decoders.decode_file")
    first_failure = np.full(batch.num_rows, -1, np.int8)
    for index, check in enumerate(_CHECKS):
        failing = pc.fill_null(check.failing(batch), False).to_numpy(zero_copy_only=False)
        first_failure[failing & (first_failure < 0)] = index
    rejected_rows = np.flatnonzero(first_failure >= 0)
    if not len(rejected_rows):
        return batch, _empty_rejected()
    valid = batch.filter(pa.array(first_failure < 0))
    return valid, _rejected(batch, rejected_rows, first_failure[rejected_rows])


def _rejected(batch: pa.RecordBatch, rows: np.ndarray, checks: np.ndarray) -> pa.RecordBatch:
    taken = batch.take(pa.array(rows))
    start = _column(taken, "start_time")
    as_dicts = taken.set_column(taken.schema.get_field_index("start_time"), "start_time",
                                start.cast(pa.int64())).to_pylist()
    reasons = [_CHECKS[c].reason.name for c in checks]
    details = [_CHECKS[c].detail(row) for c, row in zip(checks, as_dicts)]
    schema = rejected_schema()
    return pa.RecordBatch.from_arrays([
        pa.array(reasons, pa.string()),
        pa.array(details, pa.string()),
        _column(taken, "record_id"),
        _column(taken, "source"),
        start,
        pa.array(rows_as_json(batch, rows), pa.binary()),
        _column(taken, "input_file"),
        _column(taken, "input_position"),
    ], schema=schema)


def _empty_rejected() -> pa.RecordBatch:
    schema = rejected_schema()
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _schema_difference(actual: pa.Schema, expected: pa.Schema) -> str:
    for field in expected:
        index = actual.get_field_index(field.name)
        if index < 0:
            return f"column {field.name!r} is missing"
        if not actual.field(index).equals(field):
            return f"column {field.name!r} is {actual.field(index)}, expected {field}"
    extra = [name for name in actual.names if name not in expected.names]
    if extra:
        return f"unexpected columns {extra}"
    return f"columns are in order {actual.names}, expected {expected.names}"
