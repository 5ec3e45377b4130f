"""Pooled allowances (``pool: account``) and account-level graduated tiers (docs/tariffs.md).

The worked examples are read from the page itself; the kernels are compared with the slow twin on
the page's operator and on random operators with pooled allowances; arrival order, batching,
streaming state and re-rating must not change who gets the pool's units.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rating.billing import BillingPeriod, bill_accounts
from rating.compile import compile_reference
from rating.engine import RatingEngine
from rating.reference import ReferenceDataError, check_reference, load_reference
from rating.state import RatingState
from rating.twin import cycle_twin, pool_grant, rate_rows_twin
from tests.rating_oracle import assert_same_as_twin
from tests.tariff_strategies import operators, usage_rows, us
from tests.usage_rows import usage_batch, usage_row
from tests.doc_tables import marked_table

REFERENCE = Path(__file__).parent / "data" / "reference_pool"
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _examples() -> list[dict]:
    return marked_table("examples-pool")


EXAMPLES = _examples()


def _row(index: int, example: dict, **extra) -> dict:
    fields = dict(record_id=example["id"], service=example["service"], served_msisdn=example["msisdn"],
                  start_time=example["start"], **extra)
    if example["service"] == "VOICE":
        fields.update(duration_s=int(example["units"]), other_party="030123456")
    else:
        fields["bytes_down"] = int(example["units"])
    return usage_row(index, **fields)


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE)


@pytest.fixture(scope="module")
def engine(reference):
    return RatingEngine.from_reference(reference)


def _rated_by_id(rated: pa.RecordBatch) -> dict:
    return {r["record_id"]: r for r in rated.to_pylist()}


@pytest.fixture(scope="module")
def rated_examples(reference, engine):
    # Latest first: the engine must put the account's events back in event-time order itself.
    rows = [_row(i, e) for i, e in enumerate(reversed(EXAMPLES))]
    rated, rejected = engine.rate(usage_batch(rows))
    assert rejected.num_rows == 0, rejected.to_pylist()
    twin = {r["record_id"]: t for r, t in zip(rows, rate_rows_twin(rows, reference))}
    return _rated_by_id(rated), twin


def test_the_page_has_the_pool_examples():
    assert [e["id"] for e in EXAMPLES] == [f"P{k}" for k in range(1, 9)]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_pool_worked_example(example, rated_examples):
    kernel, twin = rated_examples
    event_ = kernel[example["id"]]
    expected_micros = int(Decimal(example["charge"]) * 1_000_000)
    assert event_["charge_micros"] == expected_micros, example["working"]
    assert event_["charged_units"] == int(example["charged units"]), example["working"]
    assert event_["free_units"] == int(example["free units"]), example["working"]
    assert twin[example["id"]]["charge_micros"] == expected_micros   # the twin agrees with the page too
    assert twin[example["id"]]["free_units"] == int(example["free units"])


def test_pooled_units_are_listed_under_the_pool_name_and_tiers_move_one_account_counter(rated_examples):
    kernel, _ = rated_examples
    assert kernel["P6"]["allowance_units"] == [{"allowance": "FAMILY_VOICE", "units": 120}]
    assert kernel["P5"]["allowance_units"] == []
    # P2 is another subscription of the same account: it starts where P1 left the counter.
    assert (kernel["P1"]["tier"], kernel["P2"]["tier"]) == (0, 1)
    assert kernel["P1"]["served_msisdn"] != kernel["P2"]["served_msisdn"]


def test_account_tiers_follow_event_time_across_subscriptions(engine):
    """The same two sessions as P1 and P2 with the members swapped in time: the one that comes first
    takes the first level, whoever it is, and the input order does not matter."""
    first = usage_row(0, record_id="solo", service="DATA", served_msisdn="491510000014",
                      start_time="2026-01-22T09:00:00+01:00", bytes_down=600_000)
    second = usage_row(1, record_id="owner", service="DATA", served_msisdn="491510000011",
                       start_time="2026-01-22T09:30:00+01:00", bytes_down=600_000)
    for rows in ([first, second], [second, first]):
        rated = _rated_by_id(engine.rate(usage_batch(rows))[0])
        assert (rated["solo"]["charge_micros"], rated["solo"]["tier"]) == (600_000, 0)
        assert (rated["owner"]["charge_micros"], rated["owner"]["tier"]) == (500_000, 1)


def test_the_pool_grant_sums_the_members_prorated_grants(reference, engine):
    label, start, end = cycle_twin(us_of("2026-01-20T10:00:00+01:00"), "Europe/Berlin", 1)
    assert label == "2026-01"
    assert pool_grant(reference, "FAM1", "FAMILY_VOICE", start, end, "Europe/Berlin") == 300 + 300 * 15 // 31
    assert pool_grant(reference, "FAM2", "FAMILY_VOICE", start, end, "Europe/Berlin") == 300


def us_of(text: str) -> int:
    return usage_row(0, start_time=text)["start_time"]


def test_a_member_takes_the_pool_first_by_event_time_then_source(engine):
    """Two members call at the same instant for more than the pool holds: the (source, record_id)
    order decides who is free, whatever the input order."""
    start = "2026-01-21T10:00:00+01:00"
    rows = [usage_row(0, record_id="x", source="sw2", service="VOICE", served_msisdn="491510000011",
                      start_time=start, duration_s=300, other_party="030123456"),
            usage_row(1, record_id="y", source="sw1", service="VOICE", served_msisdn="491510000013",
                      start_time=start, duration_s=300, other_party="030123456")]
    for ordered in (rows, rows[::-1]):
        rated = _rated_by_id(engine.rate(usage_batch(ordered))[0])
        # The pool (445 s) covers sw1's 300 s call in full; sw2's call gets 2 of its 5 minutes.
        assert rated["y"]["free_units"] == 300
        assert rated["x"]["free_units"] == 120


def test_an_overflowing_call_gives_the_pool_back_to_the_pool(tmp_path):
    """A call that draws from the pool and then overflows is rejected OVERFLOW and returns what it took
    to the account's pool (not to the caller's own allowance row): the member's later call is free."""
    reference = tmp_path / "reference"
    shutil.copytree(REFERENCE, reference)
    family = reference / "plans" / "FAMILY.yaml"
    family.write_text(family.read_text().replace('price: "0.06", per: 60', 'price: "2000000000", per: 60', 1))
    rows = [usage_row(0, record_id="huge", service="VOICE", served_msisdn="491510000011",
                      start_time="2026-01-21T10:00:00+01:00", duration_s=72 * 3600, other_party="030123456"),
            usage_row(1, record_id="member", service="VOICE", served_msisdn="491510000013",
                      start_time="2026-01-22T10:00:00+01:00", duration_s=420, other_party="030123456")]
    loaded = load_reference(reference)
    rated, rejected = RatingEngine.from_reference(loaded).rate(usage_batch(rows))
    # 7 increments (420 s of the 445 s pool) free, then 4,313 x 2e15 micros >= 2^62: OVERFLOW.
    assert rejected.column("reason").to_pylist() == ["OVERFLOW"]
    (member,) = rated.to_pylist()
    assert (member["free_units"], member["charge_micros"]) == (420, 0)
    twin = {r["record_id"]: t for r, t in zip(rows, rate_rows_twin(rows, loaded))}
    assert twin["member"]["free_units"] == 420


