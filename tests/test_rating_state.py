"""Rating a cycle in several calls with a RatingState equals rating it in one call."""

from __future__ import annotations

import random

import pyarrow as pa

from rating.engine import RatingEngine
from rating.reference import load_reference
from rating.state import RatingState
from tests.usage_rows import instant_us, usage_batch, usage_row


def _events():
    rnd = random.Random(3)
    base = instant_us("2026-01-05T08:00:00+01:00")
    rows = []
    for i in range(300):
        msisdn = rnd.choice(["491510000002", "491510000003", "491510000004", "491510000001"])
        service = "DATA" if msisdn == "491510000004" else "VOICE"
        fields = dict(service=service, served_msisdn=msisdn, start_time=base + i * 3_600_000_000 + rnd.randrange(10**9))
        if service == "VOICE":
            fields.update(duration_s=rnd.randrange(0, 200), other_party=rnd.choice(["015112345678", "030123456"]))
        else:
            fields.update(bytes_down=rnd.randrange(0, 400 * 2**20))
        rows.append(usage_row(i, **fields))
    return rows


def test_rating_in_time_ordered_chunks_with_state_equals_one_call():
    engine = RatingEngine.from_reference(load_reference("tests/data/reference_examples"))
    rows = _events()
    whole, _ = engine.rate(usage_batch(rows))
    state = RatingState()
    parts = [engine.rate(usage_batch(rows[i:i + 37]), state)[0] for i in range(0, len(rows), 37)]
    chunked = pa.Table.from_batches(parts).sort_by([("account_id", "ascending"), ("start_time", "ascending")])
    expected = pa.Table.from_batches([whole]).sort_by([("account_id", "ascending"), ("start_time", "ascending")])
    assert chunked.equals(expected)
    assert sum(expected.column("free_units").to_pylist()) > 0       # allowances were really carried over
    assert any(t > 0 for t in expected.column("tier").to_pylist())  # and tiers
    # Without the state, each chunk would start from full grants: more free units.
    fresh = [engine.rate(usage_batch(rows[i:i + 37]))[0] for i in range(0, len(rows), 37)]
    assert sum(sum(p.column("free_units").to_pylist()) for p in fresh) > sum(expected.column("free_units").to_pylist())
