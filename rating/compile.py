"""Compile loaded reference data into the arrays kernels read (``RatingTables``) and the lookups
the Arrow wrappers use (names, subscriptions, accounts).

Runs once per worker (``DoFn.setup``) or once per library call. Tariffs the kernels cannot rate
exactly (a price whose product with its ``per`` or increment could overflow int64) raise
``ValueError`` here, before any record is read, naming the plan, version and rate; an event whose
own charge would leave the exact range is rejected OVERFLOW when it is rated (docs/tariffs.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math

import numpy as np
import pyarrow as pa

from rating.destinations import DestinationRules, compile_destination_rules
from rating.string_index import StringIndex
from rating.money import round_ratio
from rating.reference.model import (ANY, HOME_ZONE, ReferenceData, Rounding, RoundingMode, UsageType,
                                    ordered_usage_types)
from rating.tables import (DESTINATION_CODES, MAX_ALLOWANCES_PER_EVENT, ROUNDING_CODES, SERVICE_NAMES, UNIT_CODES,
                           RatingTables)
from rating.timezones import stack_zones

_MINUTES_PER_WEEK = 7 * 1440
_MAX_SAFE = 2**62
_MAX_DENOMINATOR = 2**40
# Largest raw units one event may carry per built-in type (voice s, sms messages, data bytes); a
# declared type's is its max_units (rating.reference.model.DEFAULT_MAX_UNITS by unit).
MAX_UNITS = np.array([72 * 3600, 1_000_000, 2**44], np.int64)
_INT64_MAX = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class CompiledReference:
    """Everything rating needs from one reference-data load, ready for kernels and wrappers."""
    tables: RatingTables
    zone_names: tuple[str, ...]
    band_names: tuple[str, ...]
    allowance_names: tuple[str, ...]
    tier_group_names: tuple[str, ...]
    rate_ids: tuple[str, ...]
    plan_ids: tuple[str, ...]
    version_numbers: np.ndarray        # per global version row
    version_plan: np.ndarray           # plan row per version row
    plan_versions: tuple               # PlanVersion per version row
    home_networks: pa.Array            # string
    destinations: DestinationRules     # exact and string-prefix zone rules (non-numeric destinations)
    # enrichment
    subscriber_keys: pa.Array          # identity keys (rating.identity), unique, sorted; index = subscriber row
    subscriber_index: StringIndex      # identity key -> subscriber row, built once
    sub_first: np.ndarray
    sub_count: np.ndarray
    sub_from_us: np.ndarray
    sub_to_us: np.ndarray              # INT64_MAX when open-ended
    sub_account: np.ndarray
    sub_plan: np.ndarray
    sub_by_account: np.ndarray         # subscription rows in account order (stable argsort of sub_account)
    account_ids: tuple[str, ...]
    account_row: dict[str, int]        # account_id -> index in account_ids
    account_tz: np.ndarray
    account_bcd: np.ndarray
    account_currency: tuple[str, ...]
    reference: ReferenceData
    type_names: tuple[str, ...] = SERVICE_NAMES   # usage type names by type code (VOICE, SMS, DATA, MMS, ...)


def _rounding_q(rounding: Rounding) -> int:
    return 10 ** (6 - rounding.decimals)


def _digits(text: str, width: int = 8) -> np.ndarray:
    out = np.zeros(width, np.uint8)
    out[: len(text)] = [ord(c) - 48 for c in text]
    return out


class _TrieBuilder:
    def __init__(self):
        self.children = [[-1] * 10]
        self.zone = [-1]

    def new_root(self) -> int:
        self.children.append([-1] * 10)
        self.zone.append(-1)
        return len(self.zone) - 1

    def add(self, root: int, prefix: str, zone_id: int) -> None:
        node = root
        for ch in prefix:
            d = ord(ch) - 48
            nxt = self.children[node][d]
            if nxt < 0:
                self.children.append([-1] * 10)
                self.zone.append(-1)
                nxt = len(self.zone) - 1
                self.children[node][d] = nxt
            node = nxt
        self.zone[node] = zone_id


def _next_change(bands: np.ndarray, cyclic: bool) -> np.ndarray:
    """Minutes from each minute until the band value changes (to the end when it never does)."""
    n = len(bands)
    out = np.empty(n, np.int32)
    if cyclic:
        if np.all(bands == bands[0]):
            out[:] = n
            return out
        doubled = np.concatenate([bands, bands])
        nxt = np.empty(2 * n, np.int32)
        nxt[-1] = 1
        for i in range(2 * n - 2, -1, -1):
            nxt[i] = 1 if doubled[i + 1] != doubled[i] else nxt[i + 1] + 1
        return nxt[:n].copy()
    out[-1] = 1
    for i in range(n - 2, -1, -1):
        out[i] = 1 if bands[i + 1] != bands[i] else out[i + 1] + 1
    return out


def _day_number(iso_date: str) -> int:
    return (dt.date.fromisoformat(iso_date) - dt.date(1970, 1, 1)).days


def timezone_names(ref: ReferenceData) -> list[str]:
    """Every IANA timezone ``ref`` uses (plans and accounts), sorted: the compiled zone order."""
    return sorted({p.timezone for p in ref.plans.values()} | {a.timezone for a in ref.accounts.values()})


def compile_reference(ref: ReferenceData) -> CompiledReference:
    """Compile ``ref``; raises ``ValueError`` for tariffs that cannot be rated exactly."""
    plan_ids = tuple(sorted(ref.plans))
    tz_names = timezone_names(ref)
    tz_index = {name: i for i, name in enumerate(tz_names)}
    names = _Names.of(ref)
    versions = [(pi, v) for pi, pid in enumerate(plan_ids) for v in ref.plans[pid].versions]
    trie, roots = _tries(ref, names.zone_id)
    builder = _VersionTables(ref, names, roots, len(versions))
    for vi, (pi, ver) in enumerate(versions):
        builder.add(vi, ref.plans[plan_ids[pi]], ver)
    tables = RatingTables(
        **dict(zip(("tz_start", "tz_transitions", "tz_offsets"), stack_zones(tz_names))),
        **_plan_tables(ref, plan_ids, versions, tz_index),
        trie_children=np.array(trie.children, np.int32), trie_zone=np.array(trie.zone, np.int32),
        **builder.tables(), **_type_tables(names.types))
    return CompiledReference(
        tables=tables, zone_names=tuple(names.zones), band_names=tuple(names.bands),
        allowance_names=tuple(names.allowances), tier_group_names=tuple(names.tier_groups),
        rate_ids=tuple(builder.rate_ids), plan_ids=plan_ids, version_numbers=builder.version_numbers,
        version_plan=np.array([pi for pi, _ in versions], np.int64), plan_versions=tuple(v for _, v in versions),
        home_networks=pa.array(sorted(ref.operator.home_networks), pa.string()),
        destinations=compile_destination_rules(ref, [v.zone_table for _, v in versions], names.zone_id),
        **_enrichment_lookups(ref, plan_ids, tz_index), reference=ref,
        type_names=tuple(t.name for t in names.types))


def _type_tables(types: tuple[UsageType, ...]) -> dict:
    """Per usage type code: largest event, unit, destination rule, and whether bands split it."""
    return dict(
        max_units=np.array([t.max_units for t in types], np.int64),
        type_unit=np.array([UNIT_CODES[t.unit] for t in types], np.int64),
        type_destination=np.array([DESTINATION_CODES[t.destination] for t in types], np.int64),
        type_split=np.array([1 if t.unit == "seconds" else 0 for t in types], np.int64))


@dataclasses.dataclass(frozen=True)
class _Names:
    """The global name dictionaries (sorted names and name -> id) kernels see as integer codes."""
    zones: list[str]
    bands: list[str]
    allowances: list[str]
    tier_groups: list[str]
    types: tuple[UsageType, ...]   # by type code

    @classmethod
    def of(cls, ref: ReferenceData) -> "_Names":
        tables = list(ref.zone_tables.values()) + list(ref.roaming_tables.values())
        versions = [v for p in ref.plans.values() for v in p.versions]
        return cls(
            zones=sorted({z for t in tables for _, z in t.prefixes + t.string_prefixes + t.exact} | {HOME_ZONE}),
            bands=sorted({b for v in versions for b in [v.default_band] + [r.band for r in v.band_rules]}),
            allowances=sorted({a.name for v in versions for a in v.allowances}),
            tier_groups=sorted({r.tiers.group for v in versions for r in v.rates if r.tiers is not None}),
            types=ordered_usage_types(ref.usage_types))

    @functools.cached_property
    def type_id(self) -> dict[str, int]:
        """Type code by the lower-case name rates and allowances use (``voice`` 0, ``mms`` 3...)."""
        return {t.service: i for i, t in enumerate(self.types)}

    @functools.cached_property
    def zone_id(self) -> dict[str, int]:
        return {z: i for i, z in enumerate(self.zones)}

    @functools.cached_property
    def band_id(self) -> dict[str, int]:
        return {b: i for i, b in enumerate(self.bands)}

    @functools.cached_property
    def allowance_id(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.allowances)}

    @functools.cached_property
    def tier_id(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.tier_groups)}


def _tries(ref: ReferenceData, zone_id: dict[str, int]) -> tuple[_TrieBuilder, dict[tuple[str, str], int]]:
    """One prefix-trie root per zone table and roaming table, keyed by (kind, table name)."""
    trie = _TrieBuilder()
    roots: dict[tuple[str, str], int] = {}
    for kind, tables in (("zones", ref.zone_tables), ("roaming", ref.roaming_tables)):
        for name, table in sorted(tables.items()):
            root = trie.new_root()
            roots[(kind, name)] = root
            for prefix, zone in table.prefixes:
                trie.add(root, prefix, zone_id[zone])
    return trie, roots


def _plan_tables(ref: ReferenceData, plan_ids: tuple[str, ...], versions: list, tz_index: dict[str, int]) -> dict:
    """Per plan: timezone, its versions' rows, and the numbering plan's prefixes as digits."""
    n_plans = len(plan_ids)
    first = np.zeros(n_plans, np.int64)
    count = np.zeros(n_plans, np.int64)
    for vi, (pi, _) in enumerate(versions):
        if count[pi] == 0:
            first[pi] = vi
        count[pi] += 1
    out = dict(plan_tz=np.array([tz_index[ref.plans[p].timezone] for p in plan_ids], np.int64),
               plan_first_version=first, plan_version_count=count)
    for key, attribute in (("cc", "country_code"), ("intl", "international_prefix"), ("trunk", "trunk_prefix")):
        texts = [getattr(ref.plans[pid].numbering, attribute) for pid in plan_ids]
        digits = np.zeros((n_plans, 8), np.uint8)
        for pi, text in enumerate(texts):
            digits[pi] = _digits(text)
        out[f"num_{key}"] = digits
        out[f"num_{key}_len"] = np.array([len(t) for t in texts], np.int64).reshape(n_plans)
    return out


class _VersionTables:
    """Builds the per-version tables (validity, bands, rates with their steps and tier levels,
    allowances), one ``add`` a version, checking that every version can be rated exactly."""

    def __init__(self, ref: ReferenceData, names: _Names, roots: dict, n_ver: int):
        self.ref, self.names, self.roots = ref, names, roots
        self.n_z, self.n_b = max(len(names.zones), 1), max(len(names.bands), 1)
        self.ver = {key: np.zeros(n_ver, np.int64) for key in (
            "ver_from_us", "ver_to_us", "ver_zero_charged", "ver_hol_first", "ver_hol_count", "ver_allow_first",
            "ver_allow_count")}
        self.ver["ver_zone_root"] = np.full(n_ver, -1, np.int64)
        self.ver["ver_roam_root"] = np.full(n_ver, -1, np.int64)
        self.ver["ver_denominator"] = np.ones(n_ver, np.int64)
        self.week_band = np.zeros((n_ver, _MINUTES_PER_WEEK), np.int16)
        self.week_next = np.zeros((n_ver, _MINUTES_PER_WEEK), np.int32)
        # Holiday weeks, one row per distinct variant (row 0: no holiday rule), shared by versions.
        self.hol_rows: dict[bytes, int] = {}
        self.hol_band: list[np.ndarray] = []
        self.hol_next: list[np.ndarray] = []
        self.hol_variant = np.zeros((n_ver, self.n_z), np.int32)
        self._holiday_variant(np.full(_MINUTES_PER_WEEK, -1, np.int16))
        self.version_numbers = np.zeros(n_ver, np.int64)
        self.rate_index = np.full((max(n_ver, 1), len(names.types), self.n_z, self.n_b), -1, np.int32)
        self.holidays: list[int] = []
        self.rates_rows: list[dict] = []
        self.steps_rows: list[tuple] = []
        self.levels_rows: list[tuple] = []
        self.allow_rows: list[tuple] = []
        self.allow_zone_ok: list[np.ndarray] = []
        self.allow_pooled: list[int] = []
        self.pool_of_name: dict[str, str] = {}   # allowance name -> pool of its first listing
        self.rate_ids: list[str] = []

    def add(self, vi: int, plan, ver) -> None:
        self.version_numbers[vi] = ver.version
        self._validity(vi, plan, ver)
        self._bands(vi, ver)
        self._rates(vi, plan, ver)
        self._allowances(vi, plan, ver)

    def _validity(self, vi: int, plan, ver) -> None:
        """From ``valid_from`` to ``valid_to``, or to the plan's next version, or for ever."""
        self.ver["ver_from_us"][vi] = ver.valid_from_us
        nxt = [v for v in plan.versions if v.valid_from_us > ver.valid_from_us]
        self.ver["ver_to_us"][vi] = ver.valid_to_us if ver.valid_to_us is not None else (
            min(v.valid_from_us for v in nxt) if nxt else _INT64_MAX)
        self.ver["ver_zone_root"][vi] = self.roots[("zones", ver.zone_table)]
        if ver.roaming_table is not None:
            self.ver["ver_roam_root"][vi] = self.roots[("roaming", ver.roaming_table)]
        self.ver["ver_zero_charged"][vi] = 1 if ver.zero_duration_charged else 0

    def _bands(self, vi: int, ver) -> None:
        """The week's minutes to band codes, and per zone a holiday week's minutes to band codes (-1
        where no holiday rule applies): the first matching rule wins."""
        band_id = self.names.band_id
        week = np.full(_MINUTES_PER_WEEK, band_id[ver.default_band], np.int16)
        for rule in reversed(ver.band_rules):
            if not rule.holiday:
                for day in rule.days:
                    week[day * 1440 + rule.from_minute: day * 1440 + rule.to_minute] = band_id[rule.band]
        self.week_band[vi] = week
        self.week_next[vi] = _next_change(week, cyclic=True)
        holiday_rules = [rule for rule in ver.band_rules if rule.holiday]
        # Zones that no holiday rule names share one variant: the rules for every zone.
        named = sorted({self.names.zone_id[z] for rule in holiday_rules for z in rule.zones if z != ANY
                        and z in self.names.zone_id})
        everyone = self._holiday_variant(self._holiday_week(holiday_rules, None))
        self.hol_variant[vi] = everyone
        for z in named:
            self.hol_variant[vi, z] = self._holiday_variant(self._holiday_week(holiday_rules, self.names.zones[z]))
        self.ver["ver_hol_first"][vi] = len(self.holidays)
        if ver.holiday_calendar is not None:
            days = sorted(_day_number(d) for d in self.ref.calendars[ver.holiday_calendar].dates)
            self.holidays.extend(days)
            self.ver["ver_hol_count"][vi] = len(days)

    def _holiday_week(self, rules, zone: str | None) -> np.ndarray:
        """A holiday's minutes by local weekday for an event in ``zone`` (``None``: a zone no rule
        names) to band codes, -1 where no holiday rule applies."""
        week = np.full(_MINUTES_PER_WEEK, -1, np.int16)
        for rule in reversed(rules):
            if ANY in rule.zones or zone in rule.zones:
                for day in rule.days:
                    week[day * 1440 + rule.from_minute: day * 1440 + rule.to_minute] = self.names.band_id[rule.band]
        return week

    def _holiday_variant(self, week: np.ndarray) -> int:
        """The row of ``hol_band`` holding ``week``, added when new. ``hol_next_min`` counts the minutes
        until the band changes within the day only: the next day may not be a holiday."""
        key = week.tobytes()
        if key not in self.hol_rows:
            self.hol_rows[key] = len(self.hol_band)
            self.hol_band.append(week)
            self.hol_next.append(np.concatenate([_next_change(week[d * 1440:(d + 1) * 1440], cyclic=False)
                                                 for d in range(7)]))
        return self.hol_rows[key]

    def _rates(self, vi: int, plan, ver) -> None:
        """Rates with their steps and tier levels, most specific last so it overwrites the general
        ones in ``rate_index``; the version's exact-arithmetic denominator."""
        # Voice (any seconds type) is priced either by steps or by graduated tiers in a version, never
        # both: a call crossing from a stepped band into a tiered one would have no defined price.
        # (Other types take the band of their start, so they may mix.)
        type_id, types = self.names.type_id, self.names.types
        for t in types:
            kinds = {rate.tiers is not None for rate in ver.rates if rate.service == t.service}
            if t.unit == "seconds" and len(kinds) == 2:
                raise ValueError(
                    f"plan {plan.plan_id} version {ver.version}: {t.service} has both stepped and tiered rates; "
                    f"price {t.service} either with steps in every rate or with tiers in every rate")
        zone_id, band_id, tier_id = self.names.zone_id, self.names.band_id, self.names.tier_id
        pers = []
        specificity = lambda r: (r.zone != ANY) * 2 + (r.band != ANY)  # noqa: E731
        for rate in sorted(ver.rates, key=specificity):
            where = f"plan {plan.plan_id} version {ver.version} rate ({rate.service}, {rate.zone}, {rate.band})"
            row = len(self.rates_rows)
            rounding = rate.rounding or types[type_id[rate.service]].rounding or ver.rounding
            self.rates_rows.append(dict(
                connect=rate.connect_fee_micros,
                min=-1 if rate.minimum_micros is None else rate.minimum_micros,
                max=-1 if rate.maximum_micros is None else rate.maximum_micros,
                q=_rounding_q(rounding), mode=ROUNDING_CODES[rounding.mode.value],
                step_first=len(self.steps_rows), step_count=len(rate.steps),
                tier_group=-1 if rate.tiers is None else tier_id[rate.tiers.group],
                tier_inc=1 if rate.tiers is None else rate.tiers.increment_units,
                level_first=len(self.levels_rows), level_count=0 if rate.tiers is None else len(rate.tiers.levels),
            ))
            self.rate_ids.append(f"{plan.plan_id}/v{ver.version}/{rate.service}/{rate.zone}/{rate.band}")
            for step in rate.steps:
                _check_product(step.price_micros, step.per_units, where, "price x per")
                inc_price = -1
                if rate.increment_rounding is not None:
                    _check_product(step.price_micros, step.increment_units, where, "price x increment")
                    inc_price = _round_increment(step.price_micros * step.increment_units, step.per_units,
                                                 _rounding_q(rate.increment_rounding), rate.increment_rounding.mode)
                self.steps_rows.append((step.from_units, step.price_micros, step.per_units, step.increment_units,
                                        inc_price))
                pers.append(step.per_units)
            if rate.tiers is not None:
                for level in rate.tiers.levels:
                    _check_product(level.price_micros, level.per_units, where, "tier price x per")
                    self.levels_rows.append((_INT64_MAX if level.up_to_units is None else level.up_to_units,
                                             level.price_micros, level.per_units))
                    pers.append(level.per_units)
            zones = range(self.n_z) if rate.zone == ANY else [zone_id[rate.zone]] if rate.zone in zone_id else []
            bands = range(self.n_b) if rate.band == ANY else [band_id[rate.band]]
            for z in zones:
                for b in bands:
                    self.rate_index[vi, type_id[rate.service], z, b] = row
        den = 1
        for per in pers:
            den = math.lcm(den, per)
        if den > _MAX_DENOMINATOR:
            raise ValueError(
                f"plan {plan.plan_id} version {ver.version}: the 'per' units of its rates have a least common "
                f"multiple of {den}, above {_MAX_DENOMINATOR}; use per-units that share factors (e.g. 60, 1, 1024)")
        self.ver["ver_denominator"][vi] = den

    def _allowances(self, vi: int, plan, ver) -> None:
        """Allowances in consumption order, each with the zones it covers."""
        zone_id, n_z = self.names.zone_id, self.n_z
        first = len(self.allow_rows)
        self.ver["ver_allow_first"][vi] = first
        ordered = sorted(ver.allowances, key=lambda a: a.order)
        self.ver["ver_allow_count"][vi] = len(ordered)
        for allowance in ordered:
            # The loader refuses this with file and field (plan_rates.check_allowance_pools); here
            # for reference data built in code: the kernels keep one balance owner per name.
            pool = self.pool_of_name.setdefault(allowance.name, allowance.pool)
            if pool != allowance.pool:
                raise ValueError(
                    f"plan {plan.plan_id} version {ver.version}: allowance {allowance.name} has pool "
                    f"{allowance.pool} but pool {pool} elsewhere; give every listing of a name the same pool")
            self.allow_rows.append((self.names.allowance_id[allowance.name], self.names.type_id[allowance.service],
                                    allowance.units))
            ok = np.zeros(n_z, np.int8)
            for z in (range(n_z) if ANY in allowance.zones else [zone_id[z] for z in allowance.zones if z in zone_id]):
                ok[z] = 1
            self.allow_zone_ok.append(ok)
            self.allow_pooled.append(1 if allowance.pooled else 0)
        for s in range(len(self.names.types)):
            for z in range(n_z):
                covering = sum(1 for a, ok in zip(self.allow_rows[first:], self.allow_zone_ok[first:])
                               if a[1] == s and ok[z])
                if covering > MAX_ALLOWANCES_PER_EVENT:
                    raise ValueError(
                        f"plan {plan.plan_id} version {ver.version}: {covering} allowances cover service "
                        f"{self.names.types[s].service} in zone {self.names.zones[z]}; at most {MAX_ALLOWANCES_PER_EVENT} may")

    def tables(self) -> dict:
        """The ``RatingTables`` fields built here, by name."""
        def col(key):
            return np.array([r[key] for r in self.rates_rows], np.int64) if self.rates_rows else np.zeros(0, np.int64)

        steps = np.array(self.steps_rows, np.int64).reshape(-1, 5)
        levels = np.array(self.levels_rows, np.int64).reshape(-1, 3)
        allows = np.array(self.allow_rows, np.int64).reshape(-1, 3)
        return dict(
            **self.ver, holidays_day=np.array(self.holidays, np.int64),
            week_band=self.week_band, week_next_min=self.week_next, hol_band=np.stack(self.hol_band),
            hol_next_min=np.stack(self.hol_next), rate_index=self.rate_index,
            hol_variant=self.hol_variant,
            rate_connect_micros=col("connect"), rate_min_micros=col("min"), rate_max_micros=col("max"),
            rate_round_q_micros=col("q"), rate_round_mode=col("mode"), rate_step_first=col("step_first"),
            rate_step_count=col("step_count"), rate_tier_group=col("tier_group"), rate_tier_inc=col("tier_inc"),
            rate_level_first=col("level_first"), rate_level_count=col("level_count"),
            step_from=steps[:, 0].copy(), step_price_micros=steps[:, 1].copy(), step_per=steps[:, 2].copy(),
            step_inc=steps[:, 3].copy(), step_inc_price_micros=steps[:, 4].copy(),
            level_up_to=levels[:, 0].copy(), level_price_micros=levels[:, 1].copy(), level_per=levels[:, 2].copy(),
            allow_name=allows[:, 0].copy(), allow_service=allows[:, 1].copy(), allow_units=allows[:, 2].copy(),
            allow_zone_ok=np.array(self.allow_zone_ok, np.int8).reshape(-1, self.n_z),
            allow_pooled=np.array(self.allow_pooled, np.int8))


