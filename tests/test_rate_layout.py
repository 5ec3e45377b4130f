"""The fast paths of ``rate()`` against the Arrow and NumPy code they replaced: the string gathers
(``take_strings``) against ``pa.Array.take``, the event-time order kernel against a stable
``pc.sort_indices``, the slot passes against ``np.unique`` and the batch cycle assignment against
``cycle_of`` per row (Hypothesis)."""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_schemas.reasons import Reason
from rating.arrow_utils import take_digit_strings, take_names, take_strings
from rating.cycles import month_label, month_labels
from rating.kernels.enrich import assign_cycles, cycle_of, raw_units
from rating.kernels.order import allowance_groups, event_order, tier_slots
from rating.rate import _sorted_by_arrow, event_time_order
from rating.state import slot_key
from rating.timezones import stack_zones

_TEXT = st.text(alphabet="ab\x00é9", max_size=6)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), _TEXT), min_size=1, max_size=40), data=st.data())
def test_take_strings_is_arrow_take(values, data):
    arr = pa.array(values, pa.string())
    start = data.draw(st.integers(0, len(values) - 1))
    arr = arr.slice(start)   # a slice: offsets and validity start inside the buffers
    rows = np.array(data.draw(st.lists(st.integers(0, len(arr) - 1), max_size=60)), np.int64)
    got = take_strings(arr, rows)
    assert got.type == pa.string()
    assert got.equals(arr.take(pa.array(rows, pa.int64())))
    assert got.null_count == arr.take(pa.array(rows, pa.int64())).null_count


def test_take_strings_long_values_and_bad_rows():
    arr = pa.array(["x" * 300, "", "y" * 70, None], pa.string())
    rows = np.array([2, 0, 0, 3, 1, 2], np.int64)
    assert take_strings(arr, rows).equals(arr.take(pa.array(rows)))
    assert take_strings(arr.cast(pa.large_string()), rows).equals(arr.take(pa.array(rows)))
    with pytest.raises(IndexError, match="rows must be in"):
        take_strings(arr, np.array([4]))
    with pytest.raises(IndexError, match="rows must be in"):
        take_names(("a", "b"), np.array([0, -1]))


def test_take_digit_strings_writes_the_digits_and_nulls():
    digits = np.zeros((4, 16), np.uint8)
    digits[0, :3] = [4, 4, 7]
    digits[2, :15] = np.arange(15) % 10
    lengths = np.array([3, 0, 15, 2])
    present = np.array([True, False, True, True])
    got = take_digit_strings(digits, lengths, present, np.array([2, 1, 0, 3, 0]))
    assert got.to_pylist() == ["012345678901234", None, "447", "00", "447"]


def test_month_labels_narrow_and_wide_spreads():
    narrow = np.array([24311, 24312, 24311, 24300])
    wide = np.array([24311, 12, 24311, 99_000])
    for months in (narrow, wide, np.zeros(0, np.int64)):
        assert month_labels(months).to_pylist() == [month_label(int(m)) for m in months]


@st.composite
def _events(draw):
    n = draw(st.integers(1, 60))
    account = draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n))
    cycle = draw(st.lists(st.sampled_from([-1, 24311, 24312]), min_size=n, max_size=n))
    start = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))   # many ties
    source = draw(st.lists(st.sampled_from(["", "M", "MSC", "MSC-1", "MSB"]), min_size=n, max_size=n))
    record_id = draw(st.lists(st.sampled_from(["", "1", "10", "2", "01"]), min_size=n, max_size=n))
    return (np.array(account, np.int64), np.array(cycle, np.int64), np.array(start, np.int64),
            pa.array(source, pa.string()), pa.array(record_id, pa.string()))


def _batch_and_enrichment(events):
    account, cycle, start, source, record_id = events
    batch = pa.RecordBatch.from_arrays([source, record_id], names=["source", "record_id"])
    return batch, types.SimpleNamespace(account=account, cycle_month=cycle, start_us=start)


