"""Billing cycles, proration, taxes, late usage and invoice totals (rating.billing)."""

from __future__ import annotations

import datetime as dt
import shutil
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating.billing import BillingPeriod, bill_accounts
from rating.cycles import month_index
from rating.engine import RatingEngine
from rating.kernels.enrich import cycle_bounds, cycle_of
from rating.reference import load_reference
from rating.timezones import stack_zones
from rating.twin import cycle_twin
from tests.usage_rows import instant_us, usage_batch, usage_row
from tests.paths import REFERENCE_EXAMPLES

EXAMPLES = str(REFERENCE_EXAMPLES)
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham", "UTC"]


def _kernel_cycle(instant: int, zone: str, bcd: int):
    starts, transitions, offsets = stack_zones([zone])
    return cycle_of(instant, 0, bcd, starts, transitions, offsets)


@pytest.mark.parametrize("instant, zone, bcd, expected", [
    ("2026-01-31T23:30:00+01:00", "Europe/Berlin", 1, "2026-01"),          # last minutes of January, local
    ("2026-01-31T23:30:00+00:00", "Europe/Berlin", 1, "2026-02"),          # already 1 Feb in Berlin
    ("2026-02-27T12:00:00+01:00", "Europe/Berlin", 28, "2026-01"),         # BCD 28: Jan 28 - Feb 28
    ("2026-02-28T00:00:00+01:00", "Europe/Berlin", 28, "2026-02"),
    ("2026-03-27T23:59:59+01:00", "Europe/Berlin", 28, "2026-02"),         # Feb 28 - Mar 28
    ("2026-10-24T22:00:00+00:00", "Europe/Berlin", 25, "2026-10"),         # 25 Oct 00:00 CEST (DST day)
    ("2026-10-24T21:59:59+00:00", "Europe/Berlin", 25, "2026-09"),
    ("2026-03-29T00:30:00+01:00", "Europe/Berlin", 28, "2026-03"),         # spring-forward day
    ("2026-12-31T23:59:59-05:00", "America/New_York", 1, "2026-12"),       # year end
    ("2027-01-01T00:00:00-05:00", "America/New_York", 1, "2027-01"),
])
def test_cycle_assignment(instant, zone, bcd, expected):
    month, start, end = _kernel_cycle(instant_us(instant), zone, bcd)
    assert f"{month // 12:04d}-{month % 12 + 1:02d}" == expected
    assert cycle_twin(instant_us(instant), zone, bcd) == (expected, start, end)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), bcd=st.integers(1, 28),
       instant=st.integers(instant_us("2025-01-01T00:00:00Z"), instant_us("2028-12-31T00:00:00Z")))
def test_cycle_kernels_equal_zoneinfo(zone, bcd, instant):
    month, start, end = _kernel_cycle(instant, zone, bcd)
    assert (f"{month // 12:04d}-{month % 12 + 1:02d}", start, end) == cycle_twin(instant, zone, bcd)
    assert start <= instant < end
    local_start = dt.datetime.fromtimestamp(start / 1e6, ZoneInfo(zone))
    assert (local_start.day, local_start.hour, local_start.minute) == (bcd, 0, 0)
    starts, transitions, offsets = stack_zones([zone])
    s, e = np.zeros(1, np.int64), np.zeros(1, np.int64)
    cycle_bounds(np.array([month]), np.array([0]), np.array([bcd]), starts, transitions, offsets, s, e)
    assert (s[0], e[0]) == (start, end)


@pytest.fixture
def reference_dir(tmp_path):
    """The worked-examples operator plus ACC_E, who changes plan on 11 January."""
    ref = tmp_path / "reference"
    shutil.copytree(EXAMPLES, ref)
    with open(ref / "accounts.csv", "a") as f:
        f.write("ACC_E,EUR,Europe/Berlin,1,DE\n")
    with open(ref / "subscriptions.csv", "a") as f:
        f.write("491510000005,ACC_E,EXAMPLE,2026-01-01T00:00:00+01:00,2026-01-11T00:00:00+01:00\n")
        f.write("491510000005,ACC_E,EXAMPLE_BUNDLE,2026-01-11T00:00:00+01:00,\n")
    return ref


def _bill(reference_dir, rows, closed_through=None):
    engine = RatingEngine.from_reference(load_reference(reference_dir))
    rated, rejected = engine.rate(usage_batch(rows))
    assert rejected.num_rows == 0, rejected.to_pylist()
    period = BillingPeriod.from_usage_cycles(set(rated.column("service_cycle").to_pylist()), closed_through)
    accounts = np.arange(len(engine.compiled.account_ids))
    lines, summary = bill_accounts(engine.compiled, accounts, pa.Table.from_batches([rated]), period)
    return rated, lines.to_pylist(), summary.to_pylist()


def _call(i, msisdn, start, seconds=61, other="030123456"):
    return usage_row(i, service="VOICE", served_msisdn=msisdn, start_time=start, duration_s=seconds, other_party=other)


