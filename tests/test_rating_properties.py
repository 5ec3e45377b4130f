"""The kernels against their twin on random tariffs, and invariants of rated output (Hypothesis).

Each example draws a whole operator (``tests.tariff_strategies.operators``), compiles it and rates
usage rows aimed at its edges (bands, DST, holidays, cycles, steps, tiers, allowances).
"""

from __future__ import annotations

import collections
import random
import tempfile
from pathlib import Path

import dataclasses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_schemas.validate import validate_usage
from rating.engine import RatingEngine
from rating.reference import load_reference
from rating.twin import cycle_twin, prorated_units
from tests.rating_oracle import assert_same_as_twin
from tests.tariff_strategies import (
    increments, operators, row_context, usage_row_for, usage_rows, without_allowances_and_tiers, write_reference)
from tests.usage_rows import usage_batch

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _engine(ref) -> RatingEngine:
    return RatingEngine.from_reference(ref)


def _key(row: dict) -> tuple[str, str]:
    return row["source"], row["record_id"]


def _subscription_at(ref, msisdn: str, t_us: int):
    return next(s for s in ref.subscriptions if s.msisdn == msisdn and s.valid_from_us <= t_us
                and (s.valid_to_us is None or t_us < s.valid_to_us))


def assert_rated_invariants(ref, rated) -> None:
    """Per event: charge >= 0, charged units within one increment above raw, free units covered by
    allowances; per (subscription, cycle, allowance): units used within the prorated grant."""
    versions = {(pid, v.version): v for pid, plan in ref.plans.items() for v in plan.versions}
    used = collections.Counter()
    cycle_instant = {}
    for event in rated.to_pylist():
        service = event["service"].lower()
        version = versions[(event["plan_id"], event["plan_version"])]
        biggest_increment = max(increments(dataclasses.replace(ref, plans={"x": dataclasses.replace(
            ref.plans[event["plan_id"]], versions=(version,))}), service))
        assert event["charge_micros"] >= 0, event
        assert event["raw_units"] <= event["charged_units"] < event["raw_units"] + biggest_increment, event
        assert 0 <= event["free_units"] <= event["charged_units"], event
        assert event["free_units"] == sum(a["units"] for a in event["allowance_units"]), event
        sub = _subscription_at(ref, event["served_msisdn"], event["start_time"])
        for a in event["allowance_units"]:
            used[(sub, event["service_cycle"], a["allowance"])] += a["units"]
            cycle_instant[(sub, event["service_cycle"])] = event["start_time"]
    for (sub, cycle, name), units in used.items():
        account = ref.accounts[sub.account_id]
        label, start, end = cycle_twin(cycle_instant[(sub, cycle)], account.timezone, account.bill_cycle_day)
        assert label == cycle
        granted = max(prorated_units(a.units, sub, start, end, account.timezone)
                      for v in ref.plans[sub.plan_id].versions for a in v.allowances if a.name == name)
        assert units <= granted, (sub, cycle, name, units, granted)


def _valid_batch(rows):
    batch = usage_batch(rows)
    valid, invalid = validate_usage(batch)
    assert invalid.num_rows == 0, invalid.to_pylist()  # the strategies only make rows rate() accepts
    return batch


@settings(max_examples=10, deadline=None, suppress_health_check=_SLOW_OK)
@given(ref=operators())
def test_generated_operators_load_back_unchanged(ref):
    """What the strategies generate is reference data the loader accepts, unchanged."""
    with tempfile.TemporaryDirectory() as directory:
        write_reference(ref, Path(directory))
        loaded = load_reference(directory)
    plans = {}
    for plan_id, plan in ref.plans.items():  # the loader fills an open valid_to with the next version's start
        versions = list(plan.versions)
        for k in range(len(versions) - 1):
            if versions[k].valid_to_us is None:
                versions[k] = dataclasses.replace(versions[k], valid_to_us=versions[k + 1].valid_from_us)
        plans[plan_id] = dataclasses.replace(plan, versions=tuple(versions))
    assert dataclasses.replace(loaded, root=ref.root) == dataclasses.replace(ref, plans=plans)