def _enrichment_lookups(ref: ReferenceData, plan_ids: tuple[str, ...], tz_index: dict[str, int]) -> dict:
    """Subscriptions by identity key (rows grouped per subscriber, by validity start), and accounts."""
    subs = ref.subscriptions
    account_ids = tuple(sorted(ref.accounts))
    account_row = {a: i for i, a in enumerate(account_ids)}
    plan_row = {p: i for i, p in enumerate(plan_ids)}
    keys_of = [s.key for s in subs]   # once each: a million subscriptions is a normal size
    key_list = sorted(set(keys_of))
    key_row = {m: i for i, m in enumerate(key_list)}
    row_of = [key_row[k] for k in keys_of]
    sub_first = np.zeros(len(key_list), np.int64)
    sub_count = np.zeros(len(key_list), np.int64)
    order = sorted(range(len(subs)), key=lambda i: (row_of[i], subs[i].valid_from_us))
    ordered_subs = [subs[i] for i in order]
    for i, s in enumerate(ordered_subs):
        r = row_of[order[i]]
        if sub_count[r] == 0:
            sub_first[r] = i
        sub_count[r] += 1
    sub_account = np.array([account_row[s.account_id] for s in ordered_subs], np.int64)
    keys = pa.array(key_list, pa.string())
    return dict(
        subscriber_keys=keys, subscriber_index=StringIndex(keys), sub_first=sub_first, sub_count=sub_count,
        sub_from_us=np.array([s.valid_from_us for s in ordered_subs], np.int64),
        sub_to_us=np.array([_INT64_MAX if s.valid_to_us is None else s.valid_to_us for s in ordered_subs], np.int64),
        sub_account=sub_account, sub_by_account=np.argsort(sub_account, kind="stable"),
        sub_plan=np.array([plan_row[s.plan_id] for s in ordered_subs], np.int64),
        account_ids=account_ids, account_row=account_row,
        account_tz=np.array([tz_index[ref.accounts[a].timezone] for a in account_ids], np.int64),
        account_bcd=np.array([ref.accounts[a].bill_cycle_day for a in account_ids], np.int64),
        account_currency=tuple(ref.accounts[a].currency for a in account_ids))


def _check_product(a: int, b: int, where: str, what: str) -> None:
    if a * b >= _MAX_SAFE:
        raise ValueError(f"{where}: {what} = {a} x {b} exceeds the exact int64 range; lower the price or the unit")


def _round_increment(numerator: int, denominator: int, q: int, mode: RoundingMode) -> int:
    """round(numerator / denominator) to a multiple of q micros with ``mode`` (non-negative inputs)."""
    return round_ratio(numerator, denominator * q, mode) * q
