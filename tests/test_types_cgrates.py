"""CGRateS categories other than call, sms and data import as declared usage types, and rate-one
reproduces CGRateS's costs for them (tests/data/cgrates/types: the project's own plan with the
categories of CGRateS's sample plans; each cost below worked out from its rows, CGRateS arithmetic: each increment's price rounded
half-up to 5 decimals, the event rounded *up to 4 decimals as DestinationRates.csv says)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from rating.cgrates import ImportOptions, convert_tariff_plan
from rating.cgrates.importer import category_type
from rating.engine import RatingEngine
from rating.reference import load_reference
from tests.test_cgrates import cli, rate_one_json

PLAN = Path(__file__).parent / "data" / "cgrates" / "types"

CASES = [
    # call 2001 -> 2002: RT_CALL 0.3 connect + 2 x 60 s at 0.15
    (("--destination", "2002", "--usage", "120s"), "voice", "0.6"),
    # mms (RT_PICTURE): 0.02 per 1 unit, 3 units; 2001 has no mms profile: *any's RP_PICTURE
    (("--destination", "2002", "--usage", "3", "--category", "mms"), "mms", "0.06"),
    # generic (RT_UNIT_1): 1 per unit, no destination: the *any destination rate
    (("--usage", "5", "--category", "generic"), "generic", "5"),
    # data at 1 per byte, a rate the import refused before (1000 bytes)
    (("--usage", "1000", "--category", "data"), "data", "1000"),
    # reseller1 (RT_FLAT): 0.15 per call whatever its duration (connect fee 0.15, rate 0)
    (("--destination", "2002", "--usage", "85s", "--category", "reseller1"), "reseller1", "0.15"),
    # *routes (RT_ROUTE): 0.02 per 60 s in 60 s increments, 90 s -> 2 increments
    (("--destination", "2002", "--usage", "90s", "--category", "*routes"), "routes", "0.04"),
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("types") / "ref"
    assert cli(["import-cgrates", str(PLAN), "--out", str(out)]) == 0   # no --allow-partial: nothing refused
    return out


def test_every_category_imports_as_a_usage_type_without_refusal(imported):
    record = json.loads((imported / "cgrates-import.json").read_text())
    assert record["categories"] == {"call": "voice", "data": "data", "generic": "generic", "mms": "mms",
                                    "reseller1": "reseller1", "*routes": "routes"}
    assert [f for f in record["report"] if f["severity"] == "unsupported"] == []
    types = load_reference(imported).usage_types
    assert {name: (t.unit, t.destination) for name, t in types.items() if name not in ("VOICE", "SMS", "DATA")} == {
        "GENERIC": ("count", "optional"), "MMS": ("count", "optional"), "RESELLER1": ("seconds", "optional"),
        "ROUTES": ("seconds", "optional")}
    RatingEngine.load(str(imported))


@pytest.mark.parametrize("args, service, cost", CASES, ids=[c[1] for c in CASES])
def test_rate_one_reproduces_cgrates_for_each_category(imported, capsys, args, service, cost):
    answer = rate_one_json(capsys, imported, "--subject", "2001", "--start", "2019-03-11T09:00:00Z", *args)
    assert answer["service"] == service
    assert Decimal(answer["charge"]) == Decimal(cost), answer


def test_rate_one_service_names_a_declared_type_and_a_subject_without_profile_uses_any(imported, capsys):
    answer = rate_one_json(capsys, imported, "--subject", "2003", "--destination", "2002", "--start",
                           "2019-03-11T09:00:00Z", "--usage", "2", "--service", "MMS")
    assert (answer["charge"], answer["unit"], answer["rate_id"].split("/")[2]) == ("0.04", "units", "mms")
    with pytest.raises(ValueError, match="usage type 'fax' is not declared"):
        rate_one_json(capsys, imported, "--subject", "2001", "--start", "2019-03-11T09:00:00Z", "--usage", "2",
                      "--service", "fax")


def test_category_names_become_type_names():
    assert [category_type(c) for c in ("call", "sms", "data", "mms", "generic", "reseller1", "Standard", "free",
                                       "*routes", "custom-charger", "plan_fee")] == [
        "voice", "sms", "data", "mms", "generic", "reseller1", "standard", "free", "routes", "custom_charger",
        "plan_fee_"]


def test_category_option_still_overrides_the_type(tmp_path):
    result = convert_tariff_plan(PLAN, ImportOptions(categories=(("call", "voice"), ("generic", "API_CALLS"))))
    assert result.categories == {"call": "voice", "generic": "api_calls"}
    assert result.units == {"voice": "seconds", "api_calls": "count"}
    out = tmp_path / "ref"
    assert cli(["import-cgrates", str(PLAN), "--out", str(out), "--category", "call", "--category",
                "mms=MMS_MESSAGES"]) == 0
    assert set(load_reference(out).usage_types) == {"VOICE", "SMS", "DATA", "MMS_MESSAGES"}
    with pytest.raises(ValueError, match="two categories to one usage type"):
        ImportOptions(categories=(("mms", "x"), ("generic", "X")))