@settings(max_examples=300, deadline=None)
@given(events=_events())
def test_event_order_is_a_stable_arrow_sort(events):
    batch, e = _batch_and_enrichment(events)
    expected = _sorted_by_arrow(batch, e)
    assert event_time_order(batch, e).tolist() == expected.tolist()
    # Accounts too spread out for a count array: the merge-sort path gives the same order.
    account, cycle, start, source, record_id = events
    src = [np.frombuffer(a.buffers()[1], np.int32)[: len(a) + 1].astype(np.int64) for a in (source, record_id)]
    data = [np.frombuffer(a.buffers()[2], np.uint8) if a.buffers()[2] is not None and a.buffers()[2].size
            else np.zeros(1, np.uint8) for a in (source, record_id)]
    order, sorted_cycle, sorted_start = (np.empty(len(account), np.int64) for _ in range(3))
    event_order(account * 1000, cycle, start, src[0], data[0], src[1], data[1], 0, order, sorted_cycle, sorted_start)
    assert order.tolist() == expected.tolist()
    assert sorted_cycle.tolist() == cycle[expected].tolist() and sorted_start.tolist() == start[expected].tolist()


def test_null_sources_sort_as_arrow_sorts_them():
    source = pa.array(["B", None, "A", None], pa.string())
    record_id = pa.array(["1", "1", "1", "0"], pa.string())
    zeros = np.zeros(4, np.int64)
    batch, e = _batch_and_enrichment((zeros, zeros, zeros, source, record_id))
    assert event_time_order(batch, e).tolist() == [2, 0, 3, 1]


@settings(max_examples=200, deadline=None)
@given(events=_events(), data=st.data())
def test_slots_number_keys_as_np_unique(events, data):
    batch, e = _batch_and_enrichment(events)
    n = len(e.account)
    order = event_time_order(batch, e)
    # A subscription belongs to one account (subscriptions 3a, 3a+1, 3a+2 of account a); rows
    # without an account or cycle are never ok.
    sub_row = 3 * np.maximum(e.account, 0) + np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    ok = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) & (e.account[order] >= 0) & (
        e.cycle_month[order] >= 0)
    idx = order[ok]

    tier = np.empty(n, np.int64)
    tier_account, tier_cycle = np.empty(n, np.int64), np.empty(n, np.int64)
    count = tier_slots(ok, e.account[order], e.cycle_month[order], tier, tier_account, tier_cycle)
    keys, inverse = np.unique(slot_key(e.account[idx], e.cycle_month[idx]), return_inverse=True)
    assert slot_key(tier_account[:count], tier_cycle[:count]).tolist() == keys.tolist()
    assert tier[ok].tolist() == inverse.reshape(-1).tolist() and (tier[~ok] == -1).all()

    group = np.empty(n, np.int64)
    group_sub, group_cycle, group_first = (np.empty(n, np.int64) for _ in range(3))
    count = allowance_groups(ok, sub_row[order], e.cycle_month[order], 18, group, group_sub, group_cycle, group_first)
    keys, first, inverse = np.unique(slot_key(sub_row[idx], e.cycle_month[idx]), return_index=True,
                                     return_inverse=True)
    group_keys = slot_key(group_sub[:count], group_cycle[:count])
    assert sorted(group_keys.tolist()) == keys.tolist()
    rank = np.searchsorted(keys, group_keys)
    assert rank[group[ok]].tolist() == inverse.reshape(-1).tolist() and (group[~ok] == -1).all()
    assert group_first[:count].tolist() == np.flatnonzero(ok)[first[rank]].tolist()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_assign_cycles_is_cycle_of_per_row(data):
    """The per-timezone offset and local-day memo of ``assign_cycles`` gives ``cycle_of`` of each
    row, in any row order, across DST changes (Santiago's falls at local midnight)."""
    starts, transitions, offsets = stack_zones(["America/Santiago", "Europe/London", "UTC", "Australia/Lord_Howe"])
    edges = [int(t) for t in transitions if 1_700_000_000_000_000 < t < 1_800_000_000_000_000]
    near = st.builds(lambda edge, delta: edge + delta, st.sampled_from(edges),
                     st.integers(-2 * 86_400_000_000, 2 * 86_400_000_000))
    n = data.draw(st.integers(1, 40))
    start_us = np.array(data.draw(st.lists(st.one_of(near, st.integers(0, 2**52)), min_size=n, max_size=n)), np.int64)
    tz = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), np.int64)
    bcd = np.array(data.draw(st.lists(st.integers(1, 28), min_size=n, max_size=n)), np.int64)
    month, start, end = (np.zeros(n, np.int64) for _ in range(3))
    assign_cycles(start_us, tz, bcd, starts, transitions, offsets, month, start, end)
    for i in range(n):
        expected = (-1, 0, 0) if tz[i] < 0 else cycle_of(start_us[i], tz[i], bcd[i], starts, transitions, offsets)
        assert (month[i], start[i], end[i]) == expected


