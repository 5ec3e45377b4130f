"""Holiday band rules restricted to weekdays and zones (issue #17, item 5).

The worked examples of docs/tariffs.md ("Holidays by weekday and zone") read from the page; the
loader's checks of ``days`` and ``zones`` on band rules; the kernels against their twin on random
tariffs rich in such rules; and the CGRateS import of a dated timing that reprices some zones and
weekdays only (tutorial2's NEW_YEAR, and a plan of our own shaped like it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cli import cgrates as cgrates_cli
from rating.cgrates import ImportOptions, convert_tariff_plan
from rating.compile import compile_reference
from rating.engine import RatingEngine
from rating.reference import check_reference, load_reference
from rating.reference.model import ANY, BandRule
from tests.rating_oracle import assert_same_as_twin
from tests.tariff_strategies import HOME, _calendar, _minute_range, operators, usage_rows
from tests.usage_rows import usage_row
from tests.doc_tables import marked_table, rate_examples

ROOT = Path(__file__).parents[1]
REFERENCE = Path(__file__).parent / "data" / "reference_holiday"
OWN_PLAN = Path(__file__).parent / "data" / "cgrates" / "newyear"
SHARED = ROOT / ".." / "shared" / "cgrates"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED.resolve()} (CGRateS's own sample plans) "
                                                               f"is not beside the repository")
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


# --- the worked examples of docs/tariffs.md ----------------------------------------------------------

def _examples() -> list[dict]:
    return marked_table("examples-holiday")


EXAMPLES = _examples()


def _row(index: int, example: dict) -> dict:
    units = int(example["units"])
    service = example["service"]
    return usage_row(index, record_id=example["id"], service=service, served_msisdn=example["msisdn"],
                     start_time=example["start"], other_party=example["other party"] or None,
                     visited_network=example["visited"] or None,
                     **({"duration_s": units} if service == "VOICE" else {"message_count": units}))


@pytest.fixture(scope="module")
def rated_examples():
    rated, rejected, twin = rate_examples(REFERENCE, [_row(i, e) for i, e in enumerate(EXAMPLES)])
    assert not rejected, rejected
    return rated, twin


def test_the_page_shows_a_zone_rule_a_weekday_rule_and_a_split():
    assert len(EXAMPLES) >= 6 and len({e["id"] for e in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_holiday_worked_example(example, rated_examples):
    kernel, twin = rated_examples
    event = kernel[example["id"]]
    expected_micros = int(Decimal(example["charge"]) * 1_000_000)
    assert (event["charge_micros"], event["band"]) == (expected_micros, example["band"]), example["working"]
    assert event["charged_units"] == int(example["charged units"])
    assert (twin[example["id"]]["charge_micros"], twin[example["id"]]["band"]) == (expected_micros, example["band"])


def test_a_call_into_a_holiday_at_midnight_is_split(rated_examples):
    kernel, _ = rated_examples
    assert kernel["H5"]["band_split"] and not kernel["H6"]["band_split"]


def test_zones_without_a_rule_of_their_own_share_one_holiday_week():
    """Holiday weeks are compiled per distinct (version, rules that apply) and shared: a version whose
    holiday rules name no zone has one, FESTIVE has one for NATIONAL and one for every other zone."""
    compiled = compile_reference(load_reference(REFERENCE))
    T = compiled.tables
    zone = {name: z for z, name in enumerate(compiled.zone_names)}
    national, mobile, home = (T.hol_variant[0, zone[name]] for name in ("NATIONAL", "MOBILE", "HOME"))
    assert national != mobile == home
    assert T.hol_band.shape == (3, 7 * 1440)   # no rule, the weekday rule alone, both rules
    festive, offpeak = compiled.band_names.index("FESTIVE"), compiled.band_names.index("OFFPEAK")
    saturday_noon = 5 * 1440 + 12 * 60
    friday_noon = 4 * 1440 + 12 * 60
    assert (T.hol_band[national, saturday_noon], T.hol_band[mobile, saturday_noon]) == (festive, -1)
    assert (T.hol_band[national, friday_noon], T.hol_band[mobile, friday_noon]) == (festive, offpeak)
    # Minutes until the band changes stop at midnight: the next day may not be a holiday.
    assert T.hol_next_min[national, friday_noon] == 12 * 60
    assert T.hol_next_min[mobile, friday_noon] == 6 * 60


# --- loading ---------------------------------------------------------------------------------------

@pytest.fixture
def ref(tmp_path: Path) -> Path:
    target = tmp_path / "ref"
    shutil.copytree(REFERENCE, target)
    return target


def _edit(root: Path, old: str, new: str) -> None:
    path = root / "plans" / "FESTIVE.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_days_and_zones_of_holiday_rules_load():
    rules = load_reference(REFERENCE).plans["FESTIVE"].versions[0].band_rules
    assert rules[0] == BandRule("FESTIVE", tuple(range(7)), 0, 1440, True, ("NATIONAL",))
    assert rules[1] == BandRule("OFFPEAK", (0, 1, 2, 3, 4), 480, 1080, True, (ANY,))
    assert rules[2].zones == (ANY,) and not rules[2].holiday


@pytest.mark.parametrize("old, new, location, message", [
    ("zones: [NATIONAL]}", "zones: [NATIONAL, ROAM]}", "rules[0].zones[1]",
     "zone 'ROAM' is not in zones/de.csv"),
    ("zones: [NATIONAL]}", "zones: [NATIONAL, NATIONAL]}", "rules[0].zones[1]", "listed twice"),
    ("zones: [NATIONAL]}", "zones: [\"*\", NATIONAL]}", "rules[0].zones", "already covers every zone"),
    ("zones: [NATIONAL]}", "zones: []}", "rules[0].zones", "at least one entry"),
    ("{band: WEEKEND, days: [sat, sun]}", "{band: WEEKEND, days: [sat, sun], zones: [MOBILE]}",
     "rules[3].zones", "zones restrict holiday rules only"),
    ("days: [mon, tue, wed, thu, fri], from: \"08:00\", to: \"18:00\"}",
     "days: [mon, mon], from: \"08:00\", to: \"18:00\"}", "rules[1].days[1]", "listed twice"),
])
def test_bad_days_or_zones_name_the_file_field_and_fix(ref, old, new, location, message):
    _edit(ref, old, new)
    issues = check_reference(ref)
    assert len(issues) == 1, "\n".join(map(str, issues))
    assert issues[0].file == "plans/FESTIVE.yaml" and f"versions[0].bands.{location}" in issues[0].location
    assert message in issues[0].message, str(issues[0])


# --- kernels against the twin ----------------------------------------------------------------------

@st.composite
def holiday_operators(draw):
    """Random operators whose every version has a holiday calendar and 1-4 extra holiday rules on some
    weekdays and/or zones, placed anywhere among its rules (so they shadow and are shadowed)."""
    ref = draw(operators(max_plans=2))
    calendars = dict(ref.calendars) or {"calendars/h.csv": draw(_calendar("calendars/h.csv"))}
    plans = {}
    for plan_id, plan in ref.plans.items():
        versions = []
        for version in plan.versions:
            zones = sorted({z for _, z in ref.zone_tables[version.zone_table].prefixes} | {HOME} | (
                {z for _, z in ref.roaming_tables[version.roaming_table].prefixes} if version.roaming_table else set()))
            bands = sorted({version.default_band} | {r.band for r in version.band_rules})
            rules = list(version.band_rules)
            for _ in range(draw(st.integers(1, 4))):
                start, end = _minute_range(draw)
                rule = BandRule(
                    band=draw(st.sampled_from(bands)),
                    days=tuple(sorted(draw(st.sets(st.integers(0, 6), min_size=1, max_size=7)))),
                    from_minute=start, to_minute=end, holiday=True,
                    zones=draw(st.one_of(st.just((ANY,)), st.lists(st.sampled_from(zones), min_size=1, max_size=3,
                                                                   unique=True).map(tuple))))
                rules.insert(draw(st.integers(0, len(rules))), rule)
            versions.append(dataclasses.replace(
                version, holiday_calendar=version.holiday_calendar or draw(st.sampled_from(sorted(calendars))),
                band_rules=tuple(rules)))
        plans[plan_id] = dataclasses.replace(plan, versions=tuple(versions))
    return dataclasses.replace(ref, plans=plans, calendars=calendars)


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_kernels_equal_twin_with_holiday_rules_by_weekday_and_zone(data):
    ref = data.draw(holiday_operators(), label="operator")
    rows = data.draw(usage_rows(ref, max_size=25), label="rows")
    assert_same_as_twin(RatingEngine.from_reference(ref), ref, rows)


# --- the CGRateS import ----------------------------------------------------------------------------

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="usage-rating")
    cgrates_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def _rate_one(capsys, reference: Path, subject: str, destination: str, start: str, usage: str) -> dict:
    capsys.readouterr()
    assert _cli(["rate-one", "--reference", str(reference), "--subject", subject, "--destination", destination,
                 "--start", start, "--usage", usage, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def own_newyear(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("newyear") / "ref"
    assert _cli(["import-cgrates", str(OWN_PLAN), "--out", str(out), "--rounding", "cgrates"]) == 0
    return out


def test_a_dated_timing_for_some_zones_and_weekdays_imports_whole():
    result = convert_tariff_plan(OWN_PLAN, ImportOptions(arithmetic="cgrates"))
    assert not result.report.partial, result.report.findings
    rules = [r for r in result.plans[0].versions[0].content.bands.rules if r.holiday]
    # Fixed line: DR_FESTIVE (weight 20) from 10:00 on every weekday. Mobile: DR_MOBILE_NY (weight 10)
    # started at 10:00, after DAY (08:00) and WEEKEND (00:00) but before EVENING (20:00), so it wins
    # 10:00-20:00 every day and 20:00-24:00 at weekends only.
    assert {(r.band, r.days, r.zones, r.from_minute, r.to_minute) for r in rules} == {
        ("NEW_YEAR", tuple(range(7)), ("DST_DE_FIXED", "DST_DE_MOBILE"), 600, 1200),
        ("NEW_YEAR", tuple(range(7)), ("DST_DE_FIXED",), 1200, 1440),
        ("NEW_YEAR", (5, 6), ("DST_DE_MOBILE",), 1200, 1440)}


# Costs in CGRateS arithmetic (EXAMPLES.md: per-increment price Rate x RateIncrement / RateUnit rounded
# half-up to 5 decimals, connect fee of the first piece, a call split where a timing starts with each
# increment priced where it starts, the total rounded *up to 4 decimals). 1 January 2025 is a Wednesday,
# 2022 a Saturday. Subject 4915100001, rating plan RP_HOME.
OWN_CASES = [
    # Fixed line on New Year's Day from 10:00: DR_FESTIVE, weight 20 beats everything: 2 x 0.01.
    ("4930123456", "2025-01-01T11:00:00Z", "120s", "0.02", "NEW_YEAR"),
    # The same call a day later: DAY (RT_DAY): 0.1 connect + 2 x 0.2.
    ("4930123456", "2025-01-02T11:00:00Z", "120s", "0.5", "DAY"),
    # New Year's Day before NEW_YEAR starts at 10:00: an ordinary Wednesday morning, DAY again.
    ("4930123456", "2025-01-01T09:00:00Z", "120s", "0.5", "DAY"),
    # Across 10:00: the first 60 s increment starts 09:59:30 (DAY, 0.2 + 0.1 connect); the second starts
    # 10:00:30 in NEW_YEAR (0.01). CGRateS rounds 09:59:30-10:00 up to that increment and shortens the
    # next piece to 10:00:30-10:01:30: 0.31 too.
    ("4930123456", "2025-01-01T09:59:30Z", "120s", "0.31", "DAY"),
    # Mobile on New Year's Day, Wednesday 11:00: NEW_YEAR (started 10:00) beats DAY (08:00) at equal
    # weight: 60 x 0.001 (0.06 per minute per second).
    ("4915112345", "2025-01-01T11:00:00Z", "60s", "0.06", "NEW_YEAR"),
    # Wednesday 21:00: EVENING (started 20:00) beats NEW_YEAR (10:00): RT_MOBILE_OFF, 60 x 0.002.
    ("4915112345", "2025-01-01T21:00:00Z", "60s", "0.12", "EVENING"),
    # Saturday 21:00: WEEKEND started 00:00, NEW_YEAR 10:00: NEW_YEAR wins, 60 x 0.001.
    ("4915112345", "2022-01-01T21:00:00Z", "60s", "0.06", "NEW_YEAR"),
    # Saturday 2 January 21:00: an ordinary weekend, RT_MOBILE_OFF.
    ("4915112345", "2022-01-02T21:00:00Z", "60s", "0.12", "WEEKEND"),
]


@pytest.mark.parametrize("destination, start, usage, cost, band", OWN_CASES,
                         ids=[f"{c[0][:6]}-{c[1]}" for c in OWN_CASES])
def test_own_new_year_costs_through_rate_one(destination, start, usage, cost, band, own_newyear, capsys):
    answer = _rate_one(capsys, own_newyear, "4915100001", destination, start, usage)
    assert (Decimal(answer["charge"]), answer["band"]) == (Decimal(cost), band), answer


@pytest.fixture(scope="module")
def tutorial2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tutorial2") / "ref"
    assert _cli(["import-cgrates", str(SHARED / "tutorial2"), "--out", str(out), "--rounding", "cgrates",
                 "--allow-partial"]) == 0
    return out


# tutorial2 (RatingPlans.csv): RP_STANDARD prices DST_20 with DR_20_60C (RT_60C: 0.1 connect + 0.01 per
# second) in NEW_YEAR (1 January, all day) at weight 20, and DST_2030 (which also lists prefix 20) with
# DR_2030_120C (RT_120C: 0.2 connect + 1.2 for the first minute, then 1.2/min per second) at any time,
# weight 10. DST_10 keeps PEAK (DR_10_120C) and OFFPEAK (DR_10_60C) prices that depend on the weekday.
# Subject 1001's own plan RP_1001 prices DST_1002 only; its fallback *any is RP_STANDARD.
TUTORIAL2_CASES = [
    # 2020-01-01 is a Wednesday: the highest weight at prefix 20 is DR_20_60C: 0.1 + 60 x 0.01.
    ("2012345", "2020-01-01T10:00:00Z", "60s", "0.7", "NEW_YEAR"),
    # 2022-01-01 is a Saturday: the same, whatever the weekday.
    ("2012345", "2022-01-01T10:00:00Z", "60s", "0.7", "NEW_YEAR"),
    # 2 January: DR_2030_120C, 0.2 + one 60 s increment at 1.2.
    ("2012345", "2020-01-02T10:00:00Z", "60s", "1.4", "PEAK"),
    # Tuesday 31 December 23:59:30 for 120 s: the first 60 s increment (RT_120C, 1.2, + 0.2 connect) runs
    # to 00:00:30; from there NEW_YEAR prices 60 one-second increments at 0.01: 2.0 (CGRateS splits at
    # 00:00, rounds the first piece up to its 60 s increment and shortens the second by the overrun).
    ("2012345", "2019-12-31T23:59:30Z", "120s", "2", "OFFPEAK_EVENING"),
    # DST_10 on New Year's Day keeps the weekday: Wednesday 10:00 PEAK (0.2 + 1.2), Saturday
    # OFFPEAK_WEEKEND (0.1 + 60 x 0.01).
    ("1003", "2020-01-01T10:00:00Z", "60s", "1.4", "PEAK"),
    ("1003", "2022-01-01T10:00:00Z", "60s", "0.7", "OFFPEAK_WEEKEND"),
]


@needs_shared
@pytest.mark.parametrize("destination, start, usage, cost, band", TUTORIAL2_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in TUTORIAL2_CASES])
def test_tutorial2_new_year_through_rate_one(destination, start, usage, cost, band, tutorial2, capsys):
    answer = _rate_one(capsys, tutorial2, "1001", destination, start, usage)
    assert (Decimal(answer["charge"]), answer["band"]) == (Decimal(cost), band), answer


@needs_shared
def test_tutorial2_new_year_is_no_longer_refused(tutorial2):
    report = json.loads((tutorial2 / "cgrates-import.json").read_text())["report"]
    assert not [f for f in report if "NEW_YEAR" in f["where"] + f["message"]]
    assert "holiday_calendar: calendars/NEW_YEAR.csv" in (tutorial2 / "plans" / "ANY.yaml").read_text()


def _two_holidays(folder: Path, xmas_rate: str) -> Path:
    """A plan of one zone where New Year's Day prices calls at RT_NY and Christmas Day at ``xmas_rate``."""
    folder.mkdir()
    files = {
        "Timings": "#Tag,Years,Months,MonthDays,WeekDays,Time\nDAY,*any,*any,*any,*any,08:00:00\n"
                   "NEW_YEAR,*any,1,1,*any,00:00:00\nXMAS,*any,12,25,*any,00:00:00\n",
        "Destinations": "#Id,Prefix\nDST_49,49\n",
        "Rates": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\nRT_DAY,0,0.12,60s,60s,0s\n"
                 "RT_NIGHT,0,0.02,60s,60s,0s\nRT_NY,0,0.01,60s,60s,0s\nRT_XMAS,0,0.03,60s,60s,0s\n",
        "DestinationRates": "#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy\n"
                            "DR_DAY,DST_49,RT_DAY,*up,4,,\nDR_NIGHT,DST_49,RT_NIGHT,*up,4,,\n"
                            "DR_NY,DST_49,RT_NY,*up,4,,\nDR_XMAS,DST_49,RT_XMAS,*up,4,,\n",
        "RatingPlans": "#Id,DestinationRatesId,TimingTag,Weight\nRP_A,DR_DAY,DAY,10\nRP_A,DR_NIGHT,*any,10\n"
                       f"RP_A,DR_NY,NEW_YEAR,20\nRP_A,{xmas_rate},XMAS,20\n",
        "RatingProfiles": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject\n"
                          "t1,call,4930111,2020-01-01T00:00:00Z,RP_A,\n",
    }
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def test_two_holidays_that_agree_share_the_calendar(tmp_path, capsys):
    folder = _two_holidays(tmp_path / "tp", "DR_NY")
    assert not convert_tariff_plan(folder).report.partial
    out = tmp_path / "ref"
    assert _cli(["import-cgrates", str(folder), "--out", str(out)]) == 0
    charges = {start: _rate_one(capsys, out, "4930111", "4930123", start, "60s")["charge"]
               for start in ("2024-12-25T10:00:00Z", "2025-01-01T10:00:00Z", "2025-01-02T10:00:00Z")}
    assert charges == {"2024-12-25T10:00:00Z": "0.01", "2025-01-01T10:00:00Z": "0.01",
                       "2025-01-02T10:00:00Z": "0.12"}


def test_two_holidays_on_one_weekday_with_different_rates_are_reported(tmp_path):
    report = convert_tariff_plan(_two_holidays(tmp_path / "tp", "DR_XMAS")).report
    findings = [f for f in report.findings if f.severity == "unsupported"]
    assert [f.where for f in findings] == ["timing NEW_YEAR, XMAS"]
    assert "same weekday need different rates for one zone" in findings[0].message
    assert "left out 00:00-24:00" in findings[0].message and "DR_" in findings[0].message
