"""usage_types.yaml -> the declared usage types (``UsageType``), the built-in VOICE, SMS and DATA
included (format: docs/reference-data.md, "Usage types").

The file is optional: without it the operator rates the three built-in types. It may restate a
built-in type (to give it a default increment, a rounding or another largest event) but not change
its unit.
"""

from __future__ import annotations

import re
from pathlib import Path

from rating.reference import plan_rates
from rating.reference import yaml_fields as f
from rating.reference.issues import IssueLog
from rating.reference.model import (
    DEFAULT_MAX_UNITS, DESTINATIONS, MAX_UNITS_LIMIT, UNITS, UsageType, builtin_usage_types)

USAGE_TYPES = "usage_types.yaml"
_TYPE_FIELDS = ("name", "unit", "unit_name", "destination", "increment", "rounding", "max_units")
_TYPE_NAME = re.compile(r"[A-Z0-9_]+")
_RESERVED = ("PLAN_FEE",)   # charge lines use it as a kind beside the usage types (rating/rerate)
_UNIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ /.-]{0,31}")


def read_usage_types(root: Path, log: IssueLog) -> dict[str, UsageType]:
    """Name -> type: the built-in ones, restated or not, and the declared others. A file with
    issues logs them and gives the built-in types plus the types it could read."""
    types = builtin_usage_types()
    if not (root / USAGE_TYPES).is_file():
        return types
    opened = f.open_yaml(root, USAGE_TYPES, log)
    if opened is None:
        return types
    reader, data = opened
    top = reader.mapping(data, (), ("usage_types",))
    first: dict[str, int] = {}
    for index, raw in enumerate((reader.sequence(top, (), "usage_types") or ()) if top is not None else ()):
        declared = _read_type(reader, raw, ("usage_types", index))
        if declared is None:
            continue
        if declared.name in first:
            reader.issue(("usage_types", index, "name"), f"usage type {declared.name} is declared twice (also "
                                                         f"usage_types[{first[declared.name]}]); declare it once")
            continue
        first[declared.name] = index
        builtin = types.get(declared.name)
        if builtin is not None and declared.unit != builtin.unit:
            reader.issue(("usage_types", index, "unit"),
                         f"{declared.name} is built in with unit {builtin.unit}; a restatement may not change "
                         f"it: write unit: {builtin.unit} (or declare a new type under another name)")
            continue
        types[declared.name] = declared
    reader.finish()
    return types


def _read_type(reader: f.FieldReader, raw: object, here: tuple) -> UsageType | None:
    spec = reader.mapping(raw, here, _TYPE_FIELDS)
    if spec is None:
        return None
    name = reader.field(spec, here, "name", f.text(_TYPE_NAME, "a name of capital letters, digits and _ such "
                                                               "as MMS or API_CALLS"))
    if name in _RESERVED:
        reader.issue(here + ("name",), f"{name} names plan fees on charge lines; choose another name")
        name = None
    unit = reader.field(spec, here, "unit", f.choice(UNITS))
    unit_name = reader.field(spec, here, "unit_name", f.text(_UNIT_NAME, "a short unit name such as calls or "
                                                                         "kWh"), default=None)
    if unit == "count" and unit_name is None and spec.get("unit_name") is None:
        reader.issue(here + ("unit_name",), "a count unit needs a name; add e.g. unit_name: calls")
    if unit is not None and unit != "count" and spec.get("unit_name") is not None:
        reader.issue(here + ("unit_name",), f"unit_name names a count unit; remove it (unit {unit} is named "
                                            f"already) or write unit: count")
    default_destination = "required" if unit in ("seconds", "messages") else "none"
    destination = reader.field(spec, here, "destination", f.choice(DESTINATIONS), default=default_destination)
    increment = reader.field(spec, here, "increment", f.integer(1, MAX_UNITS_LIMIT), default=None)
    rounding = plan_rates.read_rounding(reader, spec, here, "rounding", required=False)
    max_units = reader.field(spec, here, "max_units", f.integer(1, MAX_UNITS_LIMIT),
                             default=DEFAULT_MAX_UNITS.get(unit, 1))
    if None in (name, unit, destination, max_units) or (spec.get("increment") is not None and increment is None):
        return None
    if spec.get("rounding") is not None and rounding is None:
        return None
    return UsageType(name=name, unit=unit, destination=destination, max_units=max_units, unit_name=unit_name,
                     increment=increment, rounding=rounding)
