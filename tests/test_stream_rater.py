"""Streaming rating state: whatever the arrival order, the latest revisions equal batch rating."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from rating.engine import RatingEngine
from rating.reference import load_reference
from rating.stream_dedup import SeenKeys
from rating.stream_rater import ShardState
from tests.usage_rows import mixed_events
from tests.usage_rows import instant_us, usage_batch
from tests.paths import REFERENCE_EXAMPLES

DAY_US = 86_400 * 1_000_000
NOW = instant_us("2026-01-20T00:00:00Z")


@pytest.fixture(scope="module")
def engine():
    return RatingEngine.from_reference(load_reference(REFERENCE_EXAMPLES))


def _latest(tables: list[pa.Table]) -> pl.DataFrame:
    frame = pl.concat([pl.from_arrow(t) for t in tables if t.num_rows])
    return frame.sort("revision").group_by(["source", "record_id"]).last()


COLUMNS = ["source", "record_id", "charge_micros", "charged_units", "free_units", "tier", "band", "zone"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_arrival_converges_to_the_batch_rating(engine, seed):
    rows = mixed_events()
    expected, _ = engine.rate(usage_batch(rows))
    rnd = random.Random(seed)
    rnd.shuffle(rows)
    state = ShardState()
    outputs, corrections = [], 0
    for i in range(0, len(rows), 23):
        result = state.add(engine, usage_batch(rows[i:i + 23]), NOW, 10 * DAY_US)
        outputs.append(result.rated)
        corrections += result.corrections
    latest = _latest(outputs).select(COLUMNS).sort(["source", "record_id"])
    batch = pl.from_arrow(expected).select(COLUMNS).sort(["source", "record_id"])
    assert latest.equals(batch)
    assert corrections > 0  # the shuffle really made allowances move between records
    totals = {}
    for (account, _), entry in state.totals.items():
        totals[account] = totals.get(account, 0) + entry["charge_micros"]
    by_account = pl.from_arrow(expected).group_by("account_id").agg(pl.col("charge_micros").sum())
    assert totals == dict(by_account.iter_rows())  # running totals follow the corrections


def test_in_order_arrival_emits_each_record_once(engine):
    rows = mixed_events()
    state = ShardState()
    outputs = [state.add(engine, usage_batch(rows[i:i + 50]), NOW, 10 * DAY_US) for i in range(0, len(rows), 50)]
    assert sum(r.corrections for r in outputs) == 0
    assert sum(r.rated.num_rows + r.rejected.num_rows for r in outputs) == len(rows)
    assert sum(r.rejected.num_rows for r in outputs) > 0  # 491510000003 is subscribed only from 17 Jan


def test_late_records_beyond_the_lateness_are_rated_and_billed_on_the_next_cycle(engine):
    rows = [r for r in mixed_events()[:60] if r["served_msisdn"] != "491510000003"]  # January usage, all rateable
    state = ShardState()
    late_arrival = instant_us("2026-03-15T00:00:00Z")  # January closed + 10 days long before
    result = state.add(engine, usage_batch(rows), late_arrival, 10 * DAY_US)
    assert result.late_records == len(rows)
    assert result.rated.num_rows == len(rows)
    assert {key[1] for key in result.totals} == {"2026-02"}
    assert sum(e["late_events"] for e in result.totals.values()) == len(rows)
    assert state.stored is None or state.stored.num_rows == 0  # nothing kept for a closed cycle


def test_expiry_forgets_closed_cycles(engine):
    rows = [r for r in mixed_events()[:60] if r["served_msisdn"] != "491510000003"]
    state = ShardState()
    state.add(engine, usage_batch(rows), NOW, DAY_US)
    assert state.stored.num_rows == len(rows)
    assert state.expire(instant_us("2026-02-01T00:00:00Z"), DAY_US) == 0
    assert state.expire(instant_us("2026-02-03T00:00:00Z"), DAY_US) == len(rows)
    assert state.next_expiry_us(DAY_US) is None


def test_seen_keys_drop_redeliveries_and_resends():
    rows = mixed_events()[:30]
    seen = SeenKeys()
    first, dups = seen.filter(usage_batch(rows + rows[:5]), 0)
    assert first.num_rows == 30 and dups.num_rows == 5 and all(dups.column("identical").to_pylist())
    again, dups = seen.filter(usage_batch(rows[10:20]), 0)
    assert again.num_rows == 0 and dups.num_rows == 10
    changed = dict(rows[0], duration_s=rows[0]["duration_s"] + 1)
    _, dups = seen.filter(usage_batch([changed]), 0)
    assert dups.column("identical").to_pylist() == [False]
    assert seen.expire(instant_us("2030-01-01T00:00:00Z")) == 30 and len(seen) == 0
