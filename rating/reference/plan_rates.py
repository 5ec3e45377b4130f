"""The priced parts of a plan version: rates (steps or tiers), allowances and recurring fees.

Each reader takes the version mapping and its field path, records issues through the
:class:`FieldReader` and returns model objects (with ``None`` where a value was bad; the loader
only hands out plans without issues).
"""

from __future__ import annotations

from rating.reference import yaml_fields as f
from rating.reference.model import (
    ANY, Allowance, RecurringFee, Rate, Rounding, RoundingMode, Step, TierLevel, Tiers, UsageType,
    builtin_usage_types)
from rating.reference.model import POOL_ACCOUNT, POOL_SUBSCRIPTION, POOLS
from rating.reference.yaml_doc import Path_
from rating.reference.zone_tables import NAME, NAME_EXPECTED

_RATE_FIELDS = ("service", "zone", "band", "connect_fee", "minimum_charge", "maximum_charge",
                "increment_rounding", "rounding", "steps", "tiers")
_ROUNDING_MODES = tuple(mode.value for mode in RoundingMode)
_MAX_LISTED = 30


def listing(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def name_in(known: frozenset[str] | None, what: str, source: str) -> f.Parser:
    """Parser for a zone or band name: ``*`` or a NAME, and one of ``known`` when that is known."""
    def parse(value: object) -> str:
        if value == ANY:
            return ANY
        if not isinstance(value, str) or NAME.fullmatch(value) is None:
            raise ValueError(f"expected {NAME_EXPECTED} or \"*\", got {f.describe(value)}")
        if known is not None and value not in known:
            raise ValueError(f"{what} {value!r} is not in {source}; expected one of "
                             f"{listing(known)} or \"*\"")
        return value
    return parse


def usage_type_in(types: dict[str, UsageType]) -> f.Parser:
    """Parser for a rate's or allowance's ``service``: a declared usage type, in any case
    (``voice`` and ``VOICE`` are one type); gives the lower-case form rates and rate ids use."""
    def parse(value: object) -> str:
        if isinstance(value, str) and value.upper() in types:
            return value.lower()
        raise ValueError(f"expected a usage type: one of {listing(t.lower() for t in types)} (declare others in "
                         f"usage_types.yaml), got {f.describe(value)}")
    return parse


def read_rounding(reader: f.FieldReader, parent: dict, path: Path_, key: str, *,
                  required: bool) -> Rounding | None:
    raw = parent.get(key)
    if raw is None:
        if required:
            reader.issue(path + (key,), f"required field {key!r} is missing or null; add e.g. "
                                        f"{key}: {{mode: half_up, decimals: 6}}")
        return None
    here = path + (key,)
    spec = reader.mapping(raw, here, ("mode", "decimals"))
    if spec is None:
        return None
    mode = reader.field(spec, here, "mode", f.choice(_ROUNDING_MODES))
    decimals = reader.field(spec, here, "decimals", f.integer(0, 6), default=6)
    if mode is None or decimals is None:
        return None
    return Rounding(RoundingMode(mode), decimals)


def read_rates(reader: f.FieldReader, version: dict, path: Path_, *,
               zones: frozenset[str] | None, zone_source: str,
               bands: frozenset[str] | None, usage_types: dict[str, UsageType] | None = None
               ) -> tuple[Rate, ...]:
    types = builtin_usage_types() if usage_types is None else usage_types
    zone_parse = name_in(zones, "zone", zone_source)
    band_parse = name_in(bands, "band", "the version's bands (default or a rule's band)")
    rates = []
    first_index: dict[tuple, int] = {}
    for index, raw in enumerate(reader.sequence(version, path, "rates") or ()):
        here = path + ("rates", index)
        rate = _read_rate(reader, raw, here, zone_parse, band_parse, types)
        if rate is None:
            continue
        if None not in rate.key:
            if rate.key in first_index:
                reader.issue(here, f"duplicate rate for (service, zone, band) = "
                                   f"({', '.join(rate.key)}), already given by "
                                   f"rates[{first_index[rate.key]}]; keep one")
            else:
                first_index[rate.key] = index
        rates.append(rate)
    return tuple(rates)


def _read_rate(reader: f.FieldReader, raw: object, here: Path_, zone_parse: f.Parser,
               band_parse: f.Parser, types: dict[str, UsageType]) -> Rate | None:
    spec = reader.mapping(raw, here, _RATE_FIELDS)
    if spec is None:
        return None
    service = reader.field(spec, here, "service", usage_type_in(types))
    default_increment = None if service is None else types[service.upper()].increment
    zone = reader.field(spec, here, "zone", zone_parse)
    band = reader.field(spec, here, "band", band_parse)
    connect_fee = reader.field(spec, here, "connect_fee", f.price, default=0)
    minimum = reader.field(spec, here, "minimum_charge", f.price, default=None)
    maximum = reader.field(spec, here, "maximum_charge", f.price, default=None)
    if minimum is not None and maximum is not None and minimum > maximum:
        reader.issue(here + ("minimum_charge",),
                     f"minimum_charge {spec['minimum_charge']} is greater than maximum_charge "
                     f"{spec['maximum_charge']}; the minimum must not exceed the maximum")
    increment_rounding = read_rounding(reader, spec, here, "increment_rounding", required=False)
    rounding = read_rounding(reader, spec, here, "rounding", required=False)
    has_steps, has_tiers = spec.get("steps") is not None, spec.get("tiers") is not None
    if has_steps and has_tiers:
        reader.issue(here, "a rate has either steps (priced per event) or tiers (graduated over "
                           "the cycle), not both; remove one")
    elif not has_steps and not has_tiers:
        reader.issue(here, "a rate needs steps (priced per event) or tiers (graduated over the "
                           "cycle); add e.g. steps: [{from: 0, price: \"0.10\", per: 60, "
                           "increment: 60}]")
    steps = _read_steps(reader, spec, here, default_increment) if has_steps else ()
    tiers = _read_tiers(reader, spec["tiers"], here + ("tiers",), default_increment) if has_tiers else None
    return Rate(service=service, zone=zone, band=band, connect_fee_micros=connect_fee,
                steps=steps, tiers=tiers, minimum_micros=minimum, maximum_micros=maximum,
                increment_rounding=increment_rounding, rounding=rounding)


def _increment(default: int | None) -> object:
    """The default of a step's or tier's ``increment``: the usage type's, else required."""
    return f.MISSING if default is None else default


def _read_steps(reader: f.FieldReader, rate: dict, path: Path_, default_increment: int | None
                ) -> tuple[Step, ...]:
    steps = []
    for index, raw in enumerate(reader.sequence(rate, path, "steps") or ()):
        here = path + ("steps", index)
        spec = reader.mapping(raw, here, ("from", "price", "per", "increment"))
        if spec is None:
            continue
        step = Step(from_units=reader.field(spec, here, "from", f.integer(0)),
                    price_micros=reader.field(spec, here, "price", f.price),
                    per_units=reader.field(spec, here, "per", f.integer(1)),
                    increment_units=reader.field(spec, here, "increment", f.integer(1),
                                                 default=_increment(default_increment)))
        if index == 0 and step.from_units not in (None, 0):
            reader.issue(here + ("from",), f"the first step must start at from: 0 (steps are "
                                           f"measured from the start of the event), got "
                                           f"{step.from_units}")
        previous = steps[-1] if steps else None
        if previous is not None and None not in (previous.from_units, step.from_units):
            length = step.from_units - previous.from_units
            if length <= 0:
                reader.issue(here + ("from",),
                             f"steps must have strictly increasing 'from': steps[{index - 1}] "
                             f"starts at {previous.from_units}, this one at {step.from_units}")
            elif previous.increment_units is not None and length % previous.increment_units:
                reader.issue(path + ("steps", index - 1, "increment"),
                             f"this step covers {length} units (from {previous.from_units} to "
                             f"{step.from_units}), not a whole number of its "
                             f"{previous.increment_units}-unit increments, so an increment would "
                             f"straddle the next step; make the next step start at a multiple "
                             f"of {previous.increment_units}")
        steps.append(step)
    return tuple(steps)


def _read_tiers(reader: f.FieldReader, raw: object, here: Path_, default_increment: int | None) -> Tiers | None:
    spec = reader.mapping(raw, here, ("group", "increment", "levels"))
    if spec is None:
        return None
    group = reader.field(spec, here, "group", f.text(NAME, NAME_EXPECTED))
    increment = reader.field(spec, here, "increment", f.integer(1), default=_increment(default_increment))
    raw_levels = reader.sequence(spec, here, "levels") or ()
    levels = []
    for index, raw_level in enumerate(raw_levels):
        level_path = here + ("levels", index)
        level = reader.mapping(raw_level, level_path, ("up_to", "price", "per"))
        if level is None:
            continue
        up_to = reader.field(level, level_path, "up_to", f.integer(1), default=None)
        is_last = index == len(raw_levels) - 1
        if is_last and up_to is not None:
            reader.issue(level_path + ("up_to",),
                         "the last level must be open-ended so every unit has a price; remove "
                         "its up_to, or add a final level without one")
        if not is_last and level.get("up_to") is None:
            reader.issue(level_path, "only the last level may be open-ended; add up_to "
                                     "(cumulative units where this level ends)")
        previous = levels[-1].up_to_units if levels else None
        if up_to is not None and previous is not None and up_to <= previous:
            reader.issue(level_path + ("up_to",),
                         f"up_to must be strictly increasing: levels[{index - 1}] ends at "
                         f"{previous}, this one at {up_to}")
        levels.append(TierLevel(up_to_units=up_to,
                                price_micros=reader.field(level, level_path, "price", f.price),
                                per_units=reader.field(level, level_path, "per", f.integer(1))))
    return Tiers(group=group, increment_units=increment, levels=tuple(levels))


def read_allowances(reader: f.FieldReader, version: dict, path: Path_, *,
                    zones: frozenset[str] | None, zone_source: str,
                    usage_types: dict[str, UsageType] | None = None) -> tuple[Allowance, ...]:
    types = builtin_usage_types() if usage_types is None else usage_types
    zone_parse = name_in(zones, "zone", zone_source)
    allowances = []
    first_name: dict[str, int] = {}
    first_order: dict[int, int] = {}
    raw_list = reader.sequence(version, path, "allowances", default=[], non_empty=False)
    for index, raw in enumerate(raw_list or ()):
        here = path + ("allowances", index)
        spec = reader.mapping(raw, here, ("name", "service", "zones", "units", "order", "pool"))
        if spec is None:
            continue
        name = reader.field(spec, here, "name", f.text())
        _unique(reader, first_name, name, index, here + ("name",), "allowance name", "allowances")
        service = reader.field(spec, here, "service", usage_type_in(types))
        zone_names = []
        for zone_index, zone in enumerate(reader.sequence(spec, here, "zones") or ()):
            try:
                zone_names.append(zone_parse(zone))
            except ValueError as exc:
                reader.issue(here + ("zones", zone_index), str(exc))
        if ANY in zone_names and len(zone_names) > 1:
            reader.issue(here + ("zones",), "\"*\" already covers every zone; list it alone")
        pool = reader.field(spec, here, "pool", f.choice(POOLS), default=POOL_SUBSCRIPTION)
        # A pooled allowance may add nothing to the account's pool (a family member's plan draws
        # from the pool without adding to it); a subscription's own allowance of 0 is a mistake.
        units = reader.field(spec, here, "units", f.integer(0))
        if units == 0 and pool != POOL_ACCOUNT:
            reader.issue(here + ("units",),
                         "expected an integer >= 1 for a subscription's own allowance, got 0; only "
                         "a pooled one (pool: account) may add 0 units to its pool")
        order = reader.field(spec, here, "order", f.integer(0))
        _unique(reader, first_order, order, index, here + ("order",), "order", "allowances")
        allowances.append(Allowance(name=name, service=service, zones=tuple(zone_names),
                                    units=units, order=order, pool=pool or POOL_SUBSCRIPTION))
    return tuple(allowances)


def read_recurring_fees(reader: f.FieldReader, version: dict, path: Path_
                        ) -> tuple[RecurringFee, ...]:
    fees = []
    first_name: dict[str, int] = {}
    raw_list = reader.sequence(version, path, "recurring_fees", default=[], non_empty=False)
    for index, raw in enumerate(raw_list or ()):
        here = path + ("recurring_fees", index)
        spec = reader.mapping(raw, here, ("name", "description", "amount"))
        if spec is None:
            continue
        name = reader.field(spec, here, "name", f.text())
        _unique(reader, first_name, name, index, here + ("name",), "fee name", "recurring_fees")
        fees.append(RecurringFee(name=name,
                                 description=reader.field(spec, here, "description", f.text()),
                                 amount_micros=reader.field(spec, here, "amount", f.price)))
    return tuple(fees)


def _unique(reader: f.FieldReader, first: dict, value: object, index: int, here: Path_,
            what: str, list_name: str) -> None:
    if value is None:
        return
    if value in first:
        reader.issue(here, f"duplicate {what} {value!r} (also {list_name}[{first[value]}]); "
                           f"each must be unique within a version")
    else:
        first[value] = index


def check_allowance_pools(plans: dict, log) -> None:
    """An allowance name is pooled (``pool: account``) everywhere it is listed or nowhere: a name
    is one balance, owned by the account or by each subscription, whatever plan lists it. Adds one
    issue (``log``: an ``IssueLog``) per listing that disagrees with the first one met (plans by id,
    versions and allowances in file order). ``plans`` maps plan id -> Plan or None (unreadable)."""
    first: dict[str, tuple[str, str, str]] = {}   # name -> (pool, file, field path)
    for plan_id in sorted(plans):
        plan = plans[plan_id]
        if plan is None:
            continue
        file = f"plans/{plan_id}.yaml"
        for vi, version in enumerate(plan.versions):
            for ai, allowance in enumerate(version.allowances):
                if allowance.name is None or allowance.pool is None:
                    continue
                where = f"versions[{vi}].allowances[{ai}].pool"
                seen = first.setdefault(allowance.name, (allowance.pool, file, where))
                if seen[0] != allowance.pool:
                    log.add(file, where,
                            f"allowance {allowance.name!r} has pool: {allowance.pool} here but "
                            f"pool: {seen[0]} in {seen[1]} {seen[2]}; one allowance name is one "
                            f"balance, owned by the account (pool: account) or by each "
                            f"subscription (pool: subscription, the default) everywhere: give "
                            f"both the same pool or rename one")
