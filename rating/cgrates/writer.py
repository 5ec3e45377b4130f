"""Write an ``ImportResult`` as a reference-data directory (docs/reference-data.md) and check it loads.

Besides the usual files, ``cgrates-import.json`` records where everything came from: options, the
zones' prefixes, each plan version's rating plan chains and bands, the CGRateS rate behind every
rate id (``PLAN/vN/service/zone/band``) and the report. ``rate-one`` reads it to rate subjects
without a subscription by the ``*any`` plan and to name CGRateS sources in its breakdown.

The directory is built beside ``out`` and renamed into place only once it loads and compiles, so a
failed import leaves no half-written reference. An existing ``out`` is replaced only when it is an
earlier import (it holds ``cgrates-import.json``) or empty.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from rating.cgrates.importer import ImportResult, PlanOut, subject_kind
from rating.cgrates.versions import RateEntry
from rating.compile import compile_reference
from rating.reference import load_reference
from rating.reference.model import WEEKDAYS
from rating.reference.times import format_instant_us

RECORD = "cgrates-import.json"
ZONE_TABLE = "zones/cgrates.csv"
TAX_REGION = "NONE"
DEFAULT_ACCOUNT = "ANY"
_VERSION_ROUNDING = "{mode: half_up, decimals: 6}"   # every imported rate carries its own rounding


def write_reference(result: ImportResult, out: str | Path) -> Path:
    """Write ``result`` to ``out``; raises ``ValueError`` if ``out`` is another directory or the
    generated data does not load (which would be a bug of the importer, or a loader that needs relaxing)."""
    target = check_target(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _write(result, staging)
        try:
            compile_reference(load_reference(staging))
        except ValueError as error:
            raise ValueError(f"the reference data generated from {result.source} does not load:\n{error}") from None
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_target(out: str | Path) -> Path:
    """``out`` as a Path; ``ValueError`` if it exists and is neither empty nor an earlier import."""
    target = Path(out)
    if target.exists() and not (target / RECORD).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"--out {target} exists and is not an earlier import (no {RECORD}); choose a new directory")
    return target


def rate_id(plan_id: str, version: int, rate: RateEntry) -> str:
    """The id rating gives this rate (rating.compile)."""
    return f"{plan_id}/v{version}/{rate.service}/{rate.zone}/{rate.band}"


def _write(result: ImportResult, root: Path) -> None:
    options = result.options
    for folder in ("plans", "zones", "calendars"):
        (root / folder).mkdir(parents=True)
    _text(root / "operator.yaml", [
        f"# CGRateS tenant {result.tenant}, imported from {result.source} by usage-rating import-cgrates.",
        f"operator: {json.dumps('CGRateS ' + result.tenant)}",
        "home_networks: []",
        f"currencies: {{{options.currency}: {{minor_unit_digits: 2}}}}",
        "invoice_rounding: half_even",
        "tax_rounding: half_even",
    ])
    declared = [(service, unit) for service, unit in result.units.items() if service not in ("voice", "sms", "data")]
    if declared:
        _text(root / "usage_types.yaml", [
            "# CGRateS categories other than call, sms and data, each a usage type (docs/cgrates.md). Events",
            "# zone by their destination when they have one, else HOME (CGRateS's *any destination).",
            "usage_types:",
            *(f"  - {{name: {service.upper()}, unit: {unit}, "
              f"{'unit_name: units, ' if unit == 'count' else ''}destination: optional}}" for service, unit in declared)])
    _text(root / ZONE_TABLE, ["prefix,zone", *(f"{prefix},{zone}" for prefix, zone in result.zones.rows)])
    calendars = _write_calendars(result, root)
    for plan in result.plans:
        _text(root / "plans" / f"{plan.plan_id}.yaml", _plan_lines(result, plan, calendars))
    accounts = [s[0] for s in result.subscriptions] + ([DEFAULT_ACCOUNT] if result.default_plan else [])
    _text(root / "accounts.csv", ["account_id,currency,timezone,bill_cycle_day,tax_region",
                                  *(f"{a},{options.currency},{options.timezone},1,{TAX_REGION}" for a in accounts)])
    _text(root / "subscriptions.csv", ["subscriber,subscriber_kind,account_id,plan_id,valid_from,valid_to",
                                       *(f"{m},{subject_kind(m)},{m},{p},{format_instant_us(f)},"
                                         for m, p, f in result.subscriptions)])
    _text(root / "tax_rates.csv", ["tax_region,valid_from,rate,name",
                                   f"{TAX_REGION},2000-01-01T00:00:00Z,0,no tax (CGRateS tariffs carry none)"])
    (root / RECORD).write_text(json.dumps(_record(result, calendars), indent=1) + "\n", encoding="utf-8")


def _write_calendars(result: ImportResult, root: Path) -> dict[tuple[str, ...], str]:
    names: dict[tuple[str, ...], str] = {}
    for plan in result.plans:
        for version in plan.versions:
            layout = version.content.bands
            if not layout.calendar or layout.calendar in names:
                continue
            tags = sorted({b for r in layout.rules if r.holiday for b in layout.members[r.band]})
            base = "_".join(tags)[:60] or "HOLIDAYS"
            name, n = f"calendars/{base}.csv", 1
            while name in names.values():
                n += 1
                name = f"calendars/{base}_{n}.csv"
            names[layout.calendar] = name
            _text(root / name, ["date,description", *(f"{d},CGRateS timing {' '.join(tags)}" for d in layout.calendar)])
    return names


def _plan_lines(result: ImportResult, plan: PlanOut, calendars: dict) -> list[str]:
    subjects = ", ".join(plan.subjects) if plan.subjects else "subjects without a rating profile (*any)"
    lines = [
        f"# Imported from the CGRateS tariff plan {result.source} (tenant {result.tenant}) by usage-rating "
        f"import-cgrates, {result.options.arithmetic} arithmetic.",
        f"# Subjects: {subjects}. Each rate names the CGRateS rate it reproduces.",
        f"plan_id: {json.dumps(plan.plan_id)}",
        f"name: {json.dumps(f'CGRateS {result.tenant}: {subjects}')}",
        f"currency: {result.options.currency}",
        f"timezone: {json.dumps(result.options.timezone)}",
        "# Destinations are matched as given: no country code, no prefixes to strip (a leading + is dropped).",
        'numbering: {country_code: "", international_prefix: "", trunk_prefix: ""}',
        "versions:",
    ]
    for version in plan.versions:
        content = version.content
        chains = "; ".join(f"{service}: {' then '.join(chain) or 'none'}" for service, chain in version.chains.items())
        lines += [f"  # rating plans tried in order — {chains}",
                  f"  - version: {version.version}",
                  f"    valid_from: {json.dumps(format_instant_us(version.valid_from_us))}"]
        if version.valid_to_us is not None:
            lines.append(f"    valid_to: {json.dumps(format_instant_us(version.valid_to_us))}")
        lines.append(f"    zone_table: {ZONE_TABLE}")
        if content.bands.calendar:
            lines.append(f"    holiday_calendar: {calendars[content.bands.calendar]}")
        lines += [f"    rounding: {_VERSION_ROUNDING}", "    zero_duration: free", "    bands:",
                  f"      default: {content.bands.default}"]
        if content.bands.rules:
            lines.append("      rules:")
        for rule in content.bands.rules:
            when = "holiday: true" if rule.holiday else f"days: [{', '.join(WEEKDAYS[d] for d in rule.days)}]"
            if rule.holiday and len(rule.days) < len(WEEKDAYS):
                when += f", days: [{', '.join(WEEKDAYS[d] for d in rule.days)}]"
            if rule.zones is not None:
                when += f", zones: [{', '.join(rule.zones)}]"
            lines.append(f'        - {{band: {rule.band}, {when}, from: "{_hhmm(rule.from_minute)}", '
                         f'to: "{_hhmm(rule.to_minute)}"}}')
        lines.append("    rates:")
        for rate in content.rates:
            lines += _rate_lines(rate)
    return lines


def _rate_lines(rate: RateEntry) -> list[str]:
    spec = rate.spec
    lines = [f"      # {rate.chosen.describe()}",
             f"      - service: {rate.service}",
             f"        zone: {rate.zone}",
             f"        band: {json.dumps(rate.band)}",
             f"        connect_fee: {json.dumps(spec.connect_fee)}"]
    if spec.maximum_charge is not None:
        lines.append(f"        maximum_charge: {json.dumps(spec.maximum_charge)}")
    if spec.increment_rounding is not None:
        mode, decimals = spec.increment_rounding
        lines.append(f"        increment_rounding: {{mode: {mode}, decimals: {decimals}}}")
    lines += [f"        rounding: {{mode: {spec.rounding[0]}, decimals: {spec.rounding[1]}}}", "        steps:"]
    lines += [f'          - {{from: {s.from_units}, price: "{s.price}", per: {s.per_units}, '
              f'increment: {s.increment_units}}}' for s in spec.steps]
    return lines


def _record(result: ImportResult, calendars: dict) -> dict:
    options = result.options
    return {
        "source": str(result.source),
        "tenant": result.tenant,
        "categories": result.categories,
        "arithmetic": options.arithmetic,
        "currency": options.currency,
        "timezone": options.timezone,
        "default_plan": result.default_plan,
        "default_account": DEFAULT_ACCOUNT if result.default_plan else None,
        "zones": {zone: {"prefixes": list(result.zones.prefixes.get(zone, ())),
                         "destinations": [list(level) for level in chain]}
                  for zone, chain in sorted(result.zones.chains.items())},
        "plans": {plan.plan_id: {
            "subjects": list(plan.subjects),
            "versions": [{
                "version": v.version,
                "valid_from": format_instant_us(v.valid_from_us),
                "valid_to": None if v.valid_to_us is None else format_instant_us(v.valid_to_us),
                "rating_plans": {service: list(chain) for service, chain in v.chains.items()},
                "bands": {band: list(members) for band, members in v.content.bands.members.items()},
                "holiday_calendar": calendars.get(v.content.bands.calendar),
            } for v in plan.versions]} for plan in result.plans},
        "rates": {rate_id(plan.plan_id, v.version, r): {"cgrates": r.chosen.describe(), "rates": r.spec.source}
                  for plan in result.plans for v in plan.versions for r in v.content.rates},
        "report": result.report.to_json(),
    }


def _text(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
