"""Loading and validating reference data (docs/reference-data.md).

The valid directory tests/data/reference_min loads into the right model values; then each class
of error is introduced into a copy of it, one at a time, and must be reported with its file, its
line or field path, and nothing else (a single mistake must not cascade into unrelated issues).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rating.reference import (
    ReferenceDataError, ReferenceIssue, check_reference, load_reference, parse_instant_us,
    parse_money_micros)
from rating.reference.model import RoundingMode

BERLIN_2026 = 1767222000000000    # 2026-01-01T00:00:00+01:00
BERLIN_APRIL = 1774994400000000   # 2026-04-01T00:00:00+02:00 (after the DST change)


@pytest.fixture
def ref(tmp_path: Path, reference_min_dir: Path) -> Path:
    """A writable copy of the valid reference directory."""
    target = tmp_path / "ref"
    shutil.copytree(reference_min_dir, target)
    return target


def edit(root: Path, relative: str, old: str, new: str) -> None:
    """Replace the first ``old`` in ``root/relative`` (which must contain it) by ``new``."""
    path = root / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(root: Path, relative: str, text: str) -> int:
    """1-based line of the first occurrence of ``text`` in ``root/relative``."""
    content = (root / relative).read_text(encoding="utf-8")
    assert text in content, f"{text!r} not in {relative}"
    return content[:content.index(text)].count("\n") + 1


def only_issue(root: Path) -> ReferenceIssue:
    """The single issue found in ``root`` (a broken thing must not cascade into others)."""
    issues = check_reference(root)
    assert len(issues) == 1, "expected exactly one issue, got:\n" + "\n".join(map(str, issues))
    return issues[0]


def assert_issue(issue: ReferenceIssue, file: str, location: str, message: str) -> None:
    """``location`` must appear in the issue's location, ``message`` (a regex) in its message."""
    assert issue.file == file, str(issue)
    assert location in issue.location, str(issue)
    assert re.search(message, issue.message), str(issue)


# --- the valid directory ---------------------------------------------------------------------

def test_min_dir_has_no_issues(reference_min_dir):
    assert check_reference(reference_min_dir) == []


def test_min_dir_loads_plans_with_exact_money_and_minutes(reference_min_dir):
    data = load_reference(reference_min_dir)
    assert sorted(data.plans) == ["MOBILE_L", "MOBILE_S", "UK_BASIC"]
    plan = data.plans["MOBILE_S"]
    assert (plan.currency, plan.timezone) == ("EUR", "Europe/Berlin")
    assert (plan.numbering.country_code, plan.numbering.trunk_prefix) == ("49", "0")
    first, second = plan.versions
    # An open valid_to is the next version's valid_from; the last stays open.
    assert (first.valid_from_us, first.valid_to_us) == (BERLIN_2026, BERLIN_APRIL)
    assert (second.valid_from_us, second.valid_to_us) == (BERLIN_APRIL, None)
    assert first.zone_table == "zones/de.csv" and first.holiday_calendar == "calendars/de.csv"
    assert first.default_band == "OFFPEAK"
    holiday, peak, weekend = first.band_rules
    assert (holiday.band, holiday.holiday, holiday.days, holiday.zones) == ("HOLIDAY", True, tuple(range(7)), ("*",))
    assert (peak.days, peak.from_minute, peak.to_minute) == ((0, 1, 2, 3, 4), 480, 1200)
    assert (weekend.days, weekend.from_minute, weekend.to_minute) == ((5, 6), 0, 1440)
    peak_rate = first.rates[0]
    assert peak_rate.key == ("voice", "NATIONAL", "PEAK")
    assert (peak_rate.connect_fee_micros, peak_rate.minimum_micros,
            peak_rate.maximum_micros) == (50_000, 100_000, 20_000_000)
    assert [(s.from_units, s.price_micros, s.per_units, s.increment_units)
            for s in peak_rate.steps] == [(0, 200_000, 60, 60), (60, 100_000, 60, 1)]
    premium = next(rate for rate in first.rates if rate.zone == "PREMIUM")
    assert premium.increment_rounding.decimals == 5
    assert premium.increment_rounding.mode is RoundingMode.HALF_UP
    data_rate = next(rate for rate in first.rates if rate.service == "data")
    assert data_rate.steps == () and data_rate.tiers.group == "DATA"
    assert [(level.up_to_units, level.price_micros) for level in data_rate.tiers.levels] == [
        (1073741824, 0), (5368709120, 10_000), (None, 5_000)]
    assert [(a.name, a.zones, a.units) for a in first.allowances] == [
        ("VOICE_300", ("NATIONAL", "MOBILE"), 18000), ("SMS_100", ("*",), 100)]
    assert second.recurring_fees[0].amount_micros == 10_990_000
    assert data.plans["MOBILE_L"].versions[0].zero_duration_charged is True
    assert first.zero_duration_charged is False