def test_arrival_order_batching_and_streaming_state_do_not_change_the_pool(engine):
    rows = [_row(i, e) for i, e in enumerate(EXAMPLES)]
    whole = _rated_by_id(engine.rate(usage_batch(rows))[0])
    state = RatingState()
    streamed = {}
    for part in (rows[:4], rows[4:]):   # two micro-batches, in order: the pool's balance is carried
        streamed.update(_rated_by_id(engine.rate(usage_batch(part), state)[0]))
    assert {k: (v["charge_micros"], v["free_units"]) for k, v in streamed.items()} == \
        {k: (v["charge_micros"], v["free_units"]) for k, v in whole.items()}
    fam1 = engine.compiled.account_row["FAM1"]
    assert len(state.pools) == 2 and any(k // 100_000 == fam1 for k in state.pools)
    pool_name = engine.compiled.allowance_names.index("FAMILY_VOICE")
    left = {k // 100_000: int(v[pool_name]) for k, v in state.pools.items()}
    assert left[fam1] == 445 - 120 - 180 - 120   # P3, P4, P6


def test_a_state_pickled_before_pools_still_loads():
    old = RatingState(allowances={1: np.zeros(1, np.int64)})
    old.__dict__.pop("pools")
    restored = pickle.loads(pickle.dumps(old))
    assert restored.pools == {} and list(restored.allowances) == [1]


def test_the_stream_rerates_an_out_of_order_member_call_and_moves_the_pool(engine):
    from rating.stream_rater import ShardState

    rows = [_row(i, e) for i, e in enumerate(EXAMPLES)]
    shard = ShardState()
    later = [r for r in rows if r["record_id"] != "P3"]
    shard.add(engine, usage_batch(later))
    result = shard.add(engine, usage_batch([r for r in rows if r["record_id"] == "P3"]))   # an earlier call
    latest = {r["record_id"]: r for r in result.rated.to_pylist()}
    # Without P3, P6 had 240 s free; P3 takes 120 s before it, so P6 is corrected to 120 s free.
    # P4 (between them) keeps its rating and is not emitted again.
    assert (latest["P3"]["free_units"], latest["P3"]["revision"]) == (120, 0)
    assert (latest["P6"]["free_units"], latest["P6"]["revision"]) == (120, 1)
    assert "P4" not in latest and result.corrections == 1
    whole = _rated_by_id(engine.rate(usage_batch(rows))[0])
    final = {r["record_id"]: r for r in shard.emitted.to_pylist()}
    assert {k: (v["charge_micros"], v["free_units"]) for k, v in final.items()} == \
        {k: (v["charge_micros"], v["free_units"]) for k, v in whole.items()}


def test_the_invoice_allowance_line_shows_the_pool(engine):
    rows = [_row(i, e) for i, e in enumerate(EXAMPLES)]
    rated, _ = engine.rate(usage_batch(rows))
    accounts = np.array([engine.compiled.account_row["FAM1"], engine.compiled.account_row["FAM2"]])
    lines, _ = bill_accounts(engine.compiled, accounts, pa.Table.from_batches([rated]), BillingPeriod(("2026-01",)))
    pools = {(r["account_id"], r["item"]): (r["granted_units"], r["free_units"], r["left_units"])
             for r in lines.to_pylist() if r["line_type"] == "ALLOWANCE"}
    assert pools == {("FAM1", "FAMILY_VOICE"): (445, 420, 25), ("FAM2", "FAMILY_VOICE"): (300, 60, 240)}


# --- loader and compiler ------------------------------------------------------------------------

def _copy_reference(tmp_path: Path) -> Path:
    target = tmp_path / "ref"
    shutil.copytree(REFERENCE, target)
    return target


def test_loader_refuses_a_name_pooled_in_one_plan_and_per_subscription_in_another(tmp_path):
    root = _copy_reference(tmp_path)
    solo = root / "plans" / "SOLO.yaml"
    solo.write_text(solo.read_text().replace(
        "    recurring_fees:",
        "    allowances:\n      - {name: FAMILY_VOICE, service: voice, zones: [\"*\"], units: 60, order: 1}\n"
        "    recurring_fees:"))
    issues = [str(i) for i in check_reference(root)]
    assert issues == [
        "plans/SOLO.yaml: versions[0].allowances[0].pool: allowance 'FAMILY_VOICE' has pool: subscription here "
        "but pool: account in plans/FAMILY.yaml versions[0].allowances[0].pool; one allowance name is one "
        "balance, owned by the account (pool: account) or by each subscription (pool: subscription, the default) "
        "everywhere: give both the same pool or rename one"]


def test_loader_checks_pool_values_and_allows_zero_units_only_in_a_pool(tmp_path):
    root = _copy_reference(tmp_path)
    member = root / "plans" / "FAMILY_MEMBER.yaml"
    member.write_text(member.read_text().replace("pool: account", "pool: family"))
    issues = [str(i) for i in check_reference(root)]
    assert issues[0] == "plans/FAMILY_MEMBER.yaml: line 33, versions[0].allowances[0].pool: expected one of " \
                        "subscription, account, got the string 'family'"
    member.write_text(member.read_text().replace(", pool: family", ""))
    with pytest.raises(ReferenceDataError, match=r"FAMILY_MEMBER.yaml: line 33, versions\[0\].allowances\[0\]"
                                                 r".units: expected an integer >= 1 for a subscription's own "
                                                 r"allowance, got 0; only a pooled one \(pool: account\)"):
        load_reference(root)


def test_compile_refuses_a_mixed_pool_built_in_code(reference):
    solo = reference.plans["SOLO"]
    family_voice = reference.plans["FAMILY"].versions[0].allowances[0]
    mixed = dataclasses.replace(solo, versions=(dataclasses.replace(
        solo.versions[0], allowances=(dataclasses.replace(family_voice, pool="subscription"),)),))
    with pytest.raises(ValueError, match="allowance FAMILY_VOICE has pool"):
        compile_reference(dataclasses.replace(reference, plans={**reference.plans, "SOLO": mixed}))


# --- differential: kernels against the twin on random operators with pools --------------------

@settings(max_examples=5, deadline=None, suppress_health_check=_SLOW_OK)
@given(ref=operators(pools=True))
def test_generated_operators_with_pools_load_back_with_their_pools(ref, tmp_path_factory):
    from tests.tariff_strategies import write_reference

    directory = tmp_path_factory.mktemp("pools")
    write_reference(ref, directory)
    loaded = load_reference(directory)
    listed = lambda r: sorted((p, v.version, a.name, a.pool, a.units) for p, plan in r.plans.items()  # noqa: E731
                              for v in plan.versions for a in v.allowances)
    assert listed(loaded) == listed(ref)


def assert_pool_invariants(ref, rated) -> None:
    """Per (account, cycle, pooled name): units used within the pool's grant (docs/tariffs.md)."""
    pooled = {a.name for p in ref.plans.values() for v in p.versions for a in v.allowances if a.pooled}
    used = collections.Counter()
    instant = {}
    for e in rated.to_pylist():
        for a in e["allowance_units"]:
            if a["allowance"] in pooled:
                key = (e["account_id"], e["service_cycle"], a["allowance"])
                used[key] += a["units"]
                instant[key] = us(e["start_time"])
    for (account_id, cycle, name), units in used.items():
        account = ref.accounts[account_id]
        label, start, end = cycle_twin(instant[(account_id, cycle, name)], account.timezone, account.bill_cycle_day)
        assert label == cycle
        assert units <= pool_grant(ref, account_id, name, start, end, account.timezone), (account_id, cycle, name)


@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_kernels_equal_twin_with_pooled_allowances(data):
    ref = data.draw(operators(pools=True), label="operator")
    rows = data.draw(usage_rows(ref, min_size=4, max_size=30), label="rows")
    rated, _, twin = assert_same_as_twin(RatingEngine.from_reference(ref), ref, rows)
    assert_pool_invariants(ref, rated)
    pooled = {a.name for p in ref.plans.values() for v in p.versions for a in v.allowances if a.pooled}
    drawn = collections.defaultdict(set)
    for row in twin:
        for name, _ in row.get("allowance_units", ()):
            if name in pooled:
                drawn[(row["account_id"], row["cycle"], name)].add(row["sub"])
    if drawn:
        event("a pool was drawn from")
    if any(len(subs) > 1 for subs in drawn.values()):
        event("two subscriptions drew from one pool")


@settings(max_examples=25, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_pools_do_not_depend_on_arrival_order_or_batching(data):
    ref = data.draw(operators(pools=True, max_plans=2), label="operator")
    rows = data.draw(usage_rows(ref, min_size=10, max_size=40), label="rows")
    engine = RatingEngine.from_reference(ref)
    whole = _rated_by_id(engine.rate(usage_batch(rows))[0])
    shuffled = data.draw(st.permutations(rows), label="arrival order")
    assert _rated_by_id(engine.rate(usage_batch(shuffled))[0]) == whole


# --- the pipelines: all of an account's events in one rating call, across runs and re-rates -----

def _jsonl(example: dict) -> dict:
    row = {"record_id": example["id"], "source": "sw1", "service": example["service"],
           "served_msisdn": example["msisdn"], "start_time": example["start"], "duration_s": 0}
    if example["service"] == "VOICE":
        row.update(duration_s=int(example["units"]), other_party="030123456")
    else:
        row["bytes_down"] = int(example["units"])
    return row


def test_batch_runs_and_rerate_consume_the_pool_in_event_time_across_shards_and_runs(tmp_path, engine):
    """Run 1 rates every example but P3; run 2 brings P3 (earlier than P4 and P6) late: the store's
    cycle is rated again with it, so the account's pool ends as if all had come at once; a rerate of
    the cycle gives the same."""
    from pipelines.batch import run_batch
    from pipelines.options import BatchConfig
    from pipelines.rerate import RerateConfig, run_rerate
    from tests import store_reads
    from tests.month_cdrs import write_jsonl
    from tests.paths import DIRECT

    cdrs, out = tmp_path / "cdrs", tmp_path / "store"
    write_jsonl(cdrs / "a.jsonl", [_jsonl(e) for e in EXAMPLES if e["id"] != "P3"])
    run_batch(BatchConfig(input_glob=str(cdrs / "a.jsonl"), reference_dir=str(REFERENCE), output_dir=str(out),
                          shards=3), DIRECT)
    first = {r["record_id"]: r["free_units"] for r in store_reads.rows(out, "rated")}
    assert first["P6"] == 240   # before P3 arrived, P6 found 265 s in the pool
    write_jsonl(cdrs / "b.jsonl", [_jsonl(e) for e in EXAMPLES if e["id"] == "P3"])
    run_batch(BatchConfig(input_glob=str(cdrs / "b.jsonl"), reference_dir=str(REFERENCE), output_dir=str(out),
                          shards=3), DIRECT)
    expected = {e["id"]: (int(Decimal(e["charge"]) * 1_000_000), int(e["free units"])) for e in EXAMPLES}

    def rated_now():
        return {r["record_id"]: (r["charge_micros"], r["free_units"]) for r in store_reads.rows(out, "rated")}

    def pool_line():
        return {r["account_id"]: (r["granted_units"], r["free_units"]) for r in store_reads.rows(out, "charges")
                if r["line_type"] == "ALLOWANCE" and r["item"] == "FAMILY_VOICE"}

    assert rated_now() == expected
    assert pool_line() == {"FAM1": (445, 420), "FAM2": (300, 60)}
    run_rerate(RerateConfig(cycle="2026-01", input_glob=str(cdrs / "*"), reference_dir=str(REFERENCE),
                            output_dir=str(out), shards=3), DIRECT)
    assert rated_now() == expected
    assert pool_line() == {"FAM1": (445, 420), "FAM2": (300, 60)}
