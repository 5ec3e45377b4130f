"""Subscriber identities beyond MSISDNs (issue #17 item 1): subscriptions.csv with a subscriber kind,
usage records naming an IMSI, SIP URI or account code, the kernels against the twin, the worked
examples of docs/tariffs.md ("Subscriber identities") and a store created before the rated events
had a subscriber column."""

from __future__ import annotations

import dataclasses
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating import identity
from rating.engine import RatingEngine
from rating.reference import check_reference, load_reference
from tests.rating_oracle import assert_same_as_twin
from tests.tariff_strategies import operators, usage_rows
from tests.test_reference import assert_issue, edit, only_issue
from tests.usage_rows import usage_batch, usage_row
from tests.doc_tables import marked_table, rate_examples

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference_identity"


# --- keys ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, value, key", [
    ("msisdn", "4915112345678", "4915112345678"),
    ("msisdn", "04915112345678", None),            # no leading 0
    ("msisdn", "+4915112345678", None),
    ("imsi", "262011234567890", "imsi:262011234567890"),
    ("imsi", "26201", None),                       # 6 to 15 digits
    ("sip", "SIP:Alice@PBX.Example.COM", "sip:Alice@pbx.example.com"),
    ("sip", "sip:alice", None),
    ("sip", "tel:+4930123", None),
    ("account", "ACME PBX/01", "account:ACME PBX/01"),
    ("account", "a,b", None),
    ("account", "", None),
    ("other", "x", None),
])
def test_identity_key_and_its_column_form_agree(kind, value, key):
    assert identity.identity_key(kind, value) == key
    assert identity.identity_keys(pa.array([kind]), pa.array([value])).to_pylist() == [key]


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(identity.KINDS + ("other",)),
                                st.one_of(st.text(max_size=12), st.from_regex(r"\A[sS][iI][pP]:\w{1,4}@\w{1,6}\Z"),
                                          st.from_regex(r"\A[0-9]{1,16}\Z"))), max_size=12))
def test_the_column_rule_is_the_one_value_rule(pairs):
    """Arrow's regular expressions (RE2) and Python's give every value the same key, or none."""
    kinds, values = pa.array([k for k, _ in pairs], pa.string()), pa.array([v for _, v in pairs], pa.string())
    assert identity.identity_keys(kinds, values).to_pylist() == [identity.identity_key(k, v) for k, v in pairs]


def test_keys_of_different_kinds_never_collide():
    keys = [identity.identity_key(kind, value) for kind, value in
            [("msisdn", "262011234567"), ("imsi", "262011234567"), ("account", "262011234567"),
             ("account", "imsi:262011234567"), ("account", "sip:a@b"), ("sip", "sip:a@b")]]
    assert len(set(keys)) == len(keys)


def test_msisdn_traffic_is_looked_up_by_its_own_column():
    """No subscriber set: the served_msisdn column itself is the key (no copy, today's lookup)."""
    batch = usage_batch([usage_row(0, service="SMS", served_msisdn="491510000001", other_party="030123",
                                   start_time="2026-01-05T10:00:00+01:00", message_count=1)])
    keys, served = identity.subscriber_keys(batch), batch.column("served_msisdn")
    assert keys.buffers()[2].address == served.buffers()[2].address


# --- subscriptions.csv ------------------------------------------------------------------------------

def test_every_kind_loads_with_normalised_values():
    subs = {(s.kind, s.subscriber): s.account_id for s in load_reference(REFERENCE).subscriptions}
    assert subs == {("msisdn", "491510000001"): "ACC_A", ("imsi", "262011234567890"): "ACC_B",
                    ("sip", "sip:alice@pbx.example.com"): "ACC_C", ("account", "ACME PBX/01"): "ACC_D",
                    ("account", "262011234567890"): "ACC_A"}


def test_the_msisdn_header_still_loads_as_msisdn_subscriptions():
    subs = load_reference(DATA / "reference_examples").subscriptions
    assert {s.kind for s in subs} == {"msisdn"}
    assert [s.msisdn for s in subs] == ["491510000001", "491510000002", "491510000003", "491510000004"]


@pytest.fixture
def ref(tmp_path) -> Path:
    target = tmp_path / "reference"
    shutil.copytree(REFERENCE, target)
    return target


