"""import-cgrates and rate-one: CGRateS's own tariff plans imported, and the costs its tests assert.

The tariff plans and EXAMPLES.md are read from ``../shared/cgrates`` beside the repository (GPL
test data of CGRateS, never copied here); the tests that need them skip, with the reason, where
that folder is absent. A complete CGRateS-format plan of our own (tests/data/cgrates/retail, costs
worked out by hand in OWN_CASES) runs everywhere, as do the small plans written to tmp_path.
"""

from __future__ import annotations

import argparse
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cli import cgrates as cgrates_cli
from pipelines.batch import run_batch
from pipelines.options import BatchConfig
from pipelines.rate_one import breakdown, parse_usage
from rating.cgrates import ImportOptions, convert_tariff_plan
from rating.cgrates.rates import _place_steps
from rating.cgrates.values import parse_duration_ns
from rating.engine import RatingEngine
from rating.reference import load_reference
from tests import store_reads
from tests.usage_rows import instant_us, usage_batch, usage_row

SHARED = Path(__file__).parents[1] / ".." / "shared" / "cgrates"
NO_SHARED = f"{SHARED.resolve()} (CGRateS's own sample plans) is not beside the repository"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=NO_SHARED)
OWN_PLAN = Path(__file__).parent / "data" / "cgrates" / "retail"
PLANS = ("tutorial", "oldtutorial", "tutorial2", "testit", "reratecdrs")
DOC = Path(__file__).parents[1] / "docs" / "cgrates.md"
ANY_TIME = "2014-08-04T13:00:00Z"   # for EXAMPLES.md's "any time after 2014-01-14" (a Monday afternoon)


def _table(text: str, start: str, end: str) -> list[dict]:
    body = text.split(start)[1].split(end)[0] if start else text
    lines = [line for line in body.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def _examples() -> list[dict]:
    """The cases table of EXAMPLES.md, as (plan, subject, category, destination, start, usage,
    service, cost); none where ../shared/cgrates is absent."""
    if not SHARED.is_dir():
        return []
    text = (SHARED / "EXAMPLES.md").read_text()
    rows = _table(text.split("## Cases asserted")[1], "", "")
    cases = []
    for row in rows:
        subject = re.fullmatch(r"(\S+)(?: \(category `(\w+)`\))?", row["subject"])
        start = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["start"])
        cases.append(dict(plan=row["plan"], subject=subject.group(1), category=subject.group(2),
                          destination=row["destination"], start=start.group(0) if start else ANY_TIME,
                          usage=int(row["usage"].split()[0]), service=row["service"],
                          cost=Decimal(row["cost"].split()[0])))
    return cases


EXAMPLES = _examples()
# tests/data/cgrates/retail, each cost worked out by hand (CGRateS arithmetic: per-increment prices
# rounded half-up to 5 decimals, the event rounded up to 4 as DestinationRates.csv says).
OWN_CASES = [
    # Monday 10:00 UTC is PEAK: 0.1 connect + one 60 s block at 0.2 + 25 x 0.00167 = 0.34175 -> 0.3418
    dict(plan="own", subject="4915100001", category=None, destination="4917012345", start="2024-03-04T10:00:00Z",
         usage=85, service="voice", cost=Decimal("0.3418")),
    # Monday 20:00 is OFFPEAK_EVENING: two 60 s blocks at 0.05
    dict(plan="own", subject="4915100001", category=None, destination="4917012345", start="2024-03-04T20:00:00Z",
         usage=61, service="voice", cost=Decimal("0.1")),
    # Saturday: OFFPEAK_WEEKEND, one block
    dict(plan="own", subject="4915100002", category=None, destination="4917012345", start="2024-03-09T10:00:00Z",
         usage=30, service="voice", cost=Decimal("0.05")),
    # fixed line at any time: 30 s increments at 0.03 per 60 s, 47 s -> 60 s
    dict(plan="own", subject="4915100001", category=None, destination="4930123456", start="2024-03-04T10:00:00Z",
         usage=47, service="voice", cost=Decimal("0.03")),
    # UK: 0.5 connect + 90 x 0.015
    dict(plan="own", subject="4915100002", category=None, destination="4420712345", start="2024-03-04T10:00:00Z",
         usage=90, service="voice", cost=Decimal("1.85")),
    # UK for 200 s would be 3.5: MaxCost 2 with *free caps it
    dict(plan="own", subject="4915100001", category=None, destination="4420712345", start="2024-03-04T10:00:00Z",
         usage=200, service="voice", cost=Decimal("2")),
]
IMPORTS = _table(DOC.read_text(), "<!-- imports:start -->", "<!-- imports:end -->")