def test_min_dir_loads_tables_accounts_and_sorted_subscriptions(reference_min_dir):
    data = load_reference(reference_min_dir)
    assert data.operator.currencies["GBP"].minor_unit_digits == 2
    assert data.operator.invoice_rounding is RoundingMode.HALF_EVEN
    assert ("4915", "MOBILE") in data.zone_tables["zones/de.csv"].prefixes
    assert data.roaming_tables["roaming/eu.csv"].prefixes[0] == ("208", "ROAM_EU")
    assert "2026-12-28" in data.calendars["calendars/gb.csv"].dates
    assert data.accounts["ACC000003"].bill_cycle_day == 28
    assert data.accounts["ACC000004"].currency == "GBP"
    assert [(rate.tax_region, rate.rate_millionths) for rate in data.tax_rates] == [
        ("DE", 160_000), ("DE", 190_000), ("GB", 200_000)]
    keys = [(s.msisdn, s.valid_from_us) for s in data.subscriptions]
    assert keys == sorted(keys) and len(keys) == 10
    changing = [s for s in data.subscriptions if s.msisdn == "4915100000003"]
    assert [s.plan_id for s in changing] == ["MOBILE_S", "MOBILE_L"]
    assert changing[0].valid_to_us == changing[1].valid_from_us
    assert changing[1].valid_to_us is None


# --- value parsers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, micros", [
    ("0.125", 125_000), ("10", 10_000_000), ("0.000001", 1), ("-1.5", -1_500_000), ("0", 0)])
def test_parse_money_micros_is_exact(text, micros):
    assert parse_money_micros(text, where="x") == micros


@pytest.mark.parametrize("value, message", [
    (0.1, "quote it"), (5, "quote it"), ("0.1234567", "at most 6 decimals"),
    ("1e-3", "decimal string"), (" 1.0", "decimal string"), ("1,50", "decimal string")])
def test_parse_money_micros_rejects_floats_and_inexact_text(value, message):
    with pytest.raises(ValueError, match=f"^price of X: .*{message}"):
        parse_money_micros(value, where="price of X")


def test_parse_instant_us_handles_offsets_and_fractions():
    assert parse_instant_us("2026-01-01T00:00:00+01:00") == BERLIN_2026
    assert parse_instant_us("2025-12-31T23:00:00Z") == BERLIN_2026
    assert parse_instant_us("2025-12-31T23:00:00.000001Z") == BERLIN_2026 + 1
    with pytest.raises(ValueError, match="Z or an offset"):
        parse_instant_us("2026-01-01T00:00:00")
    with pytest.raises(ValueError, match="not a real date"):
        parse_instant_us("2026-02-30T00:00:00Z")


def test_issue_and_error_text_name_file_location_and_every_issue():
    issues = [ReferenceIssue("plans/A.yaml", "line 3, versions[0].rates[1].price", "bad price"),
              ReferenceIssue("accounts.csv", "", "missing required file")]
    assert str(issues[0]) == "plans/A.yaml: line 3, versions[0].rates[1].price: bad price"
    assert str(issues[1]) == "accounts.csv: missing required file"
    error = ReferenceDataError(issues)
    assert isinstance(error, ValueError) and error.issues == issues
    assert all(str(issue) in str(error) for issue in issues)


# --- one test per class of error -------------------------------------------------------------

def test_bad_yaml_syntax_is_one_issue_and_its_subscriptions_are_not_flagged(ref):
    edit(ref, "plans/MOBILE_L.yaml", "name: Mobile L", "name: [Mobile L")
    issue = only_issue(ref)
    assert_issue(issue, "plans/MOBILE_L.yaml", "line ", "YAML syntax error")


def test_float_money_says_to_quote_it(ref):
    edit(ref, "plans/MOBILE_S.yaml", 'price: "0.20"', "price: 0.20")
    line = line_of(ref, "plans/MOBILE_S.yaml", "price: 0.20")
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml",
                 f"line {line}, versions[0].rates[0].steps[0].price", "quote it")