def test_plan_fees_and_allowances_are_prorated_by_active_days(reference_dir):
    rows = [_call(0, "491510000001", "2026-01-05T10:00:00+01:00")]
    _, lines, _ = _bill(reference_dir, rows)
    fees = {(l["account_id"], l["item"]): l for l in lines if l["line_type"] == "PLAN_FEE"}
    # A full month: 5.00.
    assert fees[("ACC_A", "MONTHLY 491510000001")]["amount_micros"] == 5_000_000
    # Subscribed from 17 Jan: 15 of 31 days of 8.00 = 3.870967.. -> 3.870968 (half-even), 3.87 on the invoice.
    late_joiner = fees[("ACC_C", "MONTHLY 491510000003")]
    assert (late_joiner["amount_micros"], late_joiner["amount_minor"], late_joiner["quantity"]) == (3_870_968, 387, 15)
    # Plan change on 11 Jan: 10 days of EXAMPLE (5.00) and 21 days of EXAMPLE_BUNDLE (8.00).
    changer = sorted(l["amount_micros"] for l in lines if l["line_type"] == "PLAN_FEE" and l["account_id"] == "ACC_E")
    assert changer == [1_612_903, 5_419_355]
    allowances = {(l["account_id"], l["item"]): l for l in lines if l["line_type"] == "ALLOWANCE"}
    assert allowances[("ACC_C", "MOBILE_100S")]["granted_units"] == 100 * 15 // 31
    assert allowances[("ACC_E", "MOBILE_100S")]["granted_units"] == 100 * 21 // 31
    assert allowances[("ACC_B", "MOBILE_100S")]["granted_units"] == 100


def test_allowance_line_shows_granted_used_and_left(reference_dir):
    rows = [_call(0, "491510000002", "2026-01-05T09:00:00+01:00", 47, "015112345678"),
            _call(1, "491510000002", "2026-01-05T10:00:00+01:00", 70, "015112345678")]
    _, lines, _ = _bill(reference_dir, rows)
    line = next(l for l in lines if l["line_type"] == "ALLOWANCE" and l["account_id"] == "ACC_B")
    assert (line["granted_units"], line["free_units"], line["left_units"]) == (100, 96, 4)
    assert line["amount_micros"] == 0


def test_tax_is_computed_per_line_and_rounded(reference_dir):
    # Two national peak calls (0.29 each) and one mobile call (0.072 -> 0.07): VAT 19 % per line.
    rows = [_call(0, "491510000001", "2026-01-05T10:00:00+01:00"),
            _call(1, "491510000001", "2026-01-05T10:10:00+01:00"),
            _call(2, "491510000001", "2026-01-05T11:00:00+01:00", 47, "015112345678")]
    _, lines, summary = _bill(reference_dir, rows)
    mine = [l for l in lines if l["account_id"] == "ACC_A"]
    usage = {l["zone"]: l for l in mine if l["line_type"] == "USAGE"}
    assert usage["NATIONAL"]["amount_minor"] == 58 and usage["NATIONAL"]["tax_minor"] == 11   # 11.02 -> 11
    assert usage["MOBILE"]["amount_micros"] == 72_000 and usage["MOBILE"]["amount_minor"] == 7
    assert usage["MOBILE"]["rounding_micros"] == -2_000 and usage["MOBILE"]["tax_minor"] == 1     # 1.33 -> 1
    fee = next(l for l in mine if l["line_type"] == "PLAN_FEE")
    assert fee["tax_minor"] == 95                                                                # 500 x 0.19
    tax = next(l for l in mine if l["line_type"] == "TAX")
    assert tax["amount_minor"] == 11 + 1 + 95 and tax["item"] == "VAT 19%" and tax["quantity"] == 3
    invoice = next(s for s in summary if s["account_id"] == "ACC_A")
    assert invoice["subtotal_minor"] == 58 + 7 + 500
    assert invoice["tax_minor"] == 107 and invoice["total_minor"] == 565 + 107
    assert invoice["rated_events"] == 3 and invoice["rounding_micros"] == -2_000


def test_late_usage_goes_on_the_next_open_cycle_and_keeps_its_service_cycle(reference_dir):
    rows = [_call(0, "491510000001", "2026-01-20T10:00:00+01:00"),      # January: closed
            _call(1, "491510000001", "2026-02-03T10:00:00+01:00")]      # February: open
    rated, lines, summary = _bill(reference_dir, rows, closed_through="2026-01")
    usage = [l for l in lines if l["line_type"] == "USAGE" and l["account_id"] == "ACC_A"]
    assert {(l["service_cycle"], l["billing_cycle"], l["late"]) for l in usage} == {
        ("2026-01", "2026-02", True), ("2026-02", "2026-02", False)}
    assert not [l for l in lines if l["billing_cycle"] == "2026-01"]   # nothing billed on a closed invoice
    fees = [l for l in lines if l["line_type"] == "PLAN_FEE" and l["account_id"] == "ACC_A"]
    assert [f["service_cycle"] for f in fees] == ["2026-02"]          # January's fee was already invoiced
    invoice = next(s for s in summary if s["account_id"] == "ACC_A")
    assert (invoice["billing_cycle"], invoice["rated_events"], invoice["late_events"]) == ("2026-02", 2, 1)
    assert sum(l["amount_micros"] for l in usage) == sum(r["charge_micros"] for r in rated.to_pylist()
                                                          if r["account_id"] == "ACC_A")


def test_billing_period_rejects_bad_cycle_ids():
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        BillingPeriod(billed=("2026-13",))
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        month_index("2026-1")


@pytest.mark.parametrize("zone", ["Africa/Casablanca", "Pacific/Apia", "Australia/Lord_Howe", "America/Sao_Paulo"])
def test_compiled_zone_has_every_offset_change_a_fine_scan_finds(zone):
    """The compiler probes once a day; zones with frequent, skipped-day or half-hour changes agree
    with an independent scan every 3 hours over 2000-2040 (zoneinfo, per instant)."""
    from rating.timezones import compile_zone

    compiled = compile_zone(zone)
    tz = ZoneInfo(zone)
    start, end = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc)
    t = start
    while t < end:
        us = int(t.timestamp()) * 1_000_000
        k = np.searchsorted(compiled.transitions_us, us, side="right") - 1
        assert compiled.offsets_s[k] == int(t.astimezone(tz).utcoffset().total_seconds()), (zone, t)
        t += dt.timedelta(hours=3)