def cli(argv: list[str]) -> int:
    """Run a command the way usage-rating does once pipelines.cli has added these parsers."""
    parser = argparse.ArgumentParser(prog="usage-rating")
    cgrates_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Our own plan, and each of CGRateS's five where they are beside the repository, imported in
    both arithmetics, through the command, with nothing refused."""
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for arithmetic in ("cgrates", "native"):
        target = root / f"own-{arithmetic}"
        assert cli(["import-cgrates", str(OWN_PLAN), "--out", str(target), "--rounding", arithmetic]) == 0
        out["own", arithmetic] = target
    for plan in PLANS if SHARED.is_dir() else ():
        for arithmetic in ("cgrates", "native"):
            target = root / f"{plan}-{arithmetic}"
            # No --allow-partial: every rule of the five sample plans is expressed (#17).
            assert cli(["import-cgrates", str(SHARED / plan), "--out", str(target), "--rounding", arithmetic]) == 0
            out[plan, arithmetic] = target
    return out


def rate_one_json(capsys, reference: Path, *args: str) -> dict:
    capsys.readouterr()
    assert cli(["rate-one", "--reference", str(reference), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- values and rules, without a pipeline ---------------------------------------------------------

@pytest.mark.parametrize("text, nanos", [("60s", 60 * 10**9), ("1m", 60 * 10**9), ("1m30s", 90 * 10**9),
                                         ("1.5m", 90 * 10**9), ("0s", 0), ("0", 0), ("1024", 1024), ("", 0)])
def test_cgrates_durations(text, nanos):
    assert parse_duration_ns(text) == nanos


def test_a_duration_cgrates_cannot_read_is_refused():
    with pytest.raises(ValueError, match="expected a duration such as 60s"):
        parse_duration_ns("60 seconds")


def test_rate_one_usage():
    assert parse_usage("85s", "voice") == 85
    assert parse_usage("1m25s", "voice") == 85
    assert parse_usage("2048", "data") == 2048
    with pytest.raises(ValueError, match="whole number of messages"):
        parse_usage("1m", "sms")


def test_group_interval_starts_move_to_where_the_previous_increment_ends():
    # 40 s increments up to 60 s: CGRateS rounds that piece to 80 s and shortens the next one.
    steps, moved = _place_steps([(0, "0.12", 60, 40), (60, "0.06", 60, 1)])
    assert [(s.from_units, s.increment_units) for s in steps] == [(0, 40), (80, 1)] and moved
    # A step the overrun swallows whole is never priced.
    steps, moved = _place_steps([(0, "0.1", 60, 60), (10, "0.2", 60, 1), (30, "0.3", 60, 1)])
    assert [(s.from_units, s.price) for s in steps] == [(0, "0.1"), (60, "0.3")] and moved
    steps, moved = _place_steps([(0, "0.2", 60, 60), (60, "0.1", 60, 1)])
    assert [s.from_units for s in steps] == [0, 60] and not moved


# --- the five CGRateS tariff plans ------------------------------------------------------------------

def test_the_doc_lists_every_plan():
    assert [row["plan"] for row in IMPORTS] == list(PLANS)


@needs_shared
@pytest.mark.parametrize("row", IMPORTS, ids=[r["plan"] for r in IMPORTS])
def test_each_plan_imports_as_documented(row, imported):
    for arithmetic in ("cgrates", "native"):
        reference = imported[row["plan"], arithmetic]
        RatingEngine.load(str(reference))   # loads and compiles
        record = json.loads((reference / "cgrates-import.json").read_text())
        assert ", ".join(f"{c}={s}" for c, s in record["categories"].items()) == row["categories"]
        plans = {p: sorted(v["subjects"]) for p, v in record["plans"].items()}
        documented = {m.group(1): sorted(m.group(2).split()) for m in re.finditer(r"(\S+) \(([^)]*)\)",
                                                                                   row["plans (subscribers)"])}
        assert plans == documented
        unsupported = [f["where"] for f in record["report"] if f["severity"] == "unsupported"]
        assert sorted(unsupported) == sorted(w for w in row["unsupported (where)"].split("; ") if w)


def test_a_partial_import_writes_nothing_without_allow_partial(tmp_path, capsys):
    folder = _tariff(tmp_path / "tp", Timings="#Tag,Years,Months,MonthDays,WeekDays,Time\n"
                                              "DAY,*any,*any,*any,*any,08:00:30\n")
    out = tmp_path / "ref"
    assert cli(["import-cgrates", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert "unsupported: Timings.csv:2" in err and "not on a whole minute" in err
    assert "nothing written" in err and "--allow-partial" in err


def test_our_own_plan_imports_whole_and_a_second_import_replaces_the_first(tmp_path, capsys):
    out = tmp_path / "ref"
    assert cli(["import-cgrates", str(OWN_PLAN), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "categories call=voice, 1 plan(s)" in printed and "0 rule(s) cannot be expressed" in printed
    assert (out / "plans" / "RP_RETAIL.yaml").is_file()
    assert cli(["import-cgrates", str(OWN_PLAN), "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="not an earlier import"):
        cli(["import-cgrates", str(OWN_PLAN), "--out", str(tmp_path)])


@needs_shared
def test_a_complete_import_exits_0_and_notes_what_it_left_aside(tmp_path, capsys):
    out = tmp_path / "ref"
    assert cli(["import-cgrates", str(SHARED / "tutorial"), "--out", str(out), "--category", "call",
                "--category", "sms"]) == 0
    printed = capsys.readouterr().out
    assert "note: category mms: not selected" in printed and "note: tenant cgrates.com" in printed
    assert "*disconnect" in printed and "4 plan(s)" in printed
    assert (out / "plans" / "RP_1002+RP_1001.yaml").is_file()
    # Running it again replaces the earlier import; another directory is never overwritten.
    assert cli(["import-cgrates", str(SHARED / "tutorial"), "--out", str(out), "--category", "call"]) == 0
    with pytest.raises(ValueError, match="not an earlier import"):
        cli(["import-cgrates", str(SHARED / "tutorial"), "--out", str(tmp_path), "--category", "call"])


def test_bad_options_are_refused_before_anything_is_read(tmp_path):
    with pytest.raises(ValueError, match="--category generic=no-such!: the usage type must be"):
        cli(["import-cgrates", str(OWN_PLAN), "--out", str(tmp_path / "r"), "--category", "generic=no-such!"])
    with pytest.raises(ValueError, match="--tenant 'nope' has no rating profiles"):
        cli(["import-cgrates", str(OWN_PLAN), "--out", str(tmp_path / "r"), "--tenant", "nope"])
    with pytest.raises(ValueError, match="has no RatingPlans.csv"):
        cli(["import-cgrates", str(tmp_path), "--out", str(tmp_path / "r")])


# --- EXAMPLES.md, to the last decimal ---------------------------------------------------------------

@needs_shared
def test_examples_md_has_every_case():
    assert len(EXAMPLES) == 8 and {e["plan"] for e in EXAMPLES} == {"tutorial", "oldtutorial", "tutorial2"}


@pytest.mark.parametrize("case", OWN_CASES + EXAMPLES,
                         ids=[f"{e['plan']}-{e['destination']}-{e['usage']}" for e in OWN_CASES + EXAMPLES])
def test_examples_through_rate_one(case, imported, capsys):
    args = ["--subject", case["subject"], "--destination", case["destination"], "--start", case["start"],
            "--usage", str(case["usage"])]
    if case["category"]:
        args += ["--category", case["category"]]
    answer = rate_one_json(capsys, imported[case["plan"], "cgrates"], *args)
    assert answer["service"] == case["service"]
    assert Decimal(answer["charge"]) == case["cost"], answer


@pytest.mark.parametrize("plan", ["own", *sorted({e["plan"] for e in EXAMPLES})])
def test_examples_through_the_batch_pipeline(plan, imported, tmp_path):
    cases = {f"e{i}": case for i, case in enumerate(OWN_CASES + EXAMPLES) if case["plan"] == plan}
    lines = []
    for record_id, case in cases.items():
        units = case["usage"]
        lines.append(json.dumps({
            "record_id": record_id, "source": "cgrates-examples", "service": case["service"].upper(),
            "served_msisdn": case["subject"], "other_party": case["destination"], "start_time": case["start"],
            "duration_s": units if case["service"] == "voice" else 0,
            "message_count": units if case["service"] == "sms" else 0}))
    (tmp_path / "cdrs.jsonl").write_text("\n".join(lines) + "\n")
    totals = run_batch(BatchConfig(input_glob=str(tmp_path / "cdrs.jsonl"),
                                   reference_dir=str(imported[plan, "cgrates"]), output_dir=str(tmp_path / "out"),
                                   shards=2), ["--runner=DirectRunner"])
    assert totals["balanced"] and totals["rated"] == len(cases) and totals["rejected_total"] == 0
    rated = store_reads.rows(tmp_path / "out", "rated")
    charged = {r["record_id"]: r["charge_micros"] for r in rated}
    assert charged == {k: int(c["cost"] * 1_000_000) for k, c in cases.items()}


# --- what the rating rules do, shown with rate-one ------------------------------------------------

@needs_shared
def test_native_arithmetic_keeps_the_project_exact_prices(imported, capsys):
    args = ["--subject", "1001", "--destination", "1002", "--start", ANY_TIME, "--usage", "120s"]
    assert rate_one_json(capsys, imported["tutorial", "native"], *args)["charge"] == "0.7"
    assert rate_one_json(capsys, imported["tutorial", "cgrates"], *args)["charge"] == "0.7002"


@needs_shared
def test_the_timing_that_started_last_wins(imported, capsys):
    ref = imported["oldtutorial", "cgrates"]
    bands = {}
    for start in ("2014-08-04T07:59:00Z", "2014-08-04T08:00:00Z", "2014-08-04T19:00:00Z", "2014-08-09T13:00:00Z"):
        answer = rate_one_json(capsys, ref, "--subject", "1001", "--destination", "1002", "--start", start,
                               "--usage", "20s")
        bands[start[5:16]] = (answer["band"], answer["charge"], answer["cgrates"].split(" -> ")[1])
    assert bands == {"08-04T07:59": ("OFFPEAK_MORNING", "0.3", "RT_10CNT, timing OFFPEAK_MORNING, weight 10"),
                     "08-04T08:00": ("PEAK", "0.6", "RT_20CNT, timing PEAK, weight 10"),
                     "08-04T19:00": ("OFFPEAK_EVENING", "0.3", "RT_10CNT, timing OFFPEAK_EVENING, weight 10"),
                     "08-09T13:00": ("OFFPEAK_WEEKEND", "0.3", "RT_10CNT, timing OFFPEAK_WEEKEND, weight 10")}


@needs_shared
def test_a_call_across_a_timing_start_prices_each_increment_in_its_band(imported, capsys):
    # CGRateS: 18:59:30-19:00 rounded up to one 60 s PEAK increment (1.2), the rest shortened to
    # 19:00:30-19:01:30 at OFFPEAK_EVENING per second (60 x 0.01), plus 0.2 connect: 2.0.
    answer = rate_one_json(capsys, imported["tutorial2", "cgrates"], "--subject", "1001", "--destination", "1003",
                           "--start", "2019-03-11T18:59:30Z", "--usage", "120s")
    assert answer["charge"] == "2" and answer["band_split"]
    assert [(p["from"], p["to"], p["band"], p["amount"]) for p in answer["pieces"]] == [
        (0, 60, "PEAK", "1.2"), (60, 120, "OFFPEAK_EVENING", "0.6")]


@needs_shared
def test_fallback_subjects_rate_what_the_subject_plan_does_not(imported, capsys):
    ref = imported["tutorial2", "cgrates"]
    own = rate_one_json(capsys, ref, "--subject", "1001", "--destination", "1002", "--start", "2019-03-11T09:00:00Z",
                        "--usage", "45s")
    fallback = rate_one_json(capsys, ref, "--subject", "1001", "--destination", "1003",
                             "--start", "2019-03-11T09:00:00Z", "--usage", "45s")
    assert own["charge"] == "0.55" and own["cgrates"].startswith("RP_1001: DR_1002_60C")
    assert fallback["charge"] == "1.4" and fallback["cgrates"].startswith("RP_STANDARD: DR_10_120C")


@needs_shared
def test_rate_one_explains_the_charge(imported, capsys):
    capsys.readouterr()
    assert cli(["rate-one", "--reference", str(imported["oldtutorial", "cgrates"]), "--subject", "1001",
                "--destination", "1002", "--start", "2014-08-04T13:00:00Z", "--usage", "85s"]) == 0
    text = capsys.readouterr().out
    for expected in ("charge 0.6418 EUR", "plan RP_RETAIL2 v1, zone DST_1002, band PEAK",
                     "CGRateS: RP_RETAIL2: DR_1002_20CNT (DST_1002) -> RT_20CNT", "connect fee",
                     "0-60 s PEAK step 1: 1 x 60 s at 0.2 per 60 s = 0.2 each",
                     "60-85 s PEAK step 2: 25 x 1 s at 0.1 per 60 s = 0.00167 each",
                     "0.001666666666… per increment, rounded half_up to 5 decimals", "0.64175",
                     "rounding up to 4 decimals", "+0.00005"):
        assert expected in text, text


@needs_shared
def test_max_cost_free_caps_and_the_breakdown_says_so(imported, capsys):
    answer = rate_one_json(capsys, imported["oldtutorial", "cgrates"], "--subject", "1001", "--destination", "1007",
                           "--start", ANY_TIME, "--usage", "70s")
    assert answer["charge"] == "0.62" and answer["total"] == "0.7" and answer["maximum_applied"] == "0.62"


@needs_shared
def test_a_rejected_event_is_an_answer(imported, capsys):
    no_rate = rate_one_json(capsys, imported["oldtutorial", "cgrates"], "--subject", "1001", "--destination", "9999",
                            "--start", ANY_TIME, "--usage", "85s")
    assert no_rate["rejected"] == "NO_RATE" and "charge" not in no_rate
    voicemail = rate_one_json(capsys, imported["tutorial2", "cgrates"], "--subject", "1001",
                              "--destination", "voicemale", "--start", "2019-03-11T09:00:00Z", "--usage", "10s")
    assert voicemail["rejected"] == "INVALID_NUMBER"   # not a number, and no string prefix (voicemail) names it
    capsys.readouterr()
    assert cli(["rate-one", "--reference", str(imported["oldtutorial", "cgrates"]), "--subject", "1001",
                "--destination", "9999", "--start", ANY_TIME, "--usage", "85s"]) == 0
    assert capsys.readouterr().out.startswith("rejected: NO_RATE")


@needs_shared
def test_a_subject_without_subscription_is_rated_by_any_in_rate_one_only(imported, capsys):
    ref = imported["oldtutorial", "cgrates"]
    answer = rate_one_json(capsys, ref, "--subject", "1999", "--destination", "1002", "--start", ANY_TIME,
                           "--usage", "85s")
    # RP_RETAIL1 (the *any profile) has no DST_1002 rate, so the shorter prefix 10 (DST_FS) prices it.
    assert answer["plan"] == "ANY" and answer["charge"] == "1.3" and "*any" in answer["subscriber"]
    assert answer["cgrates"].startswith("RP_RETAIL1: DR_FS_40CNT")
    row = usage_row(0, service="VOICE", served_msisdn="1999", other_party="1002", start_time=ANY_TIME, duration_s=85)
    rated, rejected = RatingEngine.load(str(ref)).rate(usage_batch([row]))
    assert rated.num_rows == 0 and rejected.column("reason").to_pylist() == ["UNKNOWN_SUBSCRIBER"]


# --- tariff plans of our own ----------------------------------------------------------------------

def _tariff(folder: Path, **files: str) -> Path:
    folder.mkdir()
    base = {
        "Timings": "#Tag,Years,Months,MonthDays,WeekDays,Time\nDAY,*any,*any,*any,*any,08:00:00\n",
        "Destinations": "#Id,Prefix\nDST_49,+49\n",
        "Rates": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\nRT_DAY,0,0.12,60s,60s,0s\n"
                 "RT_NIGHT,0,0.02,60s,60s,0s\n",
        "DestinationRates": "#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy\n"
                            "DR_DAY,DST_49,RT_DAY,*middle,4,,\nDR_NIGHT,DST_49,RT_NIGHT,*middle,4,,\n",
        "RatingPlans": "#Id,DestinationRatesId,TimingTag,Weight\nRP_A,DR_DAY,DAY,10\nRP_A,DR_NIGHT,*any,10\n",
        "RatingProfiles": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject\n"
                          "t1,call,4930111,2020-01-01T00:00:00Z,RP_A,\n",
    }
    for name, text in {**base, **files}.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def test_a_dated_timing_becomes_a_holiday_calendar_when_it_can(tmp_path, capsys):
    folder = _tariff(tmp_path / "tp", Timings="#Tag,Years,Months,MonthDays,WeekDays,Time\n"
                                              "DAY,*any,*any,*any,*any,08:00:00\nXMAS,*any,12,25,*any,00:00:00\n",
                     Rates="#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n"
                           "RT_DAY,0,0.12,60s,60s,0s\nRT_NIGHT,0,0.02,60s,60s,0s\nRT_XMAS,0,0.01,60s,60s,0s\n",
                     DestinationRates="#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals\n"
                                      "DR_DAY,DST_49,RT_DAY,*middle,4\nDR_NIGHT,DST_49,RT_NIGHT,*middle,4\n"
                                      "DR_XMAS,DST_49,RT_XMAS,*middle,4\n",
                     RatingPlans="#Id,DestinationRatesId,TimingTag,Weight\nRP_A,DR_DAY,DAY,10\n"
                                 "RP_A,DR_NIGHT,*any,10\nRP_A,DR_XMAS,XMAS,20\n")
    ref = tmp_path / "ref"
    assert cli(["import-cgrates", str(folder), "--out", str(ref)]) == 0
    assert "2024-12-25,CGRateS timing XMAS" in (ref / "calendars" / "XMAS.csv").read_text()
    charges = {day: rate_one_json(capsys, ref, "--subject", "4930111", "--destination", "+4930123",
                                  "--start", f"2024-12-{day}T10:00:00Z", "--usage", "60s")["charge"]
               for day in ("24", "25")}
    assert charges == {"24": "0.12", "25": "0.01"}


def test_a_rate_without_a_first_step_imports_its_gap_as_free_with_a_note(tmp_path, capsys):
    """testit's RT_TEST_1 starts at GroupIntervalStart 60s: CGRateS has no rate before it."""
    folder = _tariff(tmp_path / "tp", Rates="#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n"
                                            "RT_DAY,0.1,0.12,60s,60s,60s\nRT_NIGHT,0,0.02,60s,60s,0s\n")
    ref = tmp_path / "ref"
    assert cli(["import-cgrates", str(folder), "--out", str(ref)]) == 0
    assert "RT_DAY has no row with GroupIntervalStart 0" in capsys.readouterr().out
    charges = [rate_one_json(capsys, ref, "--subject", "4930111", "--destination", "+4930123",
                             "--start", "2024-12-02T10:00:00Z", "--usage", usage)["charge"]
               for usage in ("20s", "60s", "61s", "120s")]
    # The connect fee of the first row stays; the first 60 s are one free increment, then 0.12/min.
    assert charges == ["0.1", "0.1", "0.22", "0.22"]