def test_too_many_decimals_is_an_error_not_a_rounding(ref):
    edit(ref, "plans/MOBILE_S.yaml", 'connect_fee: "0.05"', 'connect_fee: "0.0512345"')
    with pytest.raises(ReferenceDataError, match=r"versions\[0\]\.rates\[0\]\.connect_fee: "
                                                 r"expected at most 6 decimals"):
        load_reference(ref)


def test_negative_fee(ref):
    edit(ref, "plans/UK_BASIC.yaml", 'amount: "7.50"', 'amount: "-7.50"')
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].recurring_fees[0].amount",
                 "non-negative")


@pytest.mark.parametrize("relative, old, new, location", [
    ("plans/UK_BASIC.yaml", "currency: GBP", "currency: USD", "currency"),
    ("accounts.csv", "ACC000005,GBP,", "ACC000005,USD,", "line 6, column currency"),
])
def test_unknown_currency(ref, relative, old, new, location):
    edit(ref, relative, old, new)
    assert_issue(only_issue(ref), relative, location, "'USD' is not declared in operator.yaml")


@pytest.mark.parametrize("relative, old, new, location", [
    ("plans/MOBILE_L.yaml", "timezone: Europe/Berlin", "timezone: Europe/Berln", "timezone"),
    ("accounts.csv", "ACC000002,EUR,Europe/Berlin", "ACC000002,EUR,Europe/Berln",
     "line 3, column timezone"),
])
def test_unknown_timezone(ref, relative, old, new, location):
    edit(ref, relative, old, new)
    assert_issue(only_issue(ref), relative, location, "IANA timezone.*'Europe/Berln'")


@pytest.mark.parametrize("relative", [
    "operator.yaml", "accounts.csv", "subscriptions.csv", "tax_rates.csv"])
def test_missing_required_file_is_one_issue(ref, relative):
    (ref / relative).unlink()
    assert_issue(only_issue(ref), relative, "", "missing required file")


def test_missing_referenced_calendar(ref):
    (ref / "calendars/gb.csv").unlink()
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].holiday_calendar",
                 "'calendars/gb.csv' not found")


def test_missing_csv_column(ref):
    edit(ref, "accounts.csv", "bill_cycle_day,tax_region", "bill_cycle_day,tax_regoin")
    issues = check_reference(ref)
    assert [(issue.file, issue.location) for issue in issues] == [("accounts.csv", "line 1")] * 2
    assert "unexpected column 'tax_regoin'" in issues[0].message
    assert "missing column 'tax_region'" in issues[1].message


def test_extra_csv_column_is_reported_and_the_rest_still_checked(ref):
    path = ref / "tax_rates.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",note"] + [line + ",x" for line in lines[1:]]) + "\n")
    edit(ref, "tax_rates.csv", "GB,2011-01-04T00:00:00Z,0.2,", "GB,2011-01-04T00:00:00Z,1.2,")
    issues = check_reference(ref)
    assert [(issue.location, issue.message[:24]) for issue in issues] == [
        ("line 1", "unexpected column 'note'"), ("line 4, column rate", "expected a fraction 0 <=")]


def test_duplicate_prefix(ref):
    with open(ref / "zones/de.csv", "a") as handle:
        handle.write("4915,MOBILE\n")
    assert_issue(only_issue(ref), "zones/de.csv", "line 22, column prefix",
                 "duplicate prefix '4915' \\(first on line 3\\)")


@pytest.mark.parametrize("bad", ["49-17", "+4917", "49 17", ""])
def test_bad_prefix_characters(ref, bad):
    edit(ref, "zones/de.csv", "4917,MOBILE", f"{bad},MOBILE")
    assert_issue(only_issue(ref), "zones/de.csv", "line 5, column prefix", "digits 0-9")


def test_rate_zone_unknown(ref):
    edit(ref, "plans/MOBILE_S.yaml", "zone: EUROPE", "zone: EUROPA")
    line = line_of(ref, "plans/MOBILE_S.yaml", "zone: EUROPA")
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", f"line {line}, versions[0].rates[3].zone",
                 "'EUROPA' is not in zones/de.csv or roaming/eu.csv")


def test_rate_band_unknown(ref):
    edit(ref, "plans/UK_BASIC.yaml", "        band: PEAK\n", "        band: PEAKK\n")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].rates[0].band",
                 "band 'PEAKK' is not in the version's bands.*OFFPEAK, PEAK")


def test_duplicate_rate_key(ref):
    edit(ref, "plans/UK_BASIC.yaml", "        band: OFFPEAK\n", "        band: PEAK\n")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].rates[1]",
                 r"duplicate rate .*\(voice, NATIONAL, PEAK\).*rates\[0\]")