@pytest.mark.parametrize("old, new, location, message", [
    ("262011234567890,imsi,ACC_B", "26201123456789X,imsi,ACC_B", "line 3, column subscriber",
     r"expected an IMSI: 6 to 15 digits, got '26201123456789X' \(subscriber_kind imsi\)"),
    ("SIP:alice@PBX.Example.COM,sip", "alice@PBX.Example.COM,sip", "line 4, column subscriber",
     "expected a SIP URI sip:user@host"),
    ("ACME PBX/01,account", "ACME PBX/01,acount", "line 5, column subscriber_kind",
     "unknown subscriber_kind 'acount'; expected one of msisdn, imsi, sip, account"),
    ("ACME PBX/01,account", '"ACME, PBX",account', "line 5, column subscriber",
     "expected an account code: printable characters, no comma"),
    ("491510000001,msisdn", "0491510000001,msisdn", "line 2, column subscriber",
     "expected an E.164 number"),
])
def test_a_subscriber_invalid_for_its_kind_names_line_column_and_fix(ref, old, new, location, message):
    edit(ref, "subscriptions.csv", old, new)
    assert_issue(only_issue(ref), "subscriptions.csv", location, message)


def test_one_identity_may_not_overlap_itself_but_one_value_under_two_kinds_may(ref):
    assert check_reference(ref) == []   # 262011234567890 is an IMSI and an account code, both open-ended
    with (ref / "subscriptions.csv").open("a") as f:
        f.write("sip:alice@pbx.EXAMPLE.com,sip,ACC_D,EXAMPLE,2026-02-01T00:00:00+01:00,\n")
    assert_issue(only_issue(ref), "subscriptions.csv", "line 7",
                 "subscription of sip:alice@pbx.EXAMPLE.com from 2026-01-31T23:00:00Z overlaps the one on line 4")


# --- rating -----------------------------------------------------------------------------------------

def _examples() -> list[dict]:
    return marked_table("examples-ident")


EXAMPLES = _examples()


def _row(index: int, example: dict) -> dict:
    fields = dict(record_id=example["id"], service=example["service"], start_time=example["start"],
                  served_msisdn=example["served_msisdn"] or None, subscriber=example["subscriber"] or None,
                  subscriber_kind=example["kind"] or None, other_party=example["other party"] or None)
    fields["duration_s" if example["service"] == "VOICE" else "message_count"] = int(example["units"])
    return usage_row(index, **fields)


@pytest.fixture(scope="module")
def rated_examples():
    rated, rejected, twin = rate_examples(REFERENCE, [_row(i, e) for i, e in enumerate(EXAMPLES)])
    return {**rated, **rejected}, twin