def test_steps_off_the_increment_grid_are_priced_as_cgrates_does(tmp_path, capsys):
    folder = _tariff(tmp_path / "tp", Rates="#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n"
                                            "RT_DAY,0.05,0.12,60s,40s,0s\nRT_DAY,0,0.06,60s,1s,60s\n"
                                            "RT_NIGHT,0.05,0.12,60s,40s,0s\nRT_NIGHT,0,0.06,60s,1s,60s\n")
    result = convert_tariff_plan(folder)
    assert not result.report.partial   # one step structure in every band: exact
    assert any("moved to 0, 80" in f.message for f in result.report.findings)
    ref = tmp_path / "ref"
    assert cli(["import-cgrates", str(folder), "--out", str(ref)]) == 0
    # [0, 60) rounds up to two 40 s increments (0.08 each); the per-second step starts at 80 s.
    answer = rate_one_json(capsys, ref, "--subject", "4930111", "--destination", "4930123",
                           "--start", "2024-03-04T10:00:00Z", "--usage", "90s")
    assert answer["charge"] == "0.22"
    assert [(p["from"], p["to"], p["increment"]) for p in answer["pieces"]] == [(0, 80, 40), (80, 90, 1)]


def test_what_a_tariff_plan_cannot_say_is_reported(tmp_path):
    folder = _tariff(tmp_path / "tp", Timings="#Tag,Years,Months,MonthDays,WeekDays,Time\n"
                                              "DAY,*any,*any,*any,*any,08:00:30\n",
                     Destinations="#Id,Prefix\nDST_49,+49\nDST_VM,voice mail\nDST_49,49\n",
                     DestinationRates="#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals\n"
                                      "DR_DAY,DST_49,RT_DAY,*middle,4\nDR_NIGHT,DST_49,RT_MISSING,*middle,4\n"
                                      "DR_VM,DST_VM,RT_DAY,*middle,4\n",
                     RatingPlans="#Id,DestinationRatesId,TimingTag,Weight\nRP_A,DR_DAY,DAY,10\nRP_A,DR_NIGHT,*any,5\n"
                                 "RP_A,DR_VM,*any,10\n",
                     RatingProfiles="#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject\n"
                                    "t1,call,4930111,2020-01-01T00:00:00Z,RP_A,\nt1,call,alice,2020-01-01T00:00:00Z,"
                                    "RP_A,\nt1,mms,*any,2020-01-01T00:00:00Z,RP_A,\n")
    report = convert_tariff_plan(folder, ImportOptions()).report
    messages = {f.where: f.message for f in report.findings if f.severity == "unsupported"}
    assert "not on a whole minute" in messages["Timings.csv:2"]
    assert "'voice mail' of DST_VM is neither a number nor a string prefix" in messages["Destinations.csv:3"]
    assert "both with and without '+'" in messages["prefix 49"]
    assert "RT_MISSING" in messages["DestinationRates.csv:3"]
    assert "RatingProfiles.csv:3" not in messages   # subject alice: an account subscription (#17)
    assert "category mms" not in messages   # imported as the usage type MMS (tests/test_types_cgrates.py)