@pytest.mark.parametrize("old, new, location, message", [
    ('- {from: 0, price: "0.05", per: 60, increment: 60}',
     '- {from: 10, price: "0.05", per: 60, increment: 60}',
     "versions[0].rates[1].steps[0].from", "first step must start at from: 0"),
    ('- {from: 30, price: "0.12", per: 60, increment: 6}',
     '- {from: 0, price: "0.12", per: 60, increment: 6}',
     "versions[0].rates[2].steps[1].from", "strictly increasing 'from'"),
    ('- {from: 30, price: "0.12", per: 60, increment: 6}',
     '- {from: 45, price: "0.12", per: 60, increment: 6}',
     "versions[0].rates[2].steps[0].increment", "not a whole number of its 30-unit increments"),
    ('- {from: 0, price: "0.09", per: 1, increment: 1}',
     '- {from: 0, price: "0.09", per: 0, increment: 1}',
     "versions[0].rates[7].steps[0].per", "integer >= 1"),
])
def test_bad_steps(ref, old, new, location, message):
    edit(ref, "plans/MOBILE_S.yaml", old, new)
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", location, message)


def test_rate_with_steps_and_tiers(ref):
    edit(ref, "plans/UK_BASIC.yaml", "        tiers:\n",
         '        steps: [{from: 0, price: "0.01", per: 1048576, increment: 1024}]\n'
         "        tiers:\n")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].rates[5]",
                 "either steps .* or tiers .*, not both")


def test_rate_without_steps_or_tiers(ref):
    edit(ref, "plans/UK_BASIC.yaml", "        steps:\n          - {from: 0, price: \"0.08\", "
                                     "per: 1, increment: 1}\n", "")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].rates[4]",
                 "needs steps .* or tiers")


@pytest.mark.parametrize("old, new, location, message", [
    ("{up_to: 5368709120,", "{up_to: 1073741824,", "versions[0].rates[9].tiers.levels[1].up_to",
     "strictly increasing"),
    ('{price: "0.005", per: 1048576}', '{up_to: 9999999999, price: "0.005", per: 1048576}',
     "versions[0].rates[9].tiers.levels[2].up_to", "last level must be open-ended"),
    ("{up_to: 5368709120, ", "{", "versions[0].rates[9].tiers.levels[1]",
     "only the last level may be open-ended"),
])
def test_bad_tier_levels(ref, old, new, location, message):
    edit(ref, "plans/MOBILE_S.yaml", old, new)
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", location, message)


def test_minimum_above_maximum_charge(ref):
    edit(ref, "plans/MOBILE_S.yaml", 'minimum_charge: "0.10"', 'minimum_charge: "25.00"')
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", "versions[0].rates[0].minimum_charge",
                 "minimum_charge 25.00 is greater than maximum_charge 20.00")


@pytest.mark.parametrize("old, new, location, message", [
    ("name: VOICE_EU", "name: VOICE_NATIONAL", "versions[0].allowances[1].name",
     r"duplicate allowance name 'VOICE_NATIONAL' \(also allowances\[0\]\)"),
    ("zones: [EUROPE, ROAM_EU]", "zones: [EUROPE, ROAM_XX]",
     "versions[0].allowances[1].zones[1]", "zone 'ROAM_XX' is not in zones/de.csv or roaming"),
    ("units: 6000, order: 2", "units: 6000, order: 1", "versions[0].allowances[1].order",
     "duplicate order 1"),
    ("units: 6000, order: 2", "units: 0, order: 2", "versions[0].allowances[1].units",
     "integer >= 1"),
])
def test_bad_allowance(ref, old, new, location, message):
    edit(ref, "plans/MOBILE_L.yaml", old, new)
    assert_issue(only_issue(ref), "plans/MOBILE_L.yaml", location, message)


@pytest.mark.parametrize("new, location, message", [
    ('from: "19:00", to: "07:00"', "rules[1].to", "'from' 19:00 must be before 'to' 07:00; split"),
    ('from: "07:00", to: "25:00"', "rules[1].to", r"time of day in 00:00\.\.24:00"),
    ('from: "7h", to: "19:00"', "rules[1].from", "\"HH:MM\""),
    ('from: "07:00", to: 19:00', "rules[1].to", "quote it"),
])
def test_band_rule_bad_time(ref, new, location, message):
    edit(ref, "plans/MOBILE_L.yaml", 'from: "07:00", to: "19:00"', new)
    assert_issue(only_issue(ref), "plans/MOBILE_L.yaml", f"versions[0].bands.{location}", message)