def test_the_page_has_the_identity_examples():
    assert {e["kind"] for e in EXAMPLES} == {"", "msisdn", "imsi", "sip", "account"}
    assert len({e["id"] for e in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_identity_example(example, rated_examples):
    kernel, twin = rated_examples
    event, twin_event = kernel[example["id"]], twin[example["id"]]
    if example["charge"] == "UNKNOWN_SUBSCRIBER":
        assert event["reason"] == "UNKNOWN_SUBSCRIBER"
        assert twin_event["reason"].name == "UNKNOWN_SUBSCRIBER"
        return
    expected_micros = int(Decimal(example["charge"]) * 1_000_000)
    assert (event["account_id"], event["charge_micros"]) == (example["account"], expected_micros), example["working"]
    assert (twin_event["account_id"], twin_event["charge_micros"]) == (example["account"], expected_micros)
    # the rated event says who the subscriber is, as the record did
    assert (event["served_msisdn"], event["subscriber"], event["subscriber_kind"]) == (
        example["served_msisdn"] or None, example["subscriber"] or None, example["kind"] or None)


def test_engine_account_rows_follow_identities():
    engine = RatingEngine.load(str(REFERENCE))
    rows = [_row(i, e) for i, e in enumerate(EXAMPLES)]
    accounts = engine.account_rows(usage_batch(rows))
    names = [engine.compiled.account_ids[a] if a >= 0 else "" for a in accounts]
    assert names == [e["account"] for e in EXAMPLES]


# --- kernels against the twin on random identities --------------------------------------------------

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _case_variant(draw, text: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


@st.composite
def _identity_of(draw, index: int) -> tuple[str, str]:
    kind = draw(st.sampled_from(identity.KINDS))
    value = {"msisdn": None, "imsi": f"26201{index:010d}", "sip": f"sip:user{index}@pbx{index}.example",
             "account": f"CODE {index}/x"}[kind]
    return kind, value


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_kernels_equal_twin_on_random_identities(data):
    """The random operators of the tariff strategies with their MSISDN subscriptions re-declared under
    random kinds (and one value declared under two kinds), their rows naming the subscriber by
    subscriber + kind (SIP in random case, sometimes the user part too: unknown), by served_msisdn, or
    both: the kernels find the same subscription as the twin, or reject the same rows."""
    ref = data.draw(operators(), label="operator")
    rows = data.draw(usage_rows(ref, min_size=4, max_size=24), label="rows")
    identities = {}
    for index, msisdn in enumerate(sorted({s.subscriber for s in ref.subscriptions})):
        kind, value = data.draw(_identity_of(index), label=f"identity of {msisdn}")
        identities[msisdn] = (kind, value or msisdn)
    subs = [dataclasses.replace(s, kind=identities[s.subscriber][0], subscriber=identities[s.subscriber][1])
            for s in ref.subscriptions]
    imsis = [v for k, v in identities.values() if k == "imsi"]
    if imsis:   # the same value as an account code, of the first subscription's account and plan
        first = ref.subscriptions[0]
        subs.append(dataclasses.replace(first, kind="account", subscriber=imsis[0]))
    ref = dataclasses.replace(ref, subscriptions=tuple(sorted(subs, key=lambda s: (s.key, s.valid_from_us))))
    out = []
    for row in rows:
        kind, value = identities.get(row["served_msisdn"], ("imsi", "999999" + row["served_msisdn"][:9]))
        how = data.draw(st.sampled_from(("subscriber", "both", "served", "other kind")))
        if kind == "sip" and data.draw(st.booleans()):
            scheme, rest = value.split(":", 1)
            user, host = rest.split("@")
            if data.draw(st.integers(0, 4)) == 0:
                user = user.upper()   # the user part is exact: no longer this subscriber
            value = f"{_case_variant(data.draw, scheme)}:{user}@{_case_variant(data.draw, host)}"
        if how == "served":
            out.append(row)
            continue
        if how == "other kind":
            kind = data.draw(st.sampled_from([k for k in identity.KINDS if k != kind]))
        out.append({**row, "subscriber": value, "subscriber_kind": kind,
                    "served_msisdn": row["served_msisdn"] if how == "both" else None})
    rated, _, twin = assert_same_as_twin(RatingEngine.from_reference(ref), ref, out)
    twin_accounts = {(r["source"], r["record_id"]): t.get("account_id") for r, t in zip(out, twin)}
    for event in rated.to_pylist():
        assert event["account_id"] == twin_accounts[(event["source"], event["record_id"])]


# --- CGRateS subjects that are not MSISDNs ----------------------------------------------------------

CGRATES_PLAN = DATA / "cgrates" / "identity"
SHARED = Path(__file__).parents[1] / ".." / "shared" / "cgrates"
# (subject, destination, start, usage s, cost) on tests/data/cgrates/identity, CGRateS's rules:
CGRATES_CASES = [
    # PARTNER_A, an account code, on RP_WHOLESALE: 0.5 connect + 2 x 30 s at 0.3/60 s (0.15 each)
    # + 25 s -> 3 x 10 s at 0.15/60 s (0.025 each) = 0.875
    ("PARTNER_A", "4930123456", "2024-03-04T10:00:00Z", 85, Decimal("0.875")),
    # pbx.acme-01 on RP_MOBILE: 61 s -> 2 x 60 s at 0.01
    ("pbx.acme-01", "4917012345", "2024-03-04T10:00:00Z", 61, Decimal("0.02")),
    # the MSISDN subject on the same plan
    ("4915100001", "4917012345", "2024-03-04T10:00:00Z", 61, Decimal("0.02")),
    # no profile (and account codes are exact: partner_a is not PARTNER_A): *any, RP_DEFAULT,
    # 85 x 0.03/60 = 85 x 0.0005 = 0.0425
    ("partner_a", "4930123456", "2024-03-04T10:00:00Z", 85, Decimal("0.0425")),
    ("NOBODY", "4930123456", "2024-03-04T10:00:00Z", 85, Decimal("0.0425")),
]


def _cgrates_cli(argv: list[str]) -> int:
    from tests.test_cgrates import cli
    return cli(argv)


@pytest.fixture(scope="module")
def cgrates_reference(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("cgrates") / "ref"
    assert _cgrates_cli(["import-cgrates", str(CGRATES_PLAN), "--out", str(target), "--rounding", "cgrates"]) == 0
    return target


def test_cgrates_subjects_that_are_not_msisdns_become_account_subscriptions(cgrates_reference):
    subs = {(s.kind, s.subscriber) for s in load_reference(cgrates_reference).subscriptions}
    assert subs == {("account", "PARTNER_A"), ("account", "pbx.acme-01"), ("msisdn", "4915100001")}
    header = (cgrates_reference / "subscriptions.csv").read_text().splitlines()[0]
    assert header == "subscriber,subscriber_kind,account_id,plan_id,valid_from,valid_to"


@pytest.mark.parametrize("subject, destination, start, usage, cost", CGRATES_CASES,
                         ids=[c[0] for c in CGRATES_CASES])
def test_rate_one_finds_account_subjects_like_cgrates(subject, destination, start, usage, cost, cgrates_reference,
                                                      capsys):
    from tests.test_cgrates import rate_one_json
    answer = rate_one_json(capsys, cgrates_reference, "--subject", subject, "--destination", destination,
                           "--start", start, "--usage", f"{usage}s")
    assert Decimal(answer["charge"]) == cost, answer


# CGRateS's own sample plans, where ../shared/cgrates is beside the repository: their subjects that are
# not MSISDNs, each cost worked out from the plan's rows by CGRateS's rules (EXAMPLES.md asserts none).
SHARED_CASES = [
    # testit ANY2CNT: RT_2CNT 0.02/60 s per 1 s: 0.000333.. -> 0.00033 (5 decimals, half-up) x 85 = 0.02805
    ("testit", "ANY2CNT", "1002", "2018-06-01T10:00:00Z", 85, Decimal("0.02805")),
    # testit SUPPLIER1: RT_1CNT 0.01/60 s per 1 s: 0.00017 x 85 = 0.01445
    ("testit", "SUPPLIER1", "1002", "2018-06-01T10:00:00Z", 85, Decimal("0.01445")),
    # testit SPECIAL_1002: the same 0.01445, DR_SPECIAL_1002 rounds *up to 4 decimals: 0.0145
    ("testit", "SPECIAL_1002", "1002", "2018-06-01T10:00:00Z", 85, Decimal("0.0145")),
    # testit RP_RETAIL: DST_FS (10) RT_40CNT: 0.8 connect + 2 x 30 s at 0.2 + 3 x 10 s at 0.03333 = 1.29999 -> 1.3
    ("testit", "RP_RETAIL", "1002", "2018-06-01T10:00:00Z", 85, Decimal("1.3")),
    # oldtutorial SPECIAL_1002: RT_1CNT 0.01 per 60 s block: 2 blocks
    ("oldtutorial", "SPECIAL_1002", "1002", "2014-08-04T13:00:00Z", 85, Decimal("0.02")),
    # tutorial2 RPF_SPECIAL_BLC: RT_10C_CN, 0.1 connect and nothing per second
    ("tutorial2", "RPF_SPECIAL_BLC", "1003", "2019-03-11T09:00:00Z", 45, Decimal("0.1")),
    # reratecdrs rs1: RT_ANY 0.6/60 s per second: 85 x 0.01
    ("reratecdrs", "rs1", "1002", "2014-08-04T13:00:00Z", 85, Decimal("0.85")),
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="CGRateS's sample plans are not beside the repository")
@pytest.mark.parametrize("plan, subject, destination, start, usage, cost", SHARED_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in SHARED_CASES])
def test_cgrates_sample_subjects_rate_like_cgrates(plan, subject, destination, start, usage, cost, tmp_path, capsys):
    from tests.test_cgrates import rate_one_json
    target = tmp_path / "ref"
    assert _cgrates_cli(["import-cgrates", str(SHARED / plan), "--out", str(target), "--rounding", "cgrates",
                         "--allow-partial"]) == 0
    record = (target / "cgrates-import.json").read_text()
    assert "is not an MSISDN" not in record
    assert any(s.subscriber == subject and s.kind == "account" for s in load_reference(target).subscriptions)
    answer = rate_one_json(capsys, target, "--subject", subject, "--destination", destination, "--start", start,
                           "--usage", f"{usage}s")
    assert Decimal(answer["charge"]) == cost, answer


# --- a store created before rated events had a subscriber -------------------------------------------

def _old_rated_schema() -> pa.Schema:
    """The rated table's schema before identities: served_msisdn required, no subscriber columns."""
    from cdr_schemas import rated_event_schema
    return pa.schema([f.with_nullable(False) if f.name == "served_msisdn" else f for f in rated_event_schema()
                      if f.name not in ("subscriber", "subscriber_kind")])


def _usage_json(n: int, start: str, **who) -> dict:
    return {"record_id": f"{n:06d}", "source": "MSC-1", "service": "SMS", "other_party": "015112345678",
            "start_time": start, "duration_s": 0, "message_count": 1, **who}


def test_a_store_created_before_identities_takes_their_events(tmp_path, monkeypatch):
    """A store whose rated table has the old schema (and a file written with it) is evolved when opened:
    the next run appends events of IMSI, SIP and account subscribers to the same cycle, rating the old
    events again with them (their files lack the new columns: null), and the totals balance."""
    import rating.rate
    from pipelines.cli import main
    from sinks.iceberg import IcebergStore, tables
    from tests.month_cdrs import write_jsonl
    from tests.paths import DIRECT

    out = tmp_path / "out"
    write_jsonl(tmp_path / "old.jsonl", [_usage_json(1, "2026-01-05T10:00:00Z", served_msisdn="491510000001"),
                                         _usage_json(2, "2026-01-06T10:00:00Z", served_msisdn="491510000001")])
    write_jsonl(tmp_path / "new.jsonl", [
        _usage_json(3, "2026-01-07T10:00:00Z", served_msisdn="491510000001"),
        _usage_json(4, "2026-01-07T11:00:00Z", subscriber="262011234567890", subscriber_kind="imsi"),
        _usage_json(5, "2026-01-07T12:00:00Z", subscriber="sip:alice@pbx.example.com", subscriber_kind="sip"),
        _usage_json(6, "2026-01-07T13:00:00Z", subscriber="ACME PBX/01", subscriber_kind="account")])

    def batch(glob: Path) -> int:
        return main(["batch", "--input", str(glob), "--reference", str(REFERENCE), "--output", str(out),
                     "--shards", "2", *DIRECT])

    with monkeypatch.context() as old_release:
        old_schema = _old_rated_schema()
        old_release.setitem(tables._SCHEMAS, "rated", lambda: old_schema)
        rated_batch = rating.rate._rated_batch
        old_release.setattr(rating.rate, "_rated_batch", lambda *args: rated_batch(*args).select(
            old_schema.names).cast(old_schema))
        assert batch(tmp_path / "old.jsonl") == 0
    store = IcebergStore.open(str(out), create=False)   # opening evolves the table
    fields = {f.name: f for f in store.table("rated").schema().fields}
    assert fields["served_msisdn"].optional and fields["subscriber"].optional and "subscriber_kind" in fields

    assert batch(tmp_path / "new.jsonl") == 0
    rated = {r["record_id"]: r for r in IcebergStore.open(str(out), create=False).read("rated").to_pylist()}
    assert {k: (r["account_id"], r["served_msisdn"], r["subscriber"], r["subscriber_kind"])
            for k, r in rated.items()} == {
        "000001": ("ACC_A", "491510000001", None, None), "000002": ("ACC_A", "491510000001", None, None),
        "000003": ("ACC_A", "491510000001", None, None),
        "000004": ("ACC_B", None, "262011234567890", "imsi"),
        "000005": ("ACC_C", None, "sip:alice@pbx.example.com", "sip"),
        "000006": ("ACC_D", None, "ACME PBX/01", "account")}
    totals = IcebergStore.open(str(out), create=False).runs()[-1].control_totals
    assert totals.get("balanced", True), totals