_COUNTER = st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1), st.sampled_from([2**44, 2**44 + 1, 2**62]))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 2), _COUNTER, st.integers(-2**31, 2**31 - 1), _COUNTER, _COUNTER),
                     min_size=1, max_size=30))
def test_raw_units_rules(rows):
    """Voice seconds, SMS messages, data up + down; a negative counter is INVALID_FIELD, one above the
    service's largest event OVERFLOW, and either leaves 0 units (as rate() did with NumPy masks)."""
    service, duration, messages, up, down = (np.array(c, np.int64) for c in zip(*rows))
    max_units = np.array([10**6, 1000, 2**44], np.int64)
    units, reason = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
    raw_units(service, duration, messages, up, down, np.zeros(0, np.int64), np.zeros(0, np.uint8),
              np.array([0, 1, 2], np.int64), max_units, units, reason)
    for i, (s, *counters) in enumerate(rows):
        used = [counters[0]] if s == 0 else [counters[1]] if s == 1 else counters[2:]
        expected_reason = (Reason.INVALID_FIELD if min(used) < 0 else Reason.OVERFLOW if max(used) > max_units[s]
                           else 0)
        assert reason[i] == expected_reason
        assert units[i] == (0 if expected_reason else sum(used))


def test_rated_events_come_by_cycle_then_account_in_event_time_order():
    """The rated batch is grouped by billing cycle (its writer slices one file per cycle), each
    cycle's rows by account and start time, whatever the input order."""
    from rating.engine import RatingEngine
    from rating.reference import load_reference
    from tests.paths import REFERENCE_EXAMPLES
    from tests.usage_rows import instant_us, usage_batch, usage_row

    base = instant_us("2026-01-18T08:00:00+01:00")
    rows = [usage_row(i, service="VOICE", served_msisdn=f"49151000000{1 + i % 4}", other_party="015112345678",
                      start_time=base + ((i * 7919) % 240) * 6 * 3_600_000_000, duration_s=30)
            for i in range(240)]   # every 6 hours over 60 days, in a scrambled order: three cycles
    engine = RatingEngine.from_reference(load_reference(REFERENCE_EXAMPLES))
    rated, rejected = engine.rate(usage_batch(rows))
    assert rated.num_rows == 240 and rejected.num_rows == 0
    cycles = rated.column("service_cycle").to_pylist()
    keys = list(zip(cycles, rated.column("account_id").to_pylist(), rated.column("start_time").to_pylist()))
    assert keys == sorted(keys)
    assert len(set(cycles)) == 3


def test_write_by_cycle_slices_a_grouped_table_and_filters_any_other(tmp_path):
    """A table grouped by cycle and the same rows interleaved give the same file per cycle."""
    import pyarrow.parquet as pq

    from pipelines.outputs import OutputDirs, write_by_cycle

    grouped = pa.table({"cycle": ["2026-02", "2026-02", "2026-01", "2026-03"], "n": [1, 2, 3, 4]})
    mixed = pa.table({"cycle": ["2026-02", "2026-01", "2026-02", "2026-03"], "n": [1, 3, 2, 4]})
    written = []
    for name, table in (("grouped", grouped), ("mixed", mixed)):
        dirs = OutputDirs.under(tmp_path / name, "run")
        write_by_cycle(dirs, "rated", 0, table, "cycle")
        written.append({p.parent.name: pq.read_table(p).column("n").to_pylist()
                        for p in sorted((tmp_path / name / "rated").rglob("*.parquet"))})
    assert written[0] == written[1] == {"cycle=2026-01": [3], "cycle=2026-02": [1, 2], "cycle=2026-03": [4]}