def test_band_rule_bad_day(ref):
    edit(ref, "plans/MOBILE_L.yaml", "days: [sat, sun]", "days: [sat, Sunday]")
    assert_issue(only_issue(ref), "plans/MOBILE_L.yaml", "versions[0].bands.rules[2].days[1]",
                 "expected one of mon, tue")


def test_holiday_rule_without_calendar(ref):
    edit(ref, "plans/UK_BASIC.yaml", "    holiday_calendar: calendars/gb.csv\n", "")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", "versions[0].bands.rules[0].holiday",
                 "holiday rule needs a holiday calendar")


@pytest.mark.parametrize("old, new, location, message", [
    ("valid_from: 2026-01-01T00:00:00+01:00\n",
     "valid_from: 2026-01-01T00:00:00+01:00\n    valid_to: 2026-05-01T00:00:00+02:00\n",
     "versions[0].valid_to", "version 1 ends at 2026-04-30T22:00:00Z, after version 2 starts"),
    ("valid_from: 2026-04-01T00:00:00+02:00", "valid_from: 2026-01-01T00:00:00+01:00",
     "versions[0].valid_from", "versions 1 and 2 both start at 2025-12-31T23:00:00Z"),
    ("version: 2", "version: 1", "versions[1].version", "version 1 is used twice"),
])
def test_plan_version_overlap(ref, old, new, location, message):
    edit(ref, "plans/MOBILE_S.yaml", old, new)
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", location, message)


def test_plan_versions_out_of_order(ref):
    edit(ref, "plans/MOBILE_S.yaml", "valid_from: 2026-04-01T00:00:00+02:00",
         "valid_from: 2025-10-01T00:00:00+02:00")
    assert_issue(only_issue(ref), "plans/MOBILE_S.yaml", "versions[1].valid_from",
                 "sorted by valid_from")


@pytest.mark.parametrize("old, new, location, message", [
    ("4915100000002,ACC000001,", "4915100000002,ACC999999,", "line 3, column account_id",
     "unknown account 'ACC999999'; add it to accounts.csv"),
    ("4915100000002,ACC000001,MOBILE_L", "4915100000002,ACC000001,MOBILE_XL",
     "line 3, column plan_id", "unknown plan 'MOBILE_XL'; expected one of .*MOBILE_L, MOBILE_S"),
])
def test_subscription_unknown_account_or_plan(ref, old, new, location, message):
    edit(ref, "subscriptions.csv", old, new)
    assert_issue(only_issue(ref), "subscriptions.csv", location, message)


def test_subscription_plan_currency_differs_from_account(ref):
    edit(ref, "subscriptions.csv", "ACC000005,UK_BASIC", "ACC000005,MOBILE_S")
    assert_issue(only_issue(ref), "subscriptions.csv", "line 11, column plan_id",
                 "plan MOBILE_S is priced in EUR but account ACC000005 is billed in GBP")


@pytest.mark.parametrize("old, new, line, message", [
    ("MOBILE_S,2026-01-01T00:00:00+01:00,2026-03-15T00:00:00+01:00",
     "MOBILE_S,2026-01-01T00:00:00+01:00,2026-03-20T00:00:00+01:00", 5,
     "from 2026-03-14T23:00:00Z overlaps the one on line 4, which ends at 2026-03-19T23:00:00Z"),
    ("MOBILE_S,2026-01-01T00:00:00+01:00,2026-03-15T00:00:00+01:00",
     "MOBILE_S,2026-01-01T00:00:00+01:00,", 5, "overlaps the one on line 4, which is open-ended"),
])
def test_overlapping_subscriptions(ref, old, new, line, message):
    edit(ref, "subscriptions.csv", old, new)
    assert_issue(only_issue(ref), "subscriptions.csv", f"line {line}", message)


def test_bill_cycle_day_31(ref):
    edit(ref, "accounts.csv", "ACC000002,EUR,Europe/Berlin,15,", "ACC000002,EUR,Europe/Berlin,31,")
    assert_issue(only_issue(ref), "accounts.csv", "line 3, column bill_cycle_day",
                 r"day of the month 1\.\.28.*got '31'")


def test_duplicate_account_id(ref):
    with open(ref / "accounts.csv", "a") as handle:
        handle.write("ACC000001,EUR,Europe/Berlin,1,DE\n")
    assert_issue(only_issue(ref), "accounts.csv", "line 8, column account_id",
                 "duplicate account_id 'ACC000001' \\(first on line 2\\)")