# --- native and cgrates arithmetic ----------------------------------------------------------------

@pytest.fixture(scope="module")
def both_arithmetics(imported):
    engines = {}
    for plan in sorted({plan for plan, _ in imported}):
        reference = load_reference(imported[plan, "cgrates"])
        record = json.loads((imported[plan, "cgrates"] / "cgrates-import.json").read_text())
        prefixes = [p for z in record["zones"].values() for p in z["prefixes"]] or ["1"]
        engines[plan] = (RatingEngine.load(str(imported[plan, "native"])), RatingEngine.from_reference(reference),
                         reference, sorted({s.msisdn for s in reference.subscriptions if s.msisdn}), prefixes)
    return engines


@st.composite
def _events(draw, engines):
    plan = draw(st.sampled_from(sorted(engines)))
    _, _, _, msisdns, prefixes = engines[plan]
    rows = []
    for index in range(draw(st.integers(1, 12))):
        service = draw(st.sampled_from(["VOICE", "VOICE", "SMS", "DATA"]))
        units = draw(st.integers(0, 7200) if service == "VOICE" else st.integers(0, 20) if service == "SMS"
                     else st.integers(0, 10**7))
        destination = draw(st.sampled_from(prefixes)) + draw(st.text("0123456789", max_size=6))
        start = draw(st.integers(instant_us("2014-01-14T00:00:00Z") // 10**6, instant_us("2030-01-01T00:00:00Z")
                                 // 10**6)) * 10**6
        rows.append(usage_row(index, service=service, served_msisdn=draw(st.sampled_from(msisdns)),
                              other_party=None if service == "DATA" else destination, start_time=start,
                              duration_s=units if service == "VOICE" else 0,
                              message_count=units if service == "SMS" else 0,
                              bytes_down=units if service == "DATA" else 0))
    return plan, rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_native_and_cgrates_differ_by_at_most_half_a_5th_decimal_per_increment(data, both_arithmetics):
    plan, rows = data.draw(_events(both_arithmetics))
    native_engine, cgrates_engine, reference, _, _ = both_arithmetics[plan]
    native, native_rejected = native_engine.rate(usage_batch(rows))
    exact, exact_rejected = cgrates_engine.rate(usage_batch(rows))
    assert native_rejected.column("record_id").to_pylist() == exact_rejected.column("record_id").to_pylist()
    by_id = {r["record_id"]: r for r in native.to_pylist()}
    units = {r["record_id"]: r for r in rows}
    for row in exact.to_pylist():
        other = by_id[row["record_id"]]
        source = units[row["record_id"]]
        service = row["service"].lower()
        amount = {"voice": source["duration_s"], "sms": source["message_count"], "data": source["bytes_down"]}[service]
        explained = breakdown(reference, row, service, amount, source["start_time"], {})
        increments = sum(p["increments"] for p in explained["pieces"])
        # Before the final rounding: half a unit of the 5th decimal (5 micros) per increment at most.
        unrounded = (row["charge_micros"] * 1000 - row["rounding_nanos"],
                     other["charge_micros"] * 1000 - other["rounding_nanos"])
        assert abs(unrounded[0] - unrounded[1]) <= increments * 5_000 + 2, (row, other)
        # After it, one more step of the final rounding at most.
        step = 10 ** (6 - explained["rounding"]["decimals"])
        assert abs(row["charge_micros"] - other["charge_micros"]) <= increments * 5 + step
