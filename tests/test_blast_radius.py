"""A bad record's blast radius is itself: adding hostile records to an input changes no other
record's rating and no charge line (issue: an int64 overflow moved another account's money)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cdr_schemas.validate import validate_usage
from rating.billing import BillingPeriod, bill_accounts
from rating.engine import RatingEngine
from tests.usage_rows import usage_batch, usage_row

REFERENCE = Path(__file__).parent / "data" / "reference_examples"
MIB = 1 << 20
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def engine() -> RatingEngine:
    return RatingEngine.load(str(REFERENCE))


def _clean_rows() -> list[dict]:
    """ACC_A: data sessions across the 1 GiB tier boundary; ACC_B: mobile calls against its bundle."""
    rows = []
    for day in range(2, 20):
        rows.append(usage_row(len(rows), service="DATA", served_msisdn="491510000001",
                              start_time=f"2026-01-{day:02d}T10:00:00+01:00", bytes_up=7 * MIB, bytes_down=90 * MIB))
        rows.append(usage_row(len(rows), service="VOICE", served_msisdn="491510000002", other_party="01701234567",
                              start_time=f"2026-01-{day:02d}T11:00:00+01:00", duration_s=47))
    return rows


def _hostile_rows() -> list[dict]:
    """Records that cannot be priced exactly, at the very start of the cycle (before all clean usage)."""
    at = "2026-01-01T00:30:00+01:00"
    data = dict(service="DATA", served_msisdn="491510000001", start_time=at)
    return [
        usage_row(1000, **data, bytes_up=2**62, bytes_down=2**62),          # sum wraps to -2^63
        usage_row(1001, **data, bytes_up=INT64_MAX, bytes_down=1),          # sum wraps to -2^63
        usage_row(1002, **data, bytes_up=INT64_MAX, bytes_down=INT64_MAX),  # sum wraps to -2
        usage_row(1003, **data, bytes_up=2**44 + 1, bytes_down=0),          # one byte above the largest event
        usage_row(1004, service="SMS", served_msisdn="491510000002", other_party="01701234567", start_time=at,
                  message_count=2**31 - 1),
        usage_row(1005, service="VOICE", served_msisdn="491510000002", other_party="01701234567", start_time=at,
                  duration_s=INT64_MAX),
    ]


def _rate_and_bill(engine: RatingEngine, rows: list[dict]):
    valid, invalid = validate_usage(usage_batch(rows))
    rated, rejected = engine.rate(valid)
    rated = pa.Table.from_batches([rated])
    accounts = engine.account_rows(valid)
    lines, invoices = bill_accounts(engine.compiled, accounts[accounts >= 0], rated,
                                    BillingPeriod.from_usage_cycles(["2026-01"], None))
    reasons = {r["record_id"]: r["reason"] for b in (invalid, rejected) for r in b.to_pylist()}
    return rated.sort_by("record_id"), reasons, lines, invoices


def test_hostile_records_are_rejected_and_move_no_money(engine):
    clean_rated, clean_reasons, clean_lines, clean_invoices = _rate_and_bill(engine, _clean_rows())
    rated, reasons, lines, invoices = _rate_and_bill(engine, _clean_rows() + _hostile_rows())

    assert clean_reasons == {}
    assert reasons == {"r1000": "OVERFLOW", "r1001": "OVERFLOW", "r1002": "OVERFLOW", "r1003": "OVERFLOW",
                       "r1004": "OVERFLOW", "r1005": "INVALID_FIELD"}
    assert rated.equals(clean_rated)   # every clean record rated exactly as without the hostile ones
    assert lines.equals(clean_lines)   # and not one charge line moved
    assert invoices.equals(clean_invoices)
    data = rated.filter(pa.compute.equal(rated.column("service"), "DATA"))
    assert data.column("charge_micros").to_pylist()[0] > 0   # the first session is paid, not free


def test_a_wrapped_data_sum_never_reaches_the_kernel(engine):
    rated, rejected = engine.rate(usage_batch([usage_row(0, service="DATA", served_msisdn="491510000001",
                                                         start_time="2026-01-05T10:00:00+01:00",
                                                         bytes_up=2**62, bytes_down=2**62)]))
    assert rated.num_rows == 0
    assert rejected.column("reason").to_pylist() == ["OVERFLOW"]


def test_negative_counters_in_an_unvalidated_batch_are_rejected_not_rated(engine):
    rated, rejected = engine.rate(usage_batch([usage_row(0, service="DATA", served_msisdn="491510000001",
                                                         start_time="2026-01-05T10:00:00+01:00",
                                                         bytes_up=-5 * MIB, bytes_down=MIB)]))
    assert rated.num_rows == 0
    assert rejected.column("reason").to_pylist() == ["INVALID_FIELD"]
    assert np.all(rated.column("charge_micros").to_numpy() >= 0)


def test_a_usage_line_that_would_wrap_int64_is_an_error_not_a_negative_charge(engine):
    """Each event's charge fits int64 (the kernel rejects larger ones), but a line sums many events:
    Polars' int64 sum wraps silently, so an account billed 2 x 2^62 micro-units came out negative."""
    rated, _ = engine.rate(usage_batch([usage_row(0, service="DATA", served_msisdn="491510000001",
                                                  start_time="2026-01-05T10:00:00+01:00", bytes_down=MIB)]))
    huge = pa.Table.from_batches([rated, rated])
    huge = huge.set_column(huge.schema.get_field_index("charge_micros"), "charge_micros",
                           pa.array([2**62, 2**62], pa.int64()))
    with pytest.raises(ValueError, match=r"usage line of account_id ACC_A, billing_cycle 2026-01.*does not fit"):
        bill_accounts(engine.compiled, np.array([engine.compiled.account_row["ACC_A"]]), huge,
                      BillingPeriod.from_usage_cycles(["2026-01"], None))