def test_tax_region_missing_from_tax_rates(ref):
    edit(ref, "accounts.csv", "Europe/London,10,GB", "Europe/London,10,FR")
    assert_issue(only_issue(ref), "accounts.csv", "line 6, column tax_region",
                 "tax region 'FR' has no rate in tax_rates.csv")


def test_duplicate_calendar_date(ref):
    with open(ref / "calendars/de.csv", "a") as handle:
        handle.write("2026-12-25,Christmas again\n")
    assert_issue(only_issue(ref), "calendars/de.csv", "line 11, column date",
                 "duplicate date 2026-12-25 \\(first on line 9\\)")


@pytest.mark.parametrize("relative, old, new, location, message", [
    ("subscriptions.csv", "ACC000005,UK_BASIC,2026-01-20T00:00:00Z",
     "ACC000005,UK_BASIC,2026-01-20T00:00:00", "line 11, column valid_from", "Z or an offset"),
    ("subscriptions.csv", "2026-02-17T12:00:00+01:00", "2026-02-17", "line 6, column valid_to",
     "Z or an offset"),
    ("tax_rates.csv", "2011-01-04T00:00:00Z", "2011-01-32T00:00:00Z", "line 4, column valid_from",
     "not a real date"),
    ("plans/UK_BASIC.yaml", "valid_from: 2026-01-01T00:00:00Z", "valid_from: 2026-01-01 00:00:00",
     "versions[0].valid_from", "without one"),
    ("plans/UK_BASIC.yaml", "valid_from: 2026-01-01T00:00:00Z", "valid_from: 2026-01-01",
     "versions[0].valid_from", "got the date 2026-01-01"),
])
def test_bad_instant(ref, relative, old, new, location, message):
    edit(ref, relative, old, new)
    assert_issue(only_issue(ref), relative, location, message)


def test_subscription_ending_before_it_starts(ref):
    edit(ref, "subscriptions.csv", "2026-02-17T12:00:00+01:00", "2026-01-17T12:00:00+01:00")
    assert_issue(only_issue(ref), "subscriptions.csv", "line 6, column valid_to",
                 "must be after valid_from")


def test_unknown_yaml_field_and_duplicate_key(ref):
    edit(ref, "plans/UK_BASIC.yaml", 'maximum_charge: "30.00"', 'maximun_charge: "30.00"')
    edit(ref, "operator.yaml", "tax_rounding: half_even", "tax_rounding: half_even\n"
                                                          "tax_rounding: half_up")
    issues = check_reference(ref)
    assert [(issue.file, issue.location.split(", ")[-1]) for issue in issues] == [
        ("operator.yaml", "tax_rounding"),
        ("plans/UK_BASIC.yaml", "versions[0].rates[3].maximun_charge")]
    assert "duplicate key 'tax_rounding'" in issues[0].message
    assert "unknown field 'maximun_charge'" in issues[1].message


def test_wrong_field_count_and_blank_lines_keep_line_numbers_exact(ref):
    # A blank line and a multi-line quoted value make the loader fall back from Arrow to the csv
    # module; line numbers must still be those an editor shows.
    edit(ref, "tax_rates.csv", "GB,", '\n"DE",2019-01-01T00:00:00Z,0.19,"VAT\nold"\nGB,')
    edit(ref, "subscriptions.csv", "447700900003,ACC000005,UK_BASIC,2026-01-20T00:00:00Z,\n",
         "\n447700900003,ACC000005,UK_BASIC,2026-01-20T00:00:00Z,,extra\n"
         "447700900004,ACC000099,UK_BASIC,2026-01-20T00:00:00Z,\n")
    issues = [(issue.file, issue.location) for issue in check_reference(ref)]
    assert issues == [("subscriptions.csv", "line 12"),
                      ("subscriptions.csv", "line 13, column account_id")]


def test_not_a_directory_is_an_issue_not_an_exception(tmp_path):
    issues = check_reference(tmp_path / "nowhere")
    assert len(issues) == 1 and "not a directory" in issues[0].message
    with pytest.raises(ReferenceDataError, match="not a directory"):
        load_reference(tmp_path / "nowhere")


