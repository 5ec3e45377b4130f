"""Destinations that are not numbers (issue #17, part dest): exact and string-prefix zone rules.

The worked examples of docs/tariffs.md ("Destinations that are not numbers") are read from the page;
the loader's rules and messages are checked on a copy of tests/data/reference_destinations; the
Arrow path is compared with the slow twin on random operators whose zone tables get random string
rules (Hypothesis); and import-cgrates turns CGRateS's non-numeric prefixes (tutorial2's
``voicemail``) into string prefixes that rate-one prices as CGRateS does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdr_schemas.reasons import Reason
from pipelines.cli import cgrates as cgrates_cli
from rating.destinations import zone_by_rules
from rating.engine import RatingEngine
from rating.reference import check_reference, load_reference
from rating.reference.model import ReferenceData
from rating.reference.zone_tables import fold_destination
from tests.rating_oracle import assert_same_as_twin
from tests.tariff_strategies import operators, row_context, usage_row_for, usage_rows, write_reference
from tests.usage_rows import usage_batch, usage_row
from tests.doc_tables import marked_table, rate_examples

REFERENCE = Path(__file__).parent / "data" / "reference_destinations"
VOICEMAIL_PLAN = Path(__file__).parent / "data" / "cgrates" / "voicemail"
SHARED = Path(__file__).parents[1] / ".." / "shared" / "cgrates"
MSISDN = "491510000001"
START = "2026-01-05T10:00:00+01:00"   # a Monday; the plan has one band
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]




def _examples() -> list[dict]:
    return marked_table("examples-dest")


EXAMPLES = _examples()


def _example_row(index: int, example: dict) -> dict:
    units = int(example["units"])
    return usage_row(index, record_id=example["id"], service=example["service"], served_msisdn=MSISDN,
                     start_time=START, other_party=example["other party"], visited_network=example["visited"] or None,
                     duration_s=units if example["service"] == "VOICE" else 0,
                     message_count=units if example["service"] == "SMS" else 0)


@pytest.fixture(scope="module")
def rated_examples():
    rated, rejected, twin = rate_examples(REFERENCE, [_example_row(i, e) for i, e in enumerate(EXAMPLES)])
    return rated, {record_id: r["reason"] for record_id, r in rejected.items()}, twin


def test_the_page_has_the_examples():
    assert len(EXAMPLES) >= 10 and len({e["id"] for e in EXAMPLES}) == len(EXAMPLES)
    assert EXAMPLES[2]["other party"] == " voicemail-box7 "   # the backticks keep the spaces


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_worked_example(example, rated_examples):
    rated, rejected, twin = rated_examples
    if not example["charge"][0].isdigit():   # a reject reason
        assert rejected[example["id"]] == example["charge"], example["working"]
        assert twin[example["id"]]["reason"].name == example["charge"]
        return
    event_ = rated[example["id"]]
    expected = int(Decimal(example["charge"]) * 1_000_000)
    assert event_["charge_micros"] == expected, example["working"]
    assert event_["zone"] == example["zone"]
    assert event_["destination_e164"] == (example["e164"] or None)
    assert event_["other_party"] == example["other party"]   # kept as dialled
    assert twin[example["id"]]["charge_micros"] == expected
    assert twin[example["id"]]["zone"] == example["zone"]


# --- the file format -------------------------------------------------------------------------------

def test_the_zone_table_loads_case_folded_and_sorted():
    table = load_reference(REFERENCE).zone_tables["zones/services.csv"]
    assert table.prefixes == (("49", "NATIONAL"), ("4915", "MOBILE"))
    assert table.string_prefixes == (("sip:", "SIP"), ("sip:support@", "SUPPORT"), ("voicemail", "VOICEMAIL"))
    assert table.exact == (("*100#", "BALANCE"), ("112", "EMERGENCY"), ("info", "SHORT_CODE"))


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    target = tmp_path / "ref"
    shutil.copytree(REFERENCE, target)
    return target


def _only_issue(root: Path):
    issues = check_reference(root)
    assert len(issues) == 1, "expected exactly one issue, got:\n" + "\n".join(map(str, issues))
    return issues[0]


def _append(root: Path, relative: str, text: str) -> int:
    """Append a line; returns its line number."""
    path = root / relative
    content = path.read_text()
    path.write_text(content + text + "\n")
    return content.count("\n") + 1


@pytest.mark.parametrize("row, column, message", [
    ("voicemail,VOICEMAIL,regex", "match", r"expected prefix or exact \(empty: prefix\), got 'regex'"),
    ("VoiceMail,VOICEMAIL,", "prefix", r"duplicate prefix 'VoiceMail' once case is ignored \(first on line 4\)"),
    ("INFO,SHORT_CODE,exact", "prefix", r"duplicate exact value 'INFO' once case is ignored \(first on line 9\)"),
    ("voice mail,VOICEMAIL,", "prefix", r"or a string prefix of letters, digits 0-9 and @ \. _ - \+ : \* #"),
    ("+4917,MOBILE,", "prefix", r"E\.164 prefix without \+.*got '\+4917'.*write its digits only"),
    ("49-17,MOBILE,", "prefix", r"a string prefix needs a letter or one of @ _ : \* #"),
    ("a b,VOICEMAIL,exact", "prefix", r"expected a destination of letters, digits 0-9 and"),
    ("x" * 129 + ",VOICEMAIL,", "prefix", r"at most 128 characters"),
])
def test_a_bad_rule_names_file_line_column_and_the_fix(ref, row, column, message):
    line = _append(ref, "zones/services.csv", row)
    issue = _only_issue(ref)
    assert (issue.file, issue.location) == ("zones/services.csv", f"line {line}, column {column}"), str(issue)
    assert re.search(message, issue.message), str(issue)


def test_an_exact_value_may_also_be_a_prefix_and_digits(ref):
    _append(ref, "zones/services.csv", "112,EMERGENCY,prefix")   # a digit prefix beside the exact 112
    _append(ref, "zones/services.csv", "+4930123,NATIONAL,exact")
    assert check_reference(ref) == []


def test_a_roaming_table_has_no_match_column(ref):
    (ref / "roaming/world.csv").write_text("prefix,zone,match\n20801,ROAM_EU,\n")
    issue = _only_issue(ref)
    assert issue.file == "roaming/world.csv" and issue.location == "line 1"
    assert "unexpected column 'match'; the columns are exactly prefix,zone" in issue.message


def test_zones_only_string_rules_name_are_zones_of_the_table(ref):
    (ref / "zones/services.csv").write_text("prefix,zone\n49,NATIONAL\n4915,MOBILE\nvoicemail,VOICEMAIL\n"
                                            "sip:,SIP\nsip:support@,SUPPORT\n")
    issues = check_reference(ref)
    # Only the rates of zones no rule names any more are reported; VOICEMAIL and SIP are known zones.
    assert {re.search(r"'(\w+)' is not in", i.message).group(1) for i in issues} == {
        "EMERGENCY", "BALANCE", "SHORT_CODE"}, issues


# --- no cost without rules -------------------------------------------------------------------------

def test_a_reference_without_string_rules_skips_them_entirely(reference_min_dir):
    compiled = RatingEngine.from_reference(load_reference(reference_min_dir)).compiled
    assert not compiled.destinations.any
    reason = np.zeros(3, np.int64)
    assert zone_by_rules(pa.array(["a", "b", "c"]), compiled.destinations, np.zeros(3, np.int64),
                         np.ones(3, np.bool_), reason) is None


def test_numbers_are_looked_up_only_where_an_exact_rule_could_be_a_number():
    compiled = RatingEngine.from_reference(load_reference(REFERENCE)).compiled
    rules = compiled.destinations
    assert rules.any and rules.version_number_exact.tolist() == [True]   # "112" can be dialled
    assert sorted(rules.tables[0].exact) == ["*100#", "112", "info"]
    without = dataclasses.replace(load_reference(REFERENCE), zone_tables={
        name: dataclasses.replace(t, exact=tuple(e for e in t.exact if not e[0].isdigit()))
        for name, t in load_reference(REFERENCE).zone_tables.items()})
    rules = RatingEngine.from_reference(without).compiled.destinations
    assert rules.number_keys is None and rules.version_number_exact.tolist() == [False]


def test_many_rows_of_few_values_zone_like_one_row_each():
    reference = load_reference(REFERENCE)
    engine = RatingEngine.from_reference(reference)
    values = ["voicemail", "VOICEMAIL", "sip:bob@x", "nothing", "112", "030123", " Info "]
    rows = [usage_row(i, service="VOICE", served_msisdn=MSISDN, start_time=START, other_party=values[i % 7],
                      duration_s=1 + i % 90) for i in range(700)]
    rated, rejected = engine.rate(usage_batch(rows))
    alone = {}
    for value in values:
        one, _ = engine.rate(usage_batch([usage_row(0, service="VOICE", served_msisdn=MSISDN, start_time=START,
                                                    other_party=value, duration_s=1)]))
        alone[value] = one.column("zone")[0].as_py() if one.num_rows else None
    zones = {r["other_party"]: r["zone"] for r in rated.to_pylist()}
    assert zones == {v: z for v, z in alone.items() if z is not None}
    reasons = {json.loads(r["raw"])["other_party"]: r["reason"] for r in rejected.to_pylist()}
    assert reasons == {"nothing": "INVALID_NUMBER", " Info ": "NO_RATE"}   # SHORT_CODE has an SMS rate only
    assert rejected.num_rows == 200


# --- random operators with string rules against the twin -------------------------------------------

# Rule values as an operator might write them (cases mixed); folded, no two are the same rule.
STRING_PREFIXES = ("voicemail", "VM", "vm_box", "sip:", "SIP:a", "sip:alice@", "apn.", "apn.Internet", "*1", "*10",
                   "#31#", "user@", "Straße", "Ω", "mms.", "tel:+", "x")
EXACT_VALUES = ("voicemail", "*100#", "Info", "sip:alice@example.com", "STRASSE", "112", "+112", "0800", "00112",
                "x", "vm_box_2", "ω")
OTHER_STRINGS = ("hello", "sipx", "s", " ", "+49 151", "01x5", "voice", "٣٣١٢", "\tvm\t", "APN", "mms")


@st.composite
def _with_string_rules(draw, ref: ReferenceData) -> tuple[ReferenceData, dict[str, tuple]]:
    """``ref`` with random exact and string-prefix rules in its zone tables (one table sometimes
    left without); also the rules as written (unfolded), per table, for writing them out."""
    tables, written = {}, {}
    for name, table in sorted(ref.zone_tables.items()):
        if len(ref.zone_tables) > 1 and draw(st.integers(0, 3)) == 0:
            tables[name], written[name] = table, ()
            continue
        zones = sorted({z for _, z in table.prefixes}) + ["SERVICES"]   # SERVICES has no rate of its own
        prefixes = draw(st.lists(st.sampled_from(STRING_PREFIXES), max_size=8, unique_by=fold_destination))
        exact = draw(st.lists(st.sampled_from(EXACT_VALUES), max_size=6, unique_by=fold_destination))
        rules = [(p, draw(st.sampled_from(zones)), "prefix") for p in prefixes]
        rules += [(e, draw(st.sampled_from(zones)), "exact") for e in exact]
        written[name] = tuple(rules)
        tables[name] = dataclasses.replace(
            table, string_prefixes=tuple(sorted((fold_destination(v), z) for v, z, m in rules if m == "prefix")),
            exact=tuple(sorted((fold_destination(v), z) for v, z, m in rules if m == "exact")))
    return dataclasses.replace(ref, zone_tables=tables), written


@st.composite
def _string_destination(draw, written: dict[str, tuple]) -> str:
    """Mostly a rule value of the operator (as written), else any value of the pools; then sometimes
    re-cased, extended, padded with whitespace or cut short."""
    own = sorted({value for rules in written.values() for value, _, _ in rules})
    if own and draw(st.integers(0, 2)) > 0:
        base = draw(st.sampled_from(own))
    else:
        base = draw(st.sampled_from(STRING_PREFIXES + EXACT_VALUES + OTHER_STRINGS))
    kind = draw(st.integers(0, 7))
    if kind == 1:
        base = base.upper()
    elif kind == 2:
        base = base.swapcase()
    elif kind == 3:
        base = base + draw(st.sampled_from(("1", "x", "@host", "_2", ".net", "example.com", "ß")))
    elif kind == 4:
        base = draw(st.sampled_from((" ", "\t", "  "))) + base + draw(st.sampled_from(("", " ")))
    elif kind == 5 and len(base) > 1:
        base = base[:-1]
    return base or "v"


@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_string_destinations_zone_like_the_twin_on_random_tariffs(data):
    ref, written = data.draw(_with_string_rules(data.draw(operators(max_plans=2), label="operator")), label="rules")
    rows = data.draw(usage_rows(ref, min_size=2, max_size=12), label="rows")
    ctx = row_context(ref, random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")))
    for _ in range(data.draw(st.integers(2, 12), label="plain rows")):   # mostly rated: subscribed, at home
        rows.append(data.draw(usage_row_for(ctx, len(rows), plain=True), label="plain row"))
    for row in rows:
        if row["service"] != "DATA" and data.draw(st.integers(0, 2), label="string?") > 0:
            row["other_party"] = data.draw(_string_destination(written), label="destination")
    _, _, twin = assert_same_as_twin(RatingEngine.from_reference(ref), ref, rows)
    for row, result in zip(rows, twin):
        if result["reason"] != Reason.RATED or row["service"] == "DATA":
            event(f"outcome {result['reason'].name}")
        elif result["destination_e164"] is None:
            event("rated: a string destination")
        elif fold_destination(row["other_party"]) in dict(ref.zone_tables[result["version"].zone_table].exact):
            event("rated: a number zoned by an exact rule")
        else:
            event("rated: a number")


@settings(max_examples=10, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_string_rules_written_out_load_back_unchanged(data):
    ref, written = data.draw(_with_string_rules(data.draw(operators(max_plans=1), label="operator")), label="rules")
    with tempfile.TemporaryDirectory() as directory:
        write_reference(ref, Path(directory))
        for name, rules in written.items():   # as written (cases mixed); a prefix rule's match empty or named
            lines = ["prefix,zone,match"] + [f"{p},{z}," for p, z in ref.zone_tables[name].prefixes]
            for value, zone, match in rules:
                if match == "prefix":
                    match = data.draw(st.sampled_from(("", "prefix")), label="match")
                lines.append(f"{value},{zone},{match}")
            (Path(directory) / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        loaded = load_reference(directory)
    assert loaded.zone_tables == ref.zone_tables


# --- CGRateS: non-numeric prefixes ----------------------------------------------------------------

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="usage-rating")
    cgrates_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


# tests/data/cgrates/voicemail, each cost from CGRateS's rules (EXAMPLES.md: the longest prefix of
# the destination as given with a rate in the subject's plan, then its fallback subjects' plans).
VOICEMAIL_CASES = [
    # *any plan RP_STANDARD: DST_VOICEMAIL -> RT_FREE (0 per minute, 60 s increments): 0
    dict(subject="4915100002", destination="voicemail", usage=10, cost=Decimal("0")),
    # the prefixes of voicemail_rec7 from the longest: voicemail_rec (DST_VM_RECORD) has no rate in
    # RP_STANDARD, voicemail (DST_VOICEMAIL) has: RT_FREE, 0
    dict(subject="4915100002", destination="voicemail_rec7", usage=30, cost=Decimal("0")),
    # RP_RECORD prices DST_VM_RECORD: 0.05 connect + 30 x 1 s at 0.1/60 s (0.0016666 -> 0.00167 per
    # increment, 5 decimals half-up) = 0.05 + 0.0501 = 0.1001, rounded up to 4 decimals: 0.1001
    dict(subject="4915100001", destination="voicemail_rec7", usage=30, cost=Decimal("0.1001")),
    # RP_RECORD has no rate for DST_VOICEMAIL: fallback subject *any, RP_STANDARD: RT_FREE, 0
    dict(subject="4915100001", destination="voicemail", usage=10, cost=Decimal("0")),
    # numbers still take their digit prefixes: fallback RP_STANDARD, DST_MOBILE: 0.1 + 2 x 0.2
    dict(subject="4915100001", destination="4917123", usage=61, cost=Decimal("0.5")),
]


@pytest.fixture(scope="module")
def voicemail_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voicemail") / "ref"
    assert _cli(["import-cgrates", str(VOICEMAIL_PLAN), "--out", str(out)]) == 0   # nothing refused
    return out


def test_voicemail_imports_as_string_prefixes(voicemail_reference):
    record = json.loads((voicemail_reference / "cgrates-import.json").read_text())
    assert record["report"] == []
    table = load_reference(voicemail_reference).zone_tables["zones/cgrates.csv"]
    assert table.string_prefixes == (("voicemail", "DST_VOICEMAIL"), ("voicemail_rec", "DST_VM_RECORD"))
    # DST_VM_RECORD's zone carries the chain of both groups: the shorter prefix prices it when the
    # plan has no rate for the longer one.
    assert record["zones"]["DST_VM_RECORD"]["destinations"] == [["DST_VM_RECORD"], ["DST_VOICEMAIL"]]


@pytest.mark.parametrize("case", VOICEMAIL_CASES, ids=[f"{c['subject']}-{c['destination']}" for c in VOICEMAIL_CASES])
def test_voicemail_costs_through_rate_one(case, voicemail_reference, capsys):
    capsys.readouterr()
    assert _cli(["rate-one", "--reference", str(voicemail_reference), "--subject", case["subject"], "--destination",
                 case["destination"], "--start", "2024-03-04T10:00:00Z", "--usage", str(case["usage"]), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert Decimal(answer["charge"]) == case["cost"], answer


def test_voicemail_costs_through_the_engine(voicemail_reference):
    rows = [usage_row(i, service="VOICE", served_msisdn=c["subject"], other_party=c["destination"],
                      start_time="2024-03-04T10:00:00Z", duration_s=c["usage"]) for i, c in enumerate(VOICEMAIL_CASES)]
    rated, rejected = RatingEngine.load(str(voicemail_reference)).rate(usage_batch(rows))
    assert rejected.num_rows == 0
    charged = {r["record_id"]: r["charge_micros"] for r in rated.to_pylist()}
    assert charged == {f"r{i}": int(c["cost"] * 1_000_000) for i, c in enumerate(VOICEMAIL_CASES)}


def test_prefixes_rating_cannot_hold_or_tell_apart_are_reported(tmp_path):
    from rating.cgrates import convert_tariff_plan
    folder = tmp_path / "tp"
    shutil.copytree(VOICEMAIL_PLAN, folder)
    (folder / "Destinations.csv").write_text("#Id,Prefix\nDST_MOBILE,4917\nDST_VOICEMAIL,voicemail\n"
                                             "DST_VOICEMAIL,VoiceMail\nDST_VM_RECORD,voice mail\n")
    messages = {f.where: f.message for f in convert_tariff_plan(folder).report.findings if f.severity == "unsupported"}
    assert "'voice mail' of DST_VM_RECORD is neither a number nor a string prefix" in messages["Destinations.csv:5"]
    assert "listed in several cases (VoiceMail, voicemail)" in messages["prefix voicemail"]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED.resolve()} (CGRateS's own sample plans) is not beside "
                                                 f"the repository")
def test_tutorial2_voicemail_is_rated_as_cgrates_rates_it(tmp_path, capsys):
    out = tmp_path / "ref"
    assert _cli(["import-cgrates", str(SHARED / "tutorial2"), "--out", str(out), "--allow-partial"]) == 0
    record = json.loads((out / "cgrates-import.json").read_text())
    assert not [f for f in record["report"] if f["where"].startswith("Destinations.csv")]
    for subject in ("1001", "1002"):   # 1001's RP_1001 falls back to *any; 1002 is rated by *any
        capsys.readouterr()
        assert _cli(["rate-one", "--reference", str(out), "--subject", subject, "--destination", "voicemail",
                     "--start", "2019-03-11T09:00:00Z", "--usage", "10s", "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        # DR_VOICEMAIL_FREE -> RT_0: 0 per minute in 60 s increments, no connect fee: 0
        assert answer["charge"] == "0" and answer["zone"] == "DST_VOICEMAIL", answer
        assert answer["cgrates"].startswith("RP_STANDARD: DR_VOICEMAIL_FREE")
