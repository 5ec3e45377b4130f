"""plans/PLAN_ID.yaml -> :class:`Plan`: identity, numbering, effective-dated versions and bands.

Rates, allowances and fees are read by :mod:`rating.reference.plan_rates`. References to zone
tables, roaming tables and calendars are checked against the files already loaded (given in a
:class:`PlanContext`), so a rate's zone is checked against the table its version names.
"""

from __future__ import annotations

import dataclasses
import re

from rating.reference import plan_rates, times
from rating.reference import yaml_fields as f
from rating.reference.model import (ANY, HOME_ZONE, WEEKDAYS, BandRule, Numbering, Plan, PlanVersion, UsageType,
                                    builtin_usage_types)
from rating.reference.yaml_doc import Path_, format_path
from rating.reference.zone_tables import NAME, NAME_EXPECTED

_PLAN_FIELDS = ("plan_id", "name", "currency", "timezone", "numbering", "versions")
_VERSION_FIELDS = ("version", "valid_from", "valid_to", "zone_table", "roaming_table",
                   "holiday_calendar", "rounding", "zero_duration", "bands", "rates",
                   "allowances", "recurring_fees")
_RULE_FIELDS = ("band", "holiday", "days", "zones", "from", "to")
_COUNTRY_CODE = re.compile(r"[1-9][0-9]{0,2}")
_DIGITS = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a plan may refer to; ``None`` zone sets mean "file unreadable: skip zone checks"."""
    currencies: frozenset[str] | None               # None: operator.yaml unusable
    zone_tables: dict[str, frozenset[str] | None]   # relative path -> zone names
    roaming_tables: dict[str, frozenset[str] | None]
    calendars: frozenset[str]                       # relative paths
    usage_types: dict[str, UsageType] = dataclasses.field(default_factory=builtin_usage_types)  # usage_types.yaml


def read_plan(reader: f.FieldReader, data: object, file_plan_id: str, ctx: PlanContext
              ) -> Plan | None:
    """Build the plan in ``data`` (parsed from plans/``file_plan_id``.yaml)."""
    top = reader.mapping(data, (), _PLAN_FIELDS)
    if top is None:
        return None
    plan_id = reader.field(top, (), "plan_id", f.text())
    if plan_id is not None and plan_id != file_plan_id:
        reader.issue(("plan_id",), f"plan_id {plan_id!r} must equal the file name without .yaml "
                                   f"({file_plan_id!r}); rename the file or fix plan_id")
    currency = reader.field(top, (), "currency", _declared_currency(ctx.currencies))
    versions = [_read_version(reader, raw, ("versions", index), ctx)
                for index, raw in enumerate(reader.sequence(top, (), "versions") or ())]
    return Plan(plan_id=plan_id,
                name=reader.field(top, (), "name", f.text()),
                currency=currency,
                timezone=reader.field(top, (), "timezone", f.timezone),
                numbering=_read_numbering(reader, top),
                versions=_check_versions(reader, versions))


def _declared_currency(currencies: frozenset[str] | None) -> f.Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a currency code such as EUR, got {f.describe(value)}")
        if currencies is not None and value not in currencies:
            raise ValueError(f"currency {value!r} is not declared in operator.yaml (declared: "
                             f"{plan_rates.listing(currencies)}); declare it there or fix it here")
        return value
    return parse


def _read_numbering(reader: f.FieldReader, top: dict) -> Numbering | None:
    raw = top.get("numbering")
    if raw is None:
        reader.issue(("numbering",), "required field 'numbering' is missing or null; add "
                                     "country_code, international_prefix and trunk_prefix")
        return None
    here = ("numbering",)
    spec = reader.mapping(raw, here, ("country_code", "international_prefix", "trunk_prefix"))
    if spec is None:
        return None
    digits = "a quoted string of digits such as \"00\""
    if all(spec.get(name) == "" for name in ("country_code", "international_prefix", "trunk_prefix")):
        # Numbers as given: destinations are zoned exactly as dialled (e.g. imported CGRateS plans).
        return Numbering(country_code="", international_prefix="", trunk_prefix="")
    trunk = spec.get("trunk_prefix")
    return Numbering(
        country_code=reader.field(spec, here, "country_code", f.text(
            _COUNTRY_CODE, "a quoted country calling code of 1 to 3 digits such as \"49\" (all three "
                           "numbering fields \"\" to zone numbers as dialled)")),
        international_prefix=reader.field(spec, here, "international_prefix",
                                          f.text(_DIGITS, digits)),
        trunk_prefix="" if trunk == "" else reader.field(
            spec, here, "trunk_prefix", f.text(_DIGITS, digits + " (or \"\" for none)")),
    )


def _reference(known, what: str, folder: str) -> f.Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in known:
            available = plan_rates.listing(known) if known else "none"
            shown = repr(value) if isinstance(value, str) else f.describe(value)
            raise ValueError(f"{what} {shown} not found; expected a path relative "
                             f"to the reference directory such as {folder}<name>.csv "
                             f"(available: {available})")
        return value
    return parse


def _read_version(reader: f.FieldReader, raw: object, here: Path_, ctx: PlanContext
                  ) -> tuple[Path_, PlanVersion, bool] | None:
    spec = reader.mapping(raw, here, _VERSION_FIELDS)
    if spec is None:
        return None
    valid_from = reader.field(spec, here, "valid_from", f.instant)
    valid_to = reader.field(spec, here, "valid_to", f.instant, default=None)
    if None not in (valid_from, valid_to) and valid_to <= valid_from:
        reader.issue(here + ("valid_to",), f"valid_to {times.format_instant_us(valid_to)} must be "
                                           f"after valid_from "
                                           f"{times.format_instant_us(valid_from)}")
    zone_table = reader.field(spec, here, "zone_table",
                              _reference(ctx.zone_tables, "zone table", "zones/"))
    roaming_table = reader.field(spec, here, "roaming_table",
                                 _reference(ctx.roaming_tables, "roaming table", "roaming/"),
                                 default=None)
    calendar = reader.field(spec, here, "holiday_calendar",
                            _reference(ctx.calendars, "holiday calendar", "calendars/"),
                            default=None)
    zones, zone_source = _zones(spec, ctx, zone_table, roaming_table)
    default_band, rules = _read_bands(reader, spec, here,
                                      has_calendar=spec.get("holiday_calendar") is not None,
                                      zones=zones, zone_source=zone_source)
    bands = None if default_band is None else frozenset(
        {default_band} | {rule.band for rule in rules if rule.band is not None})
    zero_duration = reader.field(spec, here, "zero_duration", f.choice(("free", "charged")),
                                 default="free")
    version = PlanVersion(
        version=reader.field(spec, here, "version", f.integer(1)),
        valid_from_us=valid_from,
        valid_to_us=valid_to,
        zone_table=zone_table,
        roaming_table=roaming_table,
        holiday_calendar=calendar,
        rounding=plan_rates.read_rounding(reader, spec, here, "rounding", required=True),
        zero_duration_charged=zero_duration == "charged",
        default_band=default_band,
        band_rules=rules,
        rates=plan_rates.read_rates(reader, spec, here, zones=zones, zone_source=zone_source,
                                    bands=bands, usage_types=ctx.usage_types),
        allowances=plan_rates.read_allowances(reader, spec, here, zones=zones,
                                              zone_source=zone_source, usage_types=ctx.usage_types),
        recurring_fees=plan_rates.read_recurring_fees(reader, spec, here),
    )
    # A bad valid_to reads as None ("open"); remember it was given so it causes no overlap noise.
    return here, version, spec.get("valid_to") is not None


def _zones(spec: dict, ctx: PlanContext, zone_table: str | None, roaming_table: str | None
           ) -> tuple[frozenset[str] | None, str]:
    """Zones a rate or allowance of this version may name; ``None`` when not knowable."""
    if zone_table is None or ctx.zone_tables.get(zone_table) is None:
        return None, ""
    zones, source = ctx.zone_tables[zone_table], zone_table
    if spec.get("roaming_table") is not None:
        if roaming_table is None or ctx.roaming_tables.get(roaming_table) is None:
            return None, ""
        zones, source = zones | ctx.roaming_tables[roaming_table], f"{source} or {roaming_table}"
    # HOME is built in: data usage at home has no destination to zone (docs/tariffs.md).
    return zones | {HOME_ZONE}, f"{source} (or the built-in {HOME_ZONE})"


def _read_bands(reader: f.FieldReader, version: dict, path: Path_, *, has_calendar: bool,
                zones: frozenset[str] | None, zone_source: str) -> tuple[str | None, tuple[BandRule, ...]]:
    here = path + ("bands",)
    raw = version.get("bands")
    if raw is None:
        reader.issue(here, "required field 'bands' is missing or null; add e.g. "
                           "bands: {default: ALL}")
        return None, ()
    spec = reader.mapping(raw, here, ("default", "rules"))
    if spec is None:
        return None, ()
    band_name = f.text(NAME, NAME_EXPECTED)
    default = reader.field(spec, here, "default", band_name)
    rules = []
    for index, raw_rule in enumerate(reader.sequence(spec, here, "rules", default=[],
                                                     non_empty=False) or ()):
        rule_path = here + ("rules", index)
        rule = reader.mapping(raw_rule, rule_path, _RULE_FIELDS)
        if rule is None:
            continue
        holiday = reader.field(rule, rule_path, "holiday", f.boolean, default=False)
        if holiday and not has_calendar:
            reader.issue(rule_path + ("holiday",),
                         "a holiday rule needs a holiday calendar; add holiday_calendar: "
                         "calendars/<name>.csv to this version or remove the rule")
        start = reader.field(rule, rule_path, "from", f.start_minute, default=0)
        end = reader.field(rule, rule_path, "to", f.end_minute, default=times.MINUTES_PER_DAY)
        if None not in (start, end) and start >= end:
            reader.issue(rule_path + ("to",),
                         f"'from' {rule['from']} must be before 'to' {rule.get('to', '24:00')}; "
                         f"split a range that crosses midnight into two rules (e.g. 22:00-24:00 "
                         f"and 00:00-06:00)")
        rules.append(BandRule(band=reader.field(rule, rule_path, "band", band_name),
                              days=_read_days(reader, rule, rule_path),
                              from_minute=start, to_minute=end, holiday=bool(holiday),
                              zones=_read_rule_zones(reader, rule, rule_path, holiday=bool(holiday),
                                                     zones=zones, zone_source=zone_source)))
    return default, tuple(rules)


def _read_rule_zones(reader: f.FieldReader, rule: dict, path: Path_, *, holiday: bool,
                     zones: frozenset[str] | None, zone_source: str) -> tuple[str, ...]:
    """The zones a holiday rule applies to (default ``*``: every zone); other rules have none."""
    if rule.get("zones") is None:
        return (ANY,)
    if not holiday:
        reader.issue(path + ("zones",), "zones restrict holiday rules only (the band of an ordinary "
                                        "day is the same for every zone); add holiday: true or "
                                        "remove zones")
        return (ANY,)
    zone_parse = plan_rates.name_in(zones, "zone", zone_source)
    names: list[str] = []
    for index, zone in enumerate(reader.sequence(rule, path, "zones") or ()):
        try:
            name = zone_parse(zone)
        except ValueError as exc:
            reader.issue(path + ("zones", index), str(exc))
            continue
        if name in names:
            reader.issue(path + ("zones", index), f"zone {name} is listed twice; list it once")
        else:
            names.append(name)
    if ANY in names and len(names) > 1:
        reader.issue(path + ("zones",), "\"*\" already covers every zone; list it alone")
    return tuple(names) or (ANY,)


def _read_days(reader: f.FieldReader, rule: dict, path: Path_) -> tuple[int, ...]:
    raw_days = reader.sequence(rule, path, "days", default=list(WEEKDAYS))
    days = []
    for index, day in enumerate(raw_days or ()):
        if day not in WEEKDAYS:
            reader.issue(path + ("days", index), f"expected one of {', '.join(WEEKDAYS)}, got "
                                                 f"{f.describe(day)}")
        elif WEEKDAYS.index(day) in days:
            reader.issue(path + ("days", index), f"day {day} is listed twice; list it once")
        else:
            days.append(WEEKDAYS.index(day))
    return tuple(sorted(days))


def _check_versions(reader: f.FieldReader, parsed: list) -> tuple[PlanVersion, ...]:
    """Unique numbers, sorted by valid_from, no overlap; fills an open valid_to with the next
    version's valid_from. Returns the versions sorted by valid_from."""
    entries = [entry for entry in parsed if entry is not None]
    first_number: dict[int, Path_] = {}
    for path, version, _ in entries:
        if version.version is None:
            continue
        if version.version in first_number:
            reader.issue(path + ("version",),
                         f"version {version.version} is used twice (also "
                         f"{format_path(first_number[version.version])}); number versions uniquely")
        else:
            first_number[version.version] = path
    dated = [entry for entry in entries if entry[1].valid_from_us is not None]
    for (_, before, _), (path, after, _) in zip(dated, dated[1:]):
        if after.valid_from_us < before.valid_from_us:
            reader.issue(path + ("valid_from",),
                         f"versions must be sorted by valid_from: version {after.version} starts "
                         f"at {times.format_instant_us(after.valid_from_us)}, before the version "
                         f"listed above it ({times.format_instant_us(before.valid_from_us)}); "
                         f"reorder them")
    dated.sort(key=lambda entry: entry[1].valid_from_us)
    result = []
    for position, (path, version, valid_to_given) in enumerate(dated):
        following = dated[position + 1][1] if position + 1 < len(dated) else None
        if following is not None:
            start = times.format_instant_us(following.valid_from_us)
            if following.valid_from_us == version.valid_from_us:
                reader.issue(path + ("valid_from",),
                             f"versions {version.version} and {following.version} both start at "
                             f"{start}; their intervals overlap; give each its own valid_from")
            elif version.valid_to_us is not None and version.valid_to_us > following.valid_from_us:
                reader.issue(path + ("valid_to",),
                             f"version {version.version} ends at "
                             f"{times.format_instant_us(version.valid_to_us)}, after version "
                             f"{following.version} starts at {start}; the intervals overlap: end "
                             f"it at {start} or earlier (or drop valid_to: it defaults to the "
                             f"next version's valid_from)")
            elif version.valid_to_us is None and not valid_to_given:
                version = dataclasses.replace(version, valid_to_us=following.valid_from_us)
        result.append(version)
    return tuple(result)