def test_several_errors_in_several_files_are_all_reported(ref):
    edit(ref, "plans/MOBILE_L.yaml", "name: Mobile L", "name: [Mobile L")          # syntax
    edit(ref, "plans/MOBILE_S.yaml", 'amount: "9.99"', "amount: 9.99")            # float money
    edit(ref, "plans/UK_BASIC.yaml", "zone: MOBILE", "zone: MOBIL")               # unknown zone
    with open(ref / "zones/de.csv", "a") as handle:                               # duplicate
        handle.write("49,NATIONAL\n")
    edit(ref, "accounts.csv", "Europe/Berlin,28,DE", "Europe/Berlin,31,DE")       # cycle day
    edit(ref, "subscriptions.csv", "447700900002,ACC000004", "447700900002,ACC000404")
    with pytest.raises(ReferenceDataError) as caught:
        load_reference(ref)
    found = [(issue.file, issue.location.split(", ")[-1]) for issue in caught.value.issues]
    assert found == [
        ("zones/de.csv", "column prefix"),
        ("plans/MOBILE_L.yaml", "line 4"),
        ("plans/MOBILE_S.yaml", "versions[0].recurring_fees[0].amount"),
        ("plans/UK_BASIC.yaml", "versions[0].rates[2].zone"),
        ("accounts.csv", "column bill_cycle_day"),
        ("subscriptions.csv", "column account_id"),
    ]
    text = str(caught.value)
    assert text.startswith(f"invalid reference data in {ref}: 6 issues")
    assert all(str(issue) in text for issue in caught.value.issues)


def test_large_generated_file_reports_the_right_line(ref):
    """Arrow reads big files column-wise; errors deep inside still carry their line."""
    with open(ref / "subscriptions.csv", "a") as handle:
        for index in range(20_000):
            handle.write(f"49152{index:08d},ACC000001,MOBILE_S,2026-01-01T00:00:00Z,\n")
        handle.write("4915200012345,ACC000001,MOBILE_S,2026-06-01T00:00:00Z,\n")
    issues = check_reference(ref)
    assert [(issue.location, issue.message[:40]) for issue in issues] == [
        ("line 20012", "subscription of 4915200012345 from 2026-")]
    assert "overlaps the one on line 12357" in issues[0].message


def test_issues_within_a_yaml_file_are_listed_in_line_order(ref):
    edit(ref, "plans/UK_BASIC.yaml", 'amount: "7.50"', "amount: 7.50")
    edit(ref, "plans/UK_BASIC.yaml", "name: UK Basic", "name: 42")
    edit(ref, "plans/UK_BASIC.yaml", "increment: 1024", "increment: 0")
    issues = check_reference(ref)
    lines = [int(issue.location.split(",")[0].removeprefix("line ")) for issue in issues]
    assert len(issues) == 3 and lines == sorted(lines), "\n".join(map(str, issues))
    assert issues[0].location == "line 3, name"


def test_engine_is_kept_per_process_until_a_reference_file_changes(ref):
    from rating.engine import RatingEngine

    first = RatingEngine.load(str(ref))
    assert RatingEngine.load(str(ref)) is first  # the job's check and its in-process workers share it
    edit(ref, "operator.yaml", "\n", "\n# edited\n")  # same directory, different bytes
    second = RatingEngine.load(str(ref))
    assert second is not first
    edit(ref, "operator.yaml", "# edited", "currency: [oops")
    with pytest.raises(Exception, match="operator.yaml"):
        RatingEngine.load(str(ref))  # a broken edit is reported, not served from the cache


def test_compiled_reference_is_cached_on_disk_for_other_processes(ref, tmp_path, monkeypatch):
    from rating import engine as engine_module
    from rating.engine import RatingEngine
    from tests.usage_rows import usage_batch, usage_row

    monkeypatch.setenv("USAGE_RATING_CACHE_DIR", str(tmp_path / "cache"))
    first = RatingEngine.load(str(ref))
    entries = list((tmp_path / "cache" / "engines").glob("*.pickle"))
    assert len(entries) == 1
    engine_module._LOADED.clear()   # as a new worker process would start

    def no_compile(*_):
        raise AssertionError("compiled again despite the cache")
    monkeypatch.setattr(engine_module, "compile_reference", no_compile)
    cached = RatingEngine.load(str(ref))
    assert cached is not first and cached.compiled.reference == first.compiled.reference
    batch = usage_batch([usage_row(0, service="VOICE", served_msisdn="4915100000001", other_party="030123456",
                                   start_time="2026-01-05T10:00:00+01:00", duration_s=61)])
    assert cached.rate(batch)[0].equals(first.rate(batch)[0]) and first.rate(batch)[0].num_rows == 1

    entries[0].write_bytes(b"not a pickle")   # a damaged entry is a miss, not an error
    engine_module._LOADED.clear()
    monkeypatch.undo()
    monkeypatch.setenv("USAGE_RATING_CACHE_DIR", str(tmp_path / "cache"))
    assert RatingEngine.load(str(ref)).compiled.reference == first.compiled.reference
    monkeypatch.setenv("USAGE_RATING_CACHE_DIR", "off")
    engine_module._LOADED.clear()
    assert RatingEngine.load(str(ref)).compiled.account_ids == first.compiled.account_ids


