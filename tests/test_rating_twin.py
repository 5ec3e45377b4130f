"""The kernels against their slow twin, on the small reference operator: exact equality."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating.engine import RatingEngine
from tests.rating_oracle import assert_same_as_twin
from tests.usage_rows import instant_us, usage_batch, usage_row

DESTINATIONS = ["015112345678", "030123456", "+441234567", "00331234567", "0900123456", "0012125551234",
                "01x5", "0099912345", "+8613912345678", "0761123", "07700900123", "02079460000", "+4915112345"]
VISITED = [None, None, None, None, "20801", "26201", "99999", "310260"]
# Instants near what makes rating hard: band edges, midnight, DST changes, holidays, cycle edges.
ANCHORS = [instant_us(t) for t in (
    "2026-01-01T00:00:00+01:00", "2026-01-05T07:59:00+01:00", "2026-01-05T19:58:30+01:00",
    "2026-01-09T23:59:00+01:00", "2026-02-28T23:30:00+01:00", "2026-03-29T01:59:00+01:00",
    "2026-03-29T03:00:00+02:00", "2026-03-31T23:59:00+02:00", "2026-04-03T07:59:00+02:00",
    "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-12-24T19:59:00+01:00",
    "2026-01-15T17:59:00+00:00", "2026-06-30T22:59:00+00:00")]


@pytest.fixture(scope="module")
def engine(reference_min):
    engine = RatingEngine.from_reference(reference_min)
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def reference_min(reference_min_dir):
    from rating.reference import load_reference
    return load_reference(reference_min_dir)


def _row_strategy(msisdns):
    @st.composite
    def rows(draw, index):
        service = draw(st.sampled_from(["VOICE", "VOICE", "SMS", "DATA"]))
        start = draw(st.sampled_from(ANCHORS)) + draw(st.integers(-7200, 7200)) * 1_000_000 + draw(
            st.integers(0, 999_999))
        fields = dict(service=service, start_time=start, served_msisdn=draw(st.sampled_from(msisdns)),
                      source=draw(st.sampled_from(["sw1", "sw2"])), visited_network=draw(st.sampled_from(VISITED)))
        if service == "VOICE":
            fields["duration_s"] = draw(st.one_of(st.integers(0, 200), st.integers(0, 20_000),
                                                  st.sampled_from([0, 1, 59, 60, 61, 85, 72 * 3600])))
            fields["other_party"] = draw(st.sampled_from(DESTINATIONS))
        elif service == "SMS":
            fields["message_count"] = draw(st.integers(0, 3))
            fields["other_party"] = draw(st.sampled_from(DESTINATIONS))
        else:
            fields["bytes_up"] = draw(st.integers(0, 3 * 10**9))
            fields["bytes_down"] = draw(st.integers(0, 3 * 10**9))
        return usage_row(index, **fields)
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_kernels_equal_twin_on_random_usage(engine, reference_min, data):
    msisdns = sorted({s.msisdn for s in reference_min.subscriptions}) + ["4915999999999"]
    strategy = _row_strategy(msisdns)
    rows = [data.draw(strategy(i)) for i in range(data.draw(st.integers(1, 25)))]
    assert_same_as_twin(engine, reference_min, rows)


def test_arrival_order_and_batching_do_not_change_charges(engine, reference_min):
    rnd = random.Random(7)
    msisdns = sorted({s.msisdn for s in reference_min.subscriptions})
    rows = []
    for i in range(400):  # many events per account so allowances run out
        start = rnd.choice(ANCHORS) + rnd.randrange(-86400, 86400) * 1_000_000
        rows.append(usage_row(i, service="VOICE", served_msisdn=rnd.choice(msisdns), start_time=start,
                              duration_s=rnd.randrange(0, 4000), other_party=rnd.choice(DESTINATIONS[:2])))
    rated, _ = engine.rate(usage_batch(rows))
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    rated_shuffled, _ = engine.rate(usage_batch(shuffled))
    assert rated_shuffled.equals(rated)
    assert sum(r["free_units"] for r in rated.to_pylist()) > 0  # allowances really were consumed
