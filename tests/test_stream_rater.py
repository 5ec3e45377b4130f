"""Streaming rating state: whatever the arrival order, the latest revisions equal batch rating."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from rating.engine import RatingEngine
from rating.reference import load_reference
from rating.stream_rater import ShardState
from tests.usage_rows import mixed_events
from tests.usage_rows import usage_batch
from tests.paths import REFERENCE_EXAMPLES

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
        result = state.add(engine, usage_batch(rows[i:i + 23]))
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
    outputs = [state.add(engine, usage_batch(rows[i:i + 50])) for i in range(0, len(rows), 50)]
    assert sum(r.corrections for r in outputs) == 0
    assert sum(r.rated.num_rows + r.rejected.num_rows for r in outputs) == len(rows)
    assert sum(r.rejected.num_rows for r in outputs) > 0  # 491510000003 is subscribed only from 17 Jan


def test_a_state_seeded_from_stored_events_goes_on_as_one_rating_of_everything(engine):
    """What a restarted stream does: the events the store holds seed a fresh state (balances rebuilt
    by rating them again); later records, in order or not, then rate as one batch over all would."""
    from pipelines.prior import usage_rows

    rows = mixed_events()
    expected, _ = engine.rate(usage_batch(rows))
    stored, _ = engine.rate(usage_batch(rows[:150]))          # what an earlier run committed
    stored = pa.Table.from_batches([stored])
    state = ShardState()
    state.seed(engine, stored, usage_rows(stored))
    rest = rows[150:]
    random.Random(4).shuffle(rest)
    outputs = [stored] + [state.add(engine, usage_batch(rest[i:i + 30])).rated for i in range(0, len(rest), 30)]
    latest = _latest(outputs).select(COLUMNS).sort(["source", "record_id"])
    assert latest.equals(pl.from_arrow(expected).select(COLUMNS).sort(["source", "record_id"]))
    late = usage_batch([dict(rows[10], record_id="early", start_time=rows[0]["start_time"] - 1)])
    assert state.add(engine, late).corrections > 0             # a record before stored ones corrects them