@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_kernels_equal_twin_on_random_tariffs(data):
    ref = data.draw(operators(), label="operator")
    rows = data.draw(usage_rows(ref, max_size=20), label="rows")
    _valid_batch(rows)
    rated, _, _ = assert_same_as_twin(_engine(ref), ref, rows)
    assert_rated_invariants(ref, rated)


@settings(max_examples=30, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_rated_events_keep_invariants_on_busy_accounts(data):
    """Many events per subscriber, so that allowances and tiers run out (kernels only)."""
    ref = data.draw(operators(max_plans=2), label="operator")
    rows = data.draw(usage_rows(ref, min_size=30, max_size=80), label="rows")
    rated, rejected = _engine(ref).rate(_valid_batch(rows))
    assert rated.num_rows + rejected.num_rows == len(rows)
    assert_rated_invariants(ref, rated)


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_voice_charge_never_decreases_with_duration(data):
    """Without allowances and tiers, a longer call (same start, subscriber, destination) costs no less:
    minimum and maximum charges, band splits and per-event rounding all keep the order."""
    ref = without_allowances_and_tiers(data.draw(operators(), label="operator"))
    ctx = row_context(ref, random.Random(data.draw(st.integers(0, 2**32 - 1))))
    call = data.draw(usage_row_for(ctx, 0, service="VOICE"), label="call")
    edges = sorted({e + d for e in ctx.voice_edges for d in (-1, 0, 1) if e + d >= 0})
    durations = data.draw(st.lists(st.one_of(st.integers(0, 900), st.integers(0, 4 * 3600), st.sampled_from(edges)),
                                   min_size=2, max_size=10, unique=True), label="durations")
    rows = [dict(call, record_id=f"r{i}", input_position=i, duration_s=d) for i, d in enumerate(durations)]
    rated, rejected = _engine(ref).rate(_valid_batch(rows))
    assert rated.num_rows + rejected.num_rows == len(rows)
    events = sorted(rated.to_pylist(), key=lambda e: e["raw_units"])
    for shorter, longer in zip(events, events[1:]):
        assert shorter["charge_micros"] <= longer["charge_micros"], (shorter, longer)
        assert shorter["charged_units"] <= longer["charged_units"], (shorter, longer)


@settings(max_examples=40, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_arrival_order_and_batching_do_not_change_rating(data):
    ref = data.draw(operators(max_plans=2), label="operator")
    rows = data.draw(usage_rows(ref, min_size=2, max_size=40), label="rows")
    engine = _engine(ref)
    rated, rejected = engine.rate(_valid_batch(rows))

    shuffled = data.draw(st.permutations(rows), label="permutation")
    rated_2, rejected_2 = engine.rate(usage_batch(shuffled))
    assert rated_2.equals(rated)
    assert rejected_2.equals(rejected)

    # The same rows as chunks joined in another order, then split per account into separate calls (the
    # pipeline groups by account): every record is rated the same.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=4), label="cuts"))
    chunks = [rows[a:b] for a, b in zip([0] + cuts, cuts + [len(rows)])]
    joined = [row for chunk in reversed(chunks) for row in chunk]
    shards = data.draw(st.integers(1, 4), label="shards")
    by_record, reasons = {}, {}
    for _, part in engine.split_by_account(usage_batch(joined), shards):
        part_rated, part_rejected = engine.rate(part)
        by_record.update({_key(r): r for r in part_rated.to_pylist()})
        reasons.update({_key(r): r["reason"] for r in part_rejected.to_pylist()})
    assert by_record == {_key(r): r for r in rated.to_pylist()}
    assert reasons == {_key(r): r["reason"] for r in rejected.to_pylist()}
