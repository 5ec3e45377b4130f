"""Record validation: each check's reason, first failure wins, order kept, raw JSON readable."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_schemas import rejected_schema, usage_batch_schema
from cdr_schemas.decoders import jsonl
from cdr_schemas.validate import validate_usage

UTC = dt.timezone.utc
START = dt.datetime(2026, 1, 5, 8, 15, 0, 250000, tzinfo=UTC)


def row(i: int = 0, **overrides) -> dict:
    value = {
        "record_id": f"r{i}", "source": "msc-1", "service": "VOICE", "served_msisdn": "447700900001",
        "other_party": "02071234567", "start_time": START, "duration_s": 61, "bytes_up": 0, "bytes_down": 0,
        "message_count": 0, "visited_network": None, "cell_id": "c1", "imsi": None, "apn": None,
        "termination_cause": "normalRelease", "rat_type": None, "partial_sequence": 0,
        "usage_type": None, "quantity": None, "subscriber": None, "subscriber_kind": None,
        "input_file": "in.jsonl", "input_position": i,
    }
    value.update(overrides)
    return value


def batch_of(rows: list[dict], schema: pa.Schema | None = None) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema or usage_batch_schema())


def nullable_schema() -> pa.Schema:
    """The usage schema with every column nullable, to build batches holding nulls a decoder never makes."""
    return pa.schema([f.with_nullable(True) for f in usage_batch_schema()])


CASES = [
    ({"record_id": ""}, "MISSING_FIELD", "record_id is empty"),
    ({"source": ""}, "MISSING_FIELD", "source is empty"),
    ({"service": "FAX"}, "INVALID_FIELD", "service 'FAX' is not one of VOICE, SMS, DATA, OTHER"),
    ({"service": "OTHER"}, "MISSING_FIELD", "service OTHER without a usage_type (it is null)"),
    ({"service": "OTHER", "usage_type": ""}, "MISSING_FIELD", "service OTHER without a usage_type (it is empty)"),
    ({"service": "OTHER", "usage_type": "API", "quantity": -2}, "INVALID_FIELD", "quantity is negative (-2)"),
    ({"served_msisdn": None}, "MISSING_FIELD", "served_msisdn and subscriber are both null"),
    ({"served_msisdn": None, "subscriber": "sip:alice@example.com"}, "INVALID_FIELD",
     "subscriber 'sip:alice@example.com' has subscriber_kind None, not one of msisdn, imsi, sip, account"),
    ({"served_msisdn": None, "subscriber": "X1", "subscriber_kind": "customer"}, "INVALID_FIELD",
     "has subscriber_kind 'customer'"),
    ({"served_msisdn": None, "subscriber": "", "subscriber_kind": "account"}, "INVALID_FIELD",
     "subscriber '' is empty"),
    ({"duration_s": -1}, "INVALID_FIELD", "duration_s is negative (-1)"),
    ({"bytes_up": -5}, "INVALID_FIELD", "bytes_up is negative (-5)"),
    ({"bytes_down": -6}, "INVALID_FIELD", "bytes_down is negative (-6)"),
    ({"message_count": -1}, "INVALID_FIELD", "message_count is negative (-1)"),
    ({"served_msisdn": "+447700900001"}, "INVALID_FIELD", "served_msisdn '+447700900001' is not 1 to 15 digits"),
    ({"served_msisdn": ""}, "INVALID_FIELD", "served_msisdn '' is not 1 to 15 digits"),
    ({"served_msisdn": "1234567890123456"}, "INVALID_FIELD", "is not 1 to 15 digits"),
    ({"other_party": None}, "MISSING_DESTINATION", "VOICE record without other_party (it is null)"),
    ({"service": "SMS", "other_party": ""}, "MISSING_DESTINATION", "SMS record without other_party (it is empty)"),
    ({"start_time": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)}, "INVALID_FIELD",
     "start_time 1999-12-31T23:59:59Z is outside 2000-01-01T00:00:00Z..2100-01-01T00:00:00Z"),
    ({"start_time": dt.datetime(2100, 1, 1, 0, 0, 0, 1, tzinfo=UTC)}, "INVALID_FIELD", "is outside"),
    ({"duration_s": 72 * 3600 + 1}, "INVALID_FIELD", "VOICE duration_s 259201 exceeds 72 hours"),
]


@pytest.mark.parametrize("overrides, reason, detail", CASES)
def test_each_check_rejects_with_its_reason_and_a_detail_naming_the_field(overrides, reason, detail):
    batch = batch_of([row(0), row(1, **overrides), row(2)])
    valid, rejected = validate_usage(batch)
    assert valid.column("record_id").to_pylist() == ["r0", "r2"]
    assert rejected.schema.equals(rejected_schema())
    (reject,) = rejected.to_pylist()
    assert reject["reason"] == reason
    assert detail in reject["detail"], reject["detail"]
    assert (reject["input_file"], reject["input_position"]) == ("in.jsonl", 1)
    assert reject["start_time"] == batch.column("start_time")[1].as_py()


def test_nulls_in_non_nullable_columns_are_missing_field():
    with_nulls = batch_of([row(0, record_id=None), row(1, duration_s=None), row(2, service=None)], nullable_schema())
    # Arrow does not enforce nullable=False, so a producer other than the decoders could send this.
    valid, rejected = validate_usage(pa.RecordBatch.from_arrays(with_nulls.columns, schema=usage_batch_schema()))
    assert valid.num_rows == 0
    assert rejected.column("reason").to_pylist() == ["MISSING_FIELD"] * 3
    assert rejected.column("detail").to_pylist() == ["record_id is null", "duration_s is null", "service is null"]


@pytest.mark.parametrize("overrides", [
    {"duration_s": 72 * 3600},                                        # exactly 72 h is allowed
    {"start_time": dt.datetime(2000, 1, 1, tzinfo=UTC)},
    {"start_time": dt.datetime(2100, 1, 1, tzinfo=UTC)},
    {"served_msisdn": "1"}, {"served_msisdn": "123456789012345"},
    {"service": "DATA", "other_party": None, "duration_s": 10 * 72 * 3600},  # the 72 h limit is for voice
    {"other_party": "not digits"},                                    # rating rejects it as INVALID_NUMBER
    {"service": "SMS", "duration_s": 0, "message_count": 3},
])
def test_edge_values_are_valid(overrides):
    valid, rejected = validate_usage(batch_of([row(0, **overrides)]))
    assert (valid.num_rows, rejected.num_rows) == (1, 0), rejected.to_pylist()


def test_a_row_failing_several_checks_is_rejected_once_for_the_first():
    bad = row(0, source="", service="FAX", duration_s=-1, served_msisdn="x", other_party=None)
    valid, rejected = validate_usage(batch_of([bad, row(1, duration_s=-1, served_msisdn="x")]))
    assert valid.num_rows == 0
    assert rejected.column("detail").to_pylist() == ["source is empty", "duration_s is negative (-1)"]


def test_valid_rows_are_a_filter_of_the_input_in_order_and_rejects_keep_input_order():
    rows = [row(i, duration_s=-1 if i % 3 == 0 else 60 + i) for i in range(10)]
    batch = batch_of(rows)
    valid, rejected = validate_usage(batch)
    assert valid.schema == batch.schema
    assert valid.to_pylist() == [r for r in batch.to_pylist() if r["duration_s"] >= 0]
    assert rejected.column("input_position").to_pylist() == [0, 3, 6, 9]


def test_all_valid_batch_comes_back_unchanged_with_no_rejects():
    batch = batch_of([row(i) for i in range(3)])
    valid, rejected = validate_usage(batch)
    assert valid is batch
    assert rejected.num_rows == 0 and rejected.schema.equals(rejected_schema())


def test_empty_batch():
    valid, rejected = validate_usage(batch_of([]))
    assert valid.num_rows == 0 and rejected.num_rows == 0


def test_raw_is_the_row_as_compact_json_with_iso_start_time():
    _, rejected = validate_usage(batch_of([row(7, served_msisdn="abc", other_party="0207 1234")]))
    raw = rejected.column("raw")[0].as_py()
    assert b" " not in raw.replace(b"0207 1234", b"")  # compact
    record = json.loads(raw)
    assert record["served_msisdn"] == "abc" and record["record_id"] == "r7"
    assert record["start_time"] == "2026-01-05T08:15:00.250000Z"
    assert "input_file" not in record and "input_position" not in record  # they are columns of the reject
    assert list(record) == usage_batch_schema().names[:-2]


def test_raw_of_a_start_time_beyond_datetime_range_is_the_integer():
    far = pa.array([10**18], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    batch = batch_of([row(0)])
    batch = batch.set_column(batch.schema.get_field_index("start_time"), usage_batch_schema().field("start_time"), far)
    _, rejected = validate_usage(batch)
    assert json.loads(rejected.column("raw")[0].as_py())["start_time"] == 10**18
    assert str(10**18) in rejected.column("detail")[0].as_py()


def test_wrong_schema_raises_naming_the_column():
    batch = batch_of([row(0)]).drop_columns(["duration_s"])
    with pytest.raises(ValueError, match="column 'duration_s' is missing"):
        validate_usage(batch)


_texts = st.sampled_from(["", "r", "447700900001", "x y", "é", "1234567890123456"])
_rows = st.builds(
    lambda i, rid, src, svc, msisdn, other, start_s, dur, up: row(
        i, record_id=rid, source=src, service=svc, served_msisdn=msisdn, other_party=other,
        start_time=dt.datetime(1990, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=start_s), duration_s=dur, bytes_up=up),
    st.integers(0, 10**6), _texts, _texts, st.sampled_from(["VOICE", "SMS", "DATA", "MMS"]), _texts,
    st.none() | _texts, st.integers(0, 150 * 365 * 86400), st.integers(-2, 10**6), st.integers(-1, 5),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_rows, max_size=20))
def test_every_row_is_valid_or_rejected_once_and_raw_redecodes_to_the_row(rows):
    rows = [dict(r, input_position=i) for i, r in enumerate(rows)]
    valid, rejected = validate_usage(batch_of(rows))
    positions = valid.column("input_position").to_pylist() + rejected.column("input_position").to_pylist()
    assert sorted(positions) == list(range(len(rows)))
    if rejected.num_rows:
        # raw is a JSON lines record our own decoder reads back to the same usage values (an unknown
        # service, which JSON lines cannot carry, comes back as the decoder's own reject).
        data = b"\n".join(rejected.column("raw").to_pylist()) + b"\n"
        (decoded,) = jsonl.decode_jsonl("raw.jsonl", io.BytesIO(data), 1000)
        originals = [rows[p] for p in rejected.column("input_position").to_pylist()]
        names = usage_batch_schema().names[:-2]
        assert [{k: r[k] for k in names} for r in decoded.usage.to_pylist()] == [
            {k: r[k] for k in names} for r in originals if r["service"] != "MMS"]
        assert decoded.rejected.column("detail").to_pylist() == [
            "service 'MMS' is not one of VOICE, SMS, DATA, OTHER" for r in originals if r["service"] == "MMS"]