# --- hostile files: alias bombs and bytes that are not UTF-8 -----------------------------------

def _bomb(levels: int) -> str:
    """A "billion laughs" document: each level is nine aliases of the one before (~60 bytes a level)."""
    lines = ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_naming_the_file_not_expanded(ref):
    bomb = _bomb(10)   # 9**10 (3.5 billion) strings once expanded: the old loader ran out of memory
    assert len(bomb) < 700
    with open(ref / "plans/UK_BASIC.yaml", "a", encoding="utf-8") as handle:
        handle.write(bomb)
    first_alias = line_of(ref, "plans/UK_BASIC.yaml", "lol1:")
    assert_issue(only_issue(ref), "plans/UK_BASIC.yaml", f"line {first_alias}",
                 r"anchors \(&\) and aliases \(\*\) are not allowed in reference data")


def test_a_reused_yaml_value_is_refused_at_the_line_that_reuses_it(ref):
    edit(ref, "plans/UK_BASIC.yaml", "rounding: {mode: half_even, decimals: 6}",
         "rounding: &round {mode: half_even, decimals: 6}\n    rounding_again: *round")
    anchored = line_of(ref, "plans/UK_BASIC.yaml", "&round")
    issue = only_issue(ref)
    assert_issue(issue, "plans/UK_BASIC.yaml", f"line {anchored + 1}",
                 f"the value anchored at line {anchored} is used again at line {anchored + 1}; write the value out "
                 f"in full")
    with pytest.raises(ReferenceDataError, match="plans/UK_BASIC.yaml: line .*aliases"):
        load_reference(ref)


@pytest.mark.parametrize("relative, line", [("accounts.csv", 4), ("subscriptions.csv", 7), ("zones/de.csv", 3),
                                            ("tax_rates.csv", 2), ("plans/UK_BASIC.yaml", 3)])
def test_bytes_that_are_not_utf8_are_reported_at_their_line(ref, relative, line):
    path = ref / relative
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:5] + b"\xff" + lines[line - 1][5:]
    path.write_bytes(b"\n".join(lines))
    issues = [issue for issue in check_reference(ref) if issue.file == relative]
    assert len(issues) == 1, "\n".join(map(str, issues))
    assert_issue(issues[0], relative, f"line {line}", r"not valid UTF-8 .*byte 0xff.*save the file as UTF-8")


def test_a_header_that_is_not_utf8_is_line_1(ref):
    edit(ref, "accounts.csv", "tax_region", "tax_region_")
    path = ref / "accounts.csv"
    path.write_bytes(path.read_bytes().replace(b"tax_region_", b"tax_r\xe9gion", 1))
    issues = [issue for issue in check_reference(ref) if issue.file == "accounts.csv"]
    assert [issue.location for issue in issues] == ["line 1"]
    assert "not valid UTF-8 (byte 0xe9)" in issues[0].message


def test_cgrates_rows_that_are_not_utf8_are_reported_at_their_line(tmp_path):
    from rating.cgrates.report import Report
    from rating.cgrates.tariff_files import read_tariff_plan

    (tmp_path / "RatingPlans.csv").write_text("#Id,DestinationRatesId,TimingTag,Weight\n"
                                              "RP_1,DR_1,*any,10\n", encoding="utf-8")
    (tmp_path / "RatingProfiles.csv").write_bytes(
        b"#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject\n"
        b'cgrates.org,call,"quoted\nover two lines",2014-01-14T00:00:00Z,RP_1,\n'
        b"cgrates.org,call,10\xff1,2014-01-14T00:00:00Z,RP_1,\n")
    report = Report()
    plan = read_tariff_plan(tmp_path, report)
    assert [(f.where, f.message) for f in report.findings] == [
        ("RatingProfiles.csv:4", "not valid UTF-8 (byte 0xff); save the file as UTF-8; row skipped")]
    assert [profile.subject for profile in plan.rating_profiles] == ["quoted\nover two lines"]
