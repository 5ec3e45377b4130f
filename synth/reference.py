"""Writes the reference-data directory (docs/reference-data.md) of the generated operator."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import polars as pl
import yaml

from synth import networks, tariffs
from synth.calendars import holiday_rows
from synth.numbering import HOME_COUNTRIES, zone_table
from synth.population import Population

OPERATOR = {
    "operator": "Demo Mobile",
    "home_networks": [networks.HOME_NETWORKS[iso] for iso in HOME_COUNTRIES],
    "currencies": {"EUR": {"minor_unit_digits": 2}, "GBP": {"minor_unit_digits": 2}, "USD": {"minor_unit_digits": 2}},
    "invoice_rounding": "half_even",
    "tax_rounding": "half_even",
}
TAX_RATES = (
    ("DE", "2007-01-01T00:00:00+01:00", "0.19", "USt 19%"),
    ("DE", "2020-07-01T00:00:00+02:00", "0.16", "USt 16% (temporary reduction)"),
    ("DE", "2021-01-01T00:00:00+01:00", "0.19", "USt 19%"),
    ("GB", "2011-01-04T00:00:00Z", "0.2", "VAT 20%"),
    ("US", "2015-01-01T00:00:00-05:00", "0.0625", "Telecommunications sales tax"),
)


class _Dumper(yaml.SafeDumper):
    """Safe YAML as the docs write it: instants as plain timestamps, and strings that would read as
    something else (money, times of day, ``*``, MCC+MNC digits) in double quotes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain_tag = dumper.resolve(yaml.ScalarNode, value, (True, False))
    needs_quotes = plain_tag != "tag:yaml.org,2002:str" or value == "*" or ":" in value
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if needs_quotes else None)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(
    tariffs.Instant, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:timestamp", str(value)))


def _write_yaml(path: Path, document: dict) -> None:
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True,
                     width=120)
    path.write_text(text, encoding="utf-8")


def _write_csv(path: Path, header: tuple[str, ...], rows) -> int:
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_reference(root: Path, population: Population, start: dt.date, days: int) -> dict:
    """Write every reference file under ``root``; return a summary for the manifest."""
    for sub in ("plans", "zones", "roaming", "calendars"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_yaml(root / "operator.yaml", OPERATOR)
    _write_yaml(root / "usage_types.yaml", tariffs.USAGE_TYPES)
    documents = tariffs.plan_documents(start, days)
    for document in documents:
        _write_yaml(root / "plans" / f"{document['plan_id']}.yaml", document)
    zone_rows, roaming_rows, holiday_count = {}, {}, {}
    end = start + dt.timedelta(days=days)
    for iso in HOME_COUNTRIES:
        zone_rows[tariffs.ZONE_TABLES[iso]] = _write_csv(root / tariffs.ZONE_TABLES[iso], ("prefix", "zone"),
                                                         zone_table(iso))
        roaming_rows[tariffs.ROAMING_TABLES[iso]] = _write_csv(
            root / tariffs.ROAMING_TABLES[iso], ("prefix", "zone"), networks.roaming_table(iso))
        holiday_count[tariffs.CALENDARS[iso]] = _write_csv(
            root / tariffs.CALENDARS[iso], ("date", "description"),
            holiday_rows(iso, start.year - 1, end.year + 1))
    pl.from_arrow(population.accounts).write_csv(root / "accounts.csv")
    pl.from_arrow(population.subscriptions).write_csv(root / "subscriptions.csv")
    _write_csv(root / "tax_rates.csv", ("tax_region", "valid_from", "rate", "name"), TAX_RATES)
    return {
        "dir": root.name,
        "plans": {d["plan_id"]: len(d["versions"]) for d in documents},
        "accounts": population.accounts.num_rows,
        "subscribers": population.size,
        "subscriptions": population.subscriptions.num_rows,
        "plan_changes": population.plan_changes,
        "subscriptions_starting_in_period": population.starters,
        "subscriptions_ending_in_period": population.enders,
        "zone_table_rows": zone_rows,
        "roaming_table_rows": roaming_rows,
        "holiday_dates": holiday_count,
    }
