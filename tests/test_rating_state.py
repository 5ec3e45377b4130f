"""Rating a cycle in several calls with a RatingState equals rating it in one call."""

from __future__ import annotations

import pyarrow as pa

from rating.engine import RatingEngine
from rating.reference import load_reference
from rating.state import RatingState
from tests.paths import REFERENCE_EXAMPLES
from tests.usage_rows import mixed_events, usage_batch


def test_rating_in_time_ordered_chunks_with_state_equals_one_call():
    engine = RatingEngine.from_reference(load_reference(REFERENCE_EXAMPLES))
    rows = mixed_events()
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
