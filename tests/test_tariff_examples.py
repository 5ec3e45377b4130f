"""The worked examples of docs/tariffs.md, read from the page itself: the doc cannot drift."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.usage_rows import usage_row
from tests.doc_tables import marked_table, rate_examples

REFERENCE = Path(__file__).parent / "data" / "reference_examples"


def _examples() -> list[dict]:
    return marked_table("examples")


EXAMPLES = _examples()


def _row(index: int, example: dict) -> dict:
    service = example["service"]
    units = int(example["units"])
    fields = dict(record_id=example["id"], service=service, served_msisdn=example["msisdn"],
                  start_time=example["start"], other_party=example["other party"] or None,
                  visited_network=example["visited"] or None)
    if service == "VOICE":
        fields["duration_s"] = units
    elif service == "SMS":
        fields["message_count"] = units
    else:
        fields["bytes_down"] = units
    return usage_row(index, **fields)


@pytest.fixture(scope="module")
def rated_examples():
    rated, rejected, twin = rate_examples(REFERENCE, [_row(i, e) for i, e in enumerate(EXAMPLES)])
    assert not rejected, rejected
    return rated, twin


def test_the_page_has_every_example_the_issue_asks_for():
    assert len(EXAMPLES) >= 14
    assert len({e["id"] for e in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_worked_example(example, rated_examples):
    kernel, twin = rated_examples
    event = kernel[example["id"]]
    expected_micros = int(Decimal(example["charge"]) * 1_000_000)
    assert event["charge_micros"] == expected_micros, example["working"]
    assert event["charged_units"] == int(example["charged units"])
    assert twin[example["id"]]["charge_micros"] == expected_micros  # the twin agrees with the page too


LINEAGE = {
    "E1": dict(zone="NATIONAL", band="PEAK", band_split=False, connect_fee_micros=50_000),
    "E5": dict(band="PEAK", band_split=True, connect_fee_micros=50_000),
    "E6": dict(band="NIGHT", band_split=True, connect_fee_micros=0),
    "E7": dict(band="HOLIDAY", band_split=False),
    "E8": dict(zone="ROAM_EU", destination_e164="4930123456"),
    "E3": dict(zone="UK", destination_e164="441234567890"),
    "E11": dict(rounding_nanos=-333),
    "E14": dict(zone="HOME", tier=0),
    "E15": dict(tier=1),
    "E16": dict(free_units=48, allowance_units=[{"allowance": "MOBILE_100S", "units": 48}]),
    "E17": dict(free_units=48, allowance_units=[{"allowance": "MOBILE_100S", "units": 48}]),
    "E18": dict(free_units=48, rate_id="EXAMPLE_BUNDLE/v1/voice/MOBILE/*"),
}


@pytest.mark.parametrize("example_id", sorted(LINEAGE))
def test_worked_example_lineage(example_id, rated_examples):
    kernel, _ = rated_examples
    event = kernel[example_id]
    assert {k: event[k] for k in LINEAGE[example_id]} == LINEAGE[example_id]
