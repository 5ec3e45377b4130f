"""Hypothesis strategies: random but valid operators (``ReferenceData``) and usage rows against them.

``operators()`` builds a whole operator from the model dataclasses (no files): 1-3 plans in
timezones with and without DST (northern, southern, half-hour offsets, DST at midnight),
numbering plans with 1-3 digit country codes, one or two versions each (starting mid-month, with
gaps sometimes), nested prefix tables (longest prefix matters), roaming tables, overlapping band
rules, holiday calendars (some dates on DST days), stepped and tiered rates with every rounding
mode, minimum and maximum charges, allowances, accounts and subscriptions (some ending or
starting mid-cycle, some MSISDNs moving to another plan). Only values the loader accepts are
generated: ``write_reference`` writes an operator in the documented file format so a test can
load it back (``docs/reference-data.md``).

``usage_rows(ref, ...)`` draws usage rows aimed at what makes rating hard: starts near band edges,
local midnight, DST transitions of the plan's timezone, holidays, cycle and version boundaries;
durations at increment and step edges; data volumes at tier and allowance edges; numbers written
nationally, with ``+`` or the international prefix, unknown or with letters; roaming networks
known and unknown. Sizes stay small enough for the slow twin, which walks every increment.

Large, unstructured content (prefix tables) comes from a ``random.Random`` seeded by one drawn
integer: Hypothesis cannot shrink it, but it keeps examples within Hypothesis' data budget.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import random
import zoneinfo
from pathlib import Path

from hypothesis import strategies as st

from rating.compile import MAX_UNITS
from rating.reference.model import (
    ANY, SERVICES, WEEKDAYS, Account, Allowance, BandRule, Calendar, Currency, Numbering, Operator, Plan,
    PlanVersion, Rate, RecurringFee, ReferenceData, Rounding, RoundingMode, Step, Subscription, TaxRate,
    TierLevel, Tiers, UsageType, ZoneTable, builtin_usage_types)
from rating.reference.model import POOL_ACCOUNT, POOL_SUBSCRIPTION
from tests.usage_rows import usage_row

UTC = dt.timezone.utc
# Southern DST (Sydney, Santiago), no DST with a half-hour offset (Kolkata), plain UTC, and DST changes
# at local midnight: Santiago skips 00:00-01:00 in September, Havana skips it in March and repeats
# 00:00-01:00 in November (cycle starts and band edges on those days).
TIMEZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC",
             "America/Santiago", "America/Havana")
CURRENCIES = {"EUR": 2, "GBP": 2, "USD": 2, "JPY": 0}
COUNTRY_CODES = ("1", "7", "33", "44", "49", "56", "61", "91", "352", "880")
ZONE_NAMES = ("NATIONAL", "MOBILE", "EUROPE", "WORLD", "PREMIUM", "SATELLITE", "Z1", "Z2")
ROAMING_ZONE_NAMES = ("ROAM_EU", "ROAM_WORLD", "ROAM_US", "R1")
HOME = "HOME"  # the built-in zone of data at home: rates and allowances may name it; tables sometimes do too
BANDS = ("PEAK", "OFFPEAK", "WEEKEND", "NIGHT", "HOLIDAY", "B1")
ALLOWANCE_NAMES = ("BUNDLE_A", "BUNDLE_B", "BUNDLE_C", "BUNDLE_D")  # shared by versions: re-granted by name
TIER_GROUPS = ("DATA", "ROAM_DATA", "G1")
MODES = tuple(RoundingMode)
# Data increments are fine (bytes, 1 KB) or coarse (10 KB to 1 MiB) per operator: rows are sized to the
# finest increment (see TWIN_INCREMENTS), and coarse operators reach volumes of several GB.
INCREMENTS = {"voice": (1, 6, 30, 60), "sms": (1, 1, 2)}
DATA_INCREMENTS = ((1, 1000, 1024), (10240, 102400, 1048576))
PERS = {"voice": (1, 60), "sms": (1,), "data": (1, 1024, 1000, 1048576, 1_000_000)}
WINDOW_START = dt.datetime(2025, 9, 1, tzinfo=UTC)
WINDOW_END = dt.datetime(2027, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
DAY_US = 86_400 * US_PER_S
# The twin prices one increment per Python loop step: a row should stay within this many increments
# (a 72 h call at 1 s increments is 259200 steps; such rows are drawn rarely).
TWIN_INCREMENTS = 3000
_EXACT_LIMIT = 2**62  # rating.compile rejects a price whose products reach this


def us(instant: dt.datetime) -> int:
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def instant(value_us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=value_us)


WINDOW_START_US, WINDOW_END_US = us(WINDOW_START), us(WINDOW_END)


@functools.cache
def dst_transitions_us(tz_name: str) -> tuple[int, ...]:
    """UTC instants (whole seconds) where ``tz_name`` changes its offset inside the window."""
    zone = zoneinfo.ZoneInfo(tz_name)
    out = []
    t = WINDOW_START
    offset = t.astimezone(zone).utcoffset()
    while t < WINDOW_END:
        nxt = t + dt.timedelta(hours=1)
        offset_next = nxt.astimezone(zone).utcoffset()
        if offset_next != offset:
            lo, hi = int(t.timestamp()), int(nxt.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if dt.datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            out.append(hi * US_PER_S)
            offset = offset_next
        t = nxt
    return tuple(out)


def local_date(value_us: int, tz_name: str) -> dt.date:
    return instant(value_us).astimezone(zoneinfo.ZoneInfo(tz_name)).date()


def local_wall_us(day: dt.date, minute: int, tz_name: str) -> int:
    """UTC instant of local wall time ``day`` + ``minute`` (1440 = next midnight); gaps move forward."""
    wall = dt.datetime(day.year, day.month, day.day) + dt.timedelta(minutes=minute)
    return us(wall.replace(tzinfo=zoneinfo.ZoneInfo(tz_name)).astimezone(UTC))


# ---------------------------------------------------------------------------------------------
# Small value strategies


def _one_in(draw, n: int) -> bool:
    """True with probability 1/n; False for Hypothesis' simplest draw (so examples shrink to the common case)."""
    return draw(st.integers(0, n - 1)) == n - 1


def _money(draw, cap: int) -> int:
    """Micro-units: 0, sub-cent amounts with 6 decimals, whole cents, or anything up to ``cap``."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return 0
    if kind == 1:
        return min(cap, draw(st.integers(1, 999)))
    if kind == 2:
        return min(cap, draw(st.integers(1, 300)) * 10_000)
    return draw(st.integers(0, cap))


def _rounding(draw) -> Rounding:
    return Rounding(draw(st.sampled_from(MODES)), draw(st.integers(0, 6)))


def _price_cap(service: str, per: int, inc: int) -> int:
    """Largest price compile_reference accepts for these units (and a sane ceiling)."""
    biggest = max(int(MAX_UNITS[SERVICES.index(service)]), per, inc) + 1
    return min(50_000_000, (_EXACT_LIMIT - 1) // biggest)


def _instant_between(draw, lo_us: int, hi_us: int) -> int:
    """An instant in [lo, hi] at a whole second, sometimes with a microsecond fraction."""
    t = lo_us + draw(st.integers(0, max(0, (hi_us - lo_us) // US_PER_S))) * US_PER_S
    if _one_in(draw, 10):
        t += draw(st.integers(1, 999_999))
    return min(t, hi_us)


# ---------------------------------------------------------------------------------------------
# Tables


def _zone_table(rnd: random.Random, name: str, country_codes: list[str], size: int, zones: list[str]) -> ZoneTable:
    """``size`` prefixes: the plans' country codes, other codes, and many nested under them."""
    prefixes: dict[str, str] = {}
    for cc in country_codes:
        prefixes[cc] = "NATIONAL" if "NATIONAL" in zones else zones[0]
    listed = list(prefixes)
    attempts = 0
    while len(prefixes) < size and attempts < 20 * size:
        attempts += 1
        if listed and rnd.random() < 0.65:
            base = rnd.choice(listed)
            prefix = base + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 3)))
        else:
            prefix = str(rnd.randint(1, 9)) + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 2)))
        if len(prefix) <= 15 and prefix not in prefixes:
            prefixes[prefix] = rnd.choice(zones)
            listed.append(prefix)
    return ZoneTable(name, tuple(sorted(prefixes.items())))


def _roaming_table(rnd: random.Random, name: str, size: int, zones: list[str], home_mccs: list[str]) -> ZoneTable:
    """MCC (3 digits) prefixes and MCC+MNC (5-6 digits) nested under some of them."""
    prefixes: dict[str, str] = {}
    mccs = home_mccs + [str(rnd.randint(200, 799)) for _ in range(size)]
    attempts = 0
    while len(prefixes) < size and attempts < 20 * size:
        attempts += 1
        mcc = rnd.choice(mccs)
        if rnd.random() < 0.5:
            prefix = mcc
        else:
            prefix = mcc + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(2, 3)))
        if prefix not in prefixes:
            prefixes[prefix] = rnd.choice(zones)
    return ZoneTable(name, tuple(sorted(prefixes.items())))


@st.composite
def _calendar(draw, name: str) -> Calendar:
    dates = set()
    for _ in range(draw(st.integers(0, 8))):
        dates.add((WINDOW_START.date() + dt.timedelta(days=draw(st.integers(0, 480)))).isoformat())
    # Holidays on DST days: whatever band a call gets then depends on the real offset.
    for tz_name in TIMEZONES:
        for t in dst_transitions_us(tz_name):
            if _one_in(draw, 4):
                dates.add(local_date(t, tz_name).isoformat())
    if not dates:
        dates.add("2026-03-29")
    return Calendar(name, tuple(sorted(dates)))


# ---------------------------------------------------------------------------------------------
# Bands, rates, allowances


def _minute_range(draw) -> tuple[int, int]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return 0, 1440  # the whole day (00:00-24:00)
    if kind == 1:
        start = 60 * draw(st.integers(0, 23))
        return start, 60 * draw(st.integers(start // 60 + 1, 24))
    start = draw(st.integers(0, 1439))
    return start, draw(st.integers(start + 1, 1440))


def _band_rules(draw, has_calendar: bool, zones: list[str]) -> tuple[str, tuple[BandRule, ...]]:
    """Default band and rules; rules overlap freely (the first match wins). Holiday rules apply on
    every weekday and to every zone, or (often) on some weekdays and/or to some of ``zones`` only."""
    default = draw(st.sampled_from(BANDS))
    rules = []
    for _ in range(draw(st.integers(0, 5))):
        band = draw(st.sampled_from(BANDS))
        holiday = has_calendar and _one_in(draw, 4)
        days = tuple(range(7)) if holiday and draw(st.booleans()) else tuple(
            sorted(draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))))
        scope = (ANY,)
        if holiday and draw(st.booleans()):
            scope = tuple(draw(st.lists(st.sampled_from(zones), min_size=1, max_size=3, unique=True)))
        start, end = _minute_range(draw)
        rules.append(BandRule(band=band, days=days, from_minute=start, to_minute=end, holiday=holiday, zones=scope))
    return default, tuple(rules)


def _steps(draw, service: str, incs: dict) -> tuple[Step, ...]:
    steps = []
    start = 0
    for _ in range(draw(st.integers(1, 3))):
        inc = draw(st.sampled_from(incs[service]))
        per = draw(st.sampled_from(PERS[service]))
        steps.append(Step(start, _money(draw, _price_cap(service, per, inc)), per, inc))
        span = {"voice": 600, "sms": 6, "data": 40 * inc}[service]
        start += inc * draw(st.integers(1, max(1, span // inc)))
    return tuple(steps)


def _tiers(draw, service: str, incs: dict) -> Tiers:
    inc = draw(st.sampled_from(incs[service]))
    n_levels = draw(st.integers(2, 3))
    levels = []
    up_to = 0
    for k in range(n_levels):
        per = draw(st.sampled_from(PERS[service]))
        price = _money(draw, _price_cap(service, per, inc))
        if k == n_levels - 1:
            levels.append(TierLevel(None, price, per))
        else:
            # Edges on increments, or one unit off them.
            up_to = max(up_to + 1, up_to + inc * draw(st.integers(1, 100)) + draw(st.sampled_from((0, 0, 1, -1))))
            levels.append(TierLevel(up_to, price, per))
    return Tiers(draw(st.sampled_from(TIER_GROUPS)), inc, tuple(levels))


def _rate(draw, service: str, zone: str, band: str, incs: dict, tiered: bool) -> Rate:
    cap = 50_000_000
    minimum = _money(draw, cap) if _one_in(draw, 5) else None
    maximum = None
    if _one_in(draw, 5):
        maximum = _money(draw, cap)
        if minimum is not None and maximum < minimum:
            minimum, maximum = maximum, minimum
    return Rate(
        service=service, zone=zone, band=band,
        connect_fee_micros=_money(draw, cap) if draw(st.booleans()) else 0,
        steps=() if tiered else _steps(draw, service, incs),
        tiers=_tiers(draw, service, incs) if tiered else None,
        minimum_micros=minimum, maximum_micros=maximum,
        increment_rounding=_rounding(draw) if _one_in(draw, 4) else None,
        rounding=_rounding(draw) if _one_in(draw, 3) else None,
    )


def _rates(draw, zones: list[str], bands: list[str], incs: dict, tiered_time: bool) -> tuple[Rate, ...]:
    """Rates with unique (service, zone, band) keys; data rates often tiered, voice and SMS rarely.

    Voice rates of a version are all tiered or all stepped: a call crossing from a stepped band into
    a tiered one is not rated consistently (see test_voice_call_crossing_into_a_tiered_band)."""
    keys = []
    for service in SERVICES:
        if not _one_in(draw, 10):  # usually a catch-all: coverage complete unless band rates leave holes
            keys.append((service, ANY, ANY))
        for _ in range(draw(st.integers(0, 3))):
            # Data at home is zoned HOME: a data rate names it explicitly now and then.
            zone = HOME if service == "data" and _one_in(draw, 3) else draw(st.sampled_from([ANY] + zones))
            key = (service, zone, draw(st.sampled_from([ANY] + bands)))
            if key not in keys:
                keys.append(key)
    if not keys:  # a version needs at least one rate
        keys.append((draw(st.sampled_from(SERVICES)), ANY, ANY))
    voice_tiered = tiered_time and _one_in(draw, 10)
    rates = []
    for key in keys:
        service = key[0]
        if service == "voice":
            tiered = voice_tiered
        elif service == "sms":
            tiered = tiered_time and _one_in(draw, 10)
        else:
            tiered = draw(st.integers(0, 9)) >= 6
        rates.append(_rate(draw, *key, incs=incs, tiered=tiered))
    return tuple(rates)


def _allowance_units(draw, service: str, incs: dict) -> int:
    """Grants of a few increments to many: small ones run out within a few events."""
    if service == "voice":
        return draw(st.one_of(st.integers(1, 600), st.integers(1, 3000), st.integers(1, 100).map(lambda m: 60 * m)))
    if service == "sms":
        return draw(st.integers(1, 12))
    inc = draw(st.sampled_from(incs["data"]))
    return max(1, inc * draw(st.integers(1, 300)) + draw(st.sampled_from((0, 0, 1, -1))))


def _allowances(draw, zones: list[str], incs: dict, pooled: frozenset = frozenset()) -> tuple[Allowance, ...]:
    """0-3 allowances; those named in ``pooled`` have ``pool: account`` (some with units 0: a member's)."""
    n = draw(st.integers(0, 3))
    names = draw(st.lists(st.sampled_from(ALLOWANCE_NAMES), min_size=n, max_size=n, unique=True))
    orders = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n, unique=True))
    out = []
    for name, order in zip(names, orders):
        service = draw(st.sampled_from(SERVICES))
        if draw(st.integers(0, 2)) == 0 or not zones:
            scope = (ANY,)
        else:
            scope = tuple(draw(st.lists(st.sampled_from(zones), min_size=1, max_size=3, unique=True)))
        if name in pooled:
            units = 0 if _one_in(draw, 4) else _allowance_units(draw, service, incs)
            out.append(Allowance(name, service, scope, units, order, POOL_ACCOUNT))
        else:
            out.append(Allowance(name, service, scope, _allowance_units(draw, service, incs), order))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Plans, accounts, subscriptions


@st.composite
def _numbering(draw) -> Numbering:
    cc = draw(st.one_of(st.sampled_from(COUNTRY_CODES), st.from_regex(r"[1-9][0-9]{0,2}", fullmatch=True)))
    return Numbering(cc, draw(st.sampled_from(("00", "011"))), draw(st.sampled_from(("0", "1", ""))))


def _version(draw, number: int, valid_from: int, valid_to: int | None, tables: dict, incs: dict,
             tiered_time: bool, pooled: frozenset = frozenset()) -> PlanVersion:
    zone_table = draw(st.sampled_from(sorted(tables["zones"])))
    roaming_table = draw(st.sampled_from([None] + sorted(tables["roaming"])))
    calendar = draw(st.sampled_from([None] + sorted(tables["calendars"])))
    zones = sorted({z for _, z in tables["zones"][zone_table].prefixes} | {HOME}
                   | ({z for _, z in tables["roaming"][roaming_table].prefixes} if roaming_table else set()))
    default, rules = _band_rules(draw, calendar is not None, zones)
    bands = sorted({default} | {r.band for r in rules})
    fees = tuple(RecurringFee(f"FEE{k}", f"fee {k}", _money(draw, 50_000_000)) for k in range(draw(st.integers(0, 2))))
    return PlanVersion(
        version=number, valid_from_us=valid_from, valid_to_us=valid_to, zone_table=zone_table,
        roaming_table=roaming_table, holiday_calendar=calendar, rounding=_rounding(draw),
        zero_duration_charged=draw(st.booleans()), default_band=default, band_rules=rules,
        rates=_rates(draw, zones, bands, incs, tiered_time), allowances=_allowances(draw, zones, incs, pooled),
        recurring_fees=fees)


def _plan(draw, plan_id: str, currency: str, tables: dict, incs: dict, tiered_time: bool,
          pooled: frozenset = frozenset()) -> Plan:
    timezone = draw(st.sampled_from(TIMEZONES))
    numbering = draw(_numbering())
    first = _instant_between(draw, WINDOW_START_US, WINDOW_START_US + 150 * DAY_US)
    starts = [first]
    if draw(st.booleans()):
        starts.append(_instant_between(draw, first + 3 * DAY_US, first + 200 * DAY_US))
    versions = []
    for k, start in enumerate(starts):
        if k + 1 < len(starts):
            # Until the next version, or (sometimes) a gap before it: NO_PLAN_VERSION in between.
            end = starts[k + 1]
            if _one_in(draw, 5):
                end -= draw(st.integers(1, 5 * 86_400)) * US_PER_S
                end = max(end, start + US_PER_S)
        else:
            end = start + draw(st.integers(60, 400)) * DAY_US if _one_in(draw, 5) else None
        versions.append(_version(draw, k + 1, start, end, tables, incs, tiered_time, pooled))
    return Plan(plan_id, f"Plan {plan_id}", currency, timezone, numbering, tuple(versions))


def _msisdn(rnd: random.Random, taken: set[str], country_codes: list[str]) -> str:
    while True:
        text = rnd.choice(country_codes) + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(6, 10)))
        if text not in taken:
            taken.add(text)
            return text


@st.composite
def operators(draw, *, tiered_time: bool = True, max_plans: int = 3, pools: bool = False) -> ReferenceData:
    """A random, valid operator. ``tiered_time``: voice and SMS rates may be tiered too (rarely).
    ``pools``: some allowance names are pooled (``pool: account``) in every plan that lists them,
    and there are at most two accounts, so subscriptions share them."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    n_plans = draw(st.integers(1, max_plans))
    currencies = sorted(set(draw(st.lists(st.sampled_from(sorted(CURRENCIES)), min_size=1, max_size=n_plans))))
    plan_currency = [currencies[k % len(currencies)] for k in range(n_plans)]
    country_codes = draw(st.lists(st.sampled_from(COUNTRY_CODES), min_size=1, max_size=3, unique=True))

    home_networks = tuple(draw(st.lists(st.from_regex(r"[2-7][0-9]{4,5}", fullmatch=True), min_size=1, max_size=2,
                                        unique=True)))
    home_mccs = sorted({n[:3] for n in home_networks})
    zone_tables = {}
    for k in range(draw(st.integers(1, 2))):
        zones = sorted(set(draw(st.lists(st.sampled_from(ZONE_NAMES), min_size=2, max_size=6))))
        if _one_in(draw, 6):
            zones.append(HOME)
        size = draw(st.one_of(st.integers(10, 60), st.integers(60, 300)))
        table = _zone_table(rnd, f"zones/t{k}.csv", country_codes, size, zones)
        zone_tables[table.name] = table
    roaming_tables = {}
    for k in range(draw(st.integers(0, 2))):
        zones = sorted(set(draw(st.lists(st.sampled_from(ROAMING_ZONE_NAMES), min_size=1, max_size=3))))
        if _one_in(draw, 6):
            zones.append(HOME)
        table = _roaming_table(rnd, f"roaming/r{k}.csv", draw(st.integers(3, 30)), zones, home_mccs)
        roaming_tables[table.name] = table
    calendars = {}
    for k in range(draw(st.integers(0, 2))):
        calendar = draw(_calendar(f"calendars/c{k}.csv"))
        calendars[calendar.name] = calendar
    tables = {"zones": zone_tables, "roaming": roaming_tables, "calendars": calendars}
    incs = {**INCREMENTS, "data": draw(st.sampled_from(DATA_INCREMENTS))}

    pooled = frozenset(draw(st.sets(st.sampled_from(ALLOWANCE_NAMES), min_size=1))) if pools else frozenset()
    plans = {}
    for k in range(n_plans):
        plan_id = f"P{k + 1}"
        plans[plan_id] = _plan(draw, plan_id, plan_currency[k], tables, incs, tiered_time, pooled)
    # National numbers of every plan land in the tables: its country code is in them.
    country_codes = sorted(set(country_codes) | {p.numbering.country_code for p in plans.values()})
    zone_tables = {name: _with_country_codes(t, country_codes) for name, t in zone_tables.items()}

    accounts = {}
    for k in range(draw(st.integers(1, 2 if pools else 4))):
        account_id = f"A{k + 1}"
        accounts[account_id] = _account(draw, account_id, draw(st.sampled_from(currencies)))
    for currency in currencies:  # every plan currency has an account
        if not any(a.currency == currency for a in accounts.values()):
            account_id = f"A{len(accounts) + 1}"
            accounts[account_id] = _account(draw, account_id, currency)

    subscriptions = []
    taken: set[str] = set()
    for _ in range(draw(st.integers(1, 5))):
        msisdn = _msisdn(rnd, taken, country_codes)
        plan_id = draw(st.sampled_from(sorted(plans)))
        first_version = plans[plan_id].versions[0].valid_from_us  # sometimes subscribed before it: NO_PLAN_VERSION
        start = _instant_between(draw, first_version - 10 * DAY_US, first_version + 100 * DAY_US)
        kind = draw(st.integers(0, 3))  # 0/1 open, 2 ends, 3 moves to another plan
        end = None if kind < 2 else _instant_between(draw, start + US_PER_S, start + 120 * DAY_US)
        subscriptions.append(Subscription(msisdn, _account_for(draw, accounts, plans[plan_id]), plan_id, start, end))
        if kind == 3:
            others = [p for p in sorted(plans) if p != plan_id] or [plan_id]
            second = draw(st.sampled_from(others))
            start2 = end + draw(st.integers(1, 10 * 86_400)) * US_PER_S if _one_in(draw, 4) else end
            subscriptions.append(Subscription(msisdn, _account_for(draw, accounts, plans[second]), second, start2,
                                              None))
    subscriptions.sort(key=lambda s: (s.msisdn, s.valid_from_us))
    operator = Operator(name="Random Mobile", home_networks=home_networks,
                        currencies={c: Currency(c, CURRENCIES[c]) for c in currencies},
                        invoice_rounding=draw(st.sampled_from(MODES)), tax_rounding=draw(st.sampled_from(MODES)))
    return ReferenceData(
        root=Path("/nonexistent/generated-reference"), operator=operator, plans=plans, zone_tables=zone_tables,
        roaming_tables=roaming_tables, calendars=calendars, accounts=accounts, subscriptions=tuple(subscriptions),
        tax_rates=(TaxRate("R1", us(dt.datetime(2020, 1, 1, tzinfo=UTC)), 190_000, "VAT 19%"),))


def _account(draw, account_id: str, currency: str) -> Account:
    """An account whose bill cycle day is 1, 28, any, or sometimes a DST day of its timezone."""
    timezone = draw(st.sampled_from(TIMEZONES))
    dst_days = sorted({local_date(t, timezone).day for t in dst_transitions_us(timezone)} - {29, 30, 31})
    days = st.one_of(st.sampled_from((1, 28)), st.integers(1, 28), *([st.sampled_from(dst_days)] if dst_days else []))
    return Account(account_id, currency, timezone, draw(days), "R1")


def _with_country_codes(table: ZoneTable, country_codes: list[str]) -> ZoneTable:
    prefixes = dict(table.prefixes)
    zones = sorted({z for z in prefixes.values()})
    for cc in country_codes:
        prefixes.setdefault(cc, "NATIONAL" if "NATIONAL" in zones else zones[0])
    return ZoneTable(table.name, tuple(sorted(prefixes.items())))


def _account_for(draw, accounts: dict[str, Account], plan: Plan) -> str:
    return draw(st.sampled_from(sorted(a for a, acc in accounts.items() if acc.currency == plan.currency)))


def without_allowances_and_tiers(ref: ReferenceData) -> ReferenceData:
    """The same operator with no allowances, and each tiered rate priced like its first level."""
    def plain(rate: Rate) -> Rate:
        if rate.tiers is None:
            return rate
        level = rate.tiers.levels[0]
        return dataclasses.replace(rate, tiers=None, steps=(
            Step(0, level.price_micros, level.per_units, rate.tiers.increment_units),))

    plans = {pid: dataclasses.replace(plan, versions=tuple(
        dataclasses.replace(v, allowances=(), rates=tuple(plain(r) for r in v.rates)) for v in plan.versions))
        for pid, plan in ref.plans.items()}
    return dataclasses.replace(ref, plans=plans)


def increments(ref: ReferenceData, service: str) -> set[int]:
    """Every charging increment (steps and tiers) of ``service`` anywhere in the operator."""
    out = set()
    for plan in ref.plans.values():
        for version in plan.versions:
            for rate in version.rates:
                if rate.service == service:
                    out |= {s.increment_units for s in rate.steps}
                    if rate.tiers is not None:
                        out.add(rate.tiers.increment_units)
    return out


# ---------------------------------------------------------------------------------------------
# Usage rows


@dataclasses.dataclass(frozen=True)
class RowContext:
    """What row strategies aim at, computed once per operator."""
    msisdns: tuple[str, ...]
    unknown_msisdns: tuple[str, ...]
    boundaries: dict[str, tuple[int, ...]]  # msisdn -> its subscription and plan version boundaries
    anchors: dict[str, tuple[int, ...]]     # msisdn -> instants worth starting near, where it is rated
    numbers: tuple[str, ...]                # E.164 digit strings that hit (nested) prefixes
    numberings: tuple[Numbering, ...]
    visited: tuple[str, ...]                # roaming networks: known prefixes, unknown, home
    voice_edges: tuple[int, ...]            # step starts and increments (seconds)
    data_edges: tuple[int, ...]             # tier edges, allowance sizes, step starts (bytes)
    min_increment: dict[str, int]


def row_context(ref: ReferenceData, rnd: random.Random) -> RowContext:
    msisdns = tuple(sorted({s.msisdn for s in ref.subscriptions}))
    unknown = (str(rnd.randint(10**8, 10**9)), msisdns[0] + "9" if len(msisdns[0]) < 15 else "1")
    boundaries, anchors = {}, {}
    for m in msisdns:
        edges, inside = _anchors(ref, m, rnd)
        boundaries[m] = tuple(sorted(edges))
        anchors[m] = tuple(sorted(inside)) or boundaries[m]
    numbers = set()
    for table in ref.zone_tables.values():
        for prefix, _ in rnd.sample(table.prefixes, min(40, len(table.prefixes))):
            for extra in (0, rnd.randint(1, 4), rnd.randint(5, 9)):
                numbers.add((prefix + "".join(rnd.choice("0123456789") for _ in range(extra)))[:15])
    visited = set()
    for table in ref.roaming_tables.values():
        for prefix, _ in rnd.sample(table.prefixes, min(10, len(table.prefixes))):
            visited.add(prefix + "".join(rnd.choice("0123456789") for _ in range(max(0, 5 - len(prefix)))))
            visited.add(prefix)
    visited |= {str(rnd.randint(20000, 79999)), "99999", "2620A", ""}
    visited |= set(ref.operator.home_networks)
    voice_edges, data_edges = set(), set()
    for plan in ref.plans.values():
        for version in plan.versions:
            for rate in version.rates:
                edges = voice_edges if rate.service == "voice" else data_edges if rate.service == "data" else set()
                for step in rate.steps:
                    edges |= {step.from_units, step.increment_units, step.from_units + step.increment_units}
                if rate.tiers is not None:
                    edges |= {lv.up_to_units for lv in rate.tiers.levels if lv.up_to_units is not None}
                    edges.add(rate.tiers.increment_units)
            for allowance in version.allowances:
                if allowance.service != "sms":
                    (voice_edges if allowance.service == "voice" else data_edges).add(allowance.units)
    min_increment = {s: min(increments(ref, s) or {1}) for s in SERVICES}
    return RowContext(msisdns, unknown, boundaries, anchors, tuple(sorted(numbers)),
                      tuple(p.numbering for p in ref.plans.values()), tuple(sorted(visited)),
                      tuple(sorted(voice_edges)), tuple(sorted(data_edges)), min_increment)


def _anchors(ref: ReferenceData, msisdn: str, rnd: random.Random) -> tuple[set[int], set[int]]:
    """Instants near which rating of this subscriber is hard: (its subscription and version boundaries,
    and where it has a plan version in force: DST changes, cycle starts, band edges on ordinary days,
    DST days and holidays)."""
    edges_out, out = set(), set()
    for sub in ref.subscriptions:
        if sub.msisdn != msisdn:
            continue
        plan = ref.plans[sub.plan_id]
        account = ref.accounts[sub.account_id]
        sub_end = sub.valid_to_us if sub.valid_to_us is not None else sub.valid_from_us + 240 * DAY_US
        edges_out |= {sub.valid_from_us, sub_end} if sub.valid_to_us is not None else {sub.valid_from_us}
        for index, version in enumerate(plan.versions):
            version_end = version.valid_to_us or (
                plan.versions[index + 1].valid_from_us if index + 1 < len(plan.versions) else sub_end)
            edges_out |= {t for t in (version.valid_from_us, version_end)
                          if sub.valid_from_us - DAY_US <= t <= sub_end + DAY_US}
            lo, hi = max(sub.valid_from_us, version.valid_from_us), min(sub_end, version_end)
            if lo >= hi:
                continue
            for tz_name in {plan.timezone, account.timezone}:
                out |= {t for t in dst_transitions_us(tz_name) if lo <= t <= hi}
            # Cycle boundaries: bill cycle day 00:00 in the account's timezone.
            day = instant(lo).date().replace(day=1)
            while us(dt.datetime(day.year, day.month, 1, tzinfo=UTC)) < hi:
                t = local_wall_us(day.replace(day=account.bill_cycle_day), 0, account.timezone)
                if lo <= t <= hi:
                    out.add(t)
                day = (day + dt.timedelta(days=32)).replace(day=1)
            days = [instant(rnd.randint(lo, hi)).date() for _ in range(4)]
            days += [local_date(t, plan.timezone) for t in dst_transitions_us(plan.timezone) if lo <= t <= hi]
            if version.holiday_calendar is not None:
                days += [dt.date.fromisoformat(d) for d in ref.calendars[version.holiday_calendar].dates]
            edges = {0, 1440} | {r.from_minute for r in version.band_rules} | {r.to_minute for r in version.band_rules}
            for day in set(days):
                for minute in edges:
                    t = local_wall_us(day, minute, plan.timezone)
                    if lo <= t <= hi:
                        out.add(t)
    return edges_out, out


@st.composite
def _number(draw, ctx: RowContext, plain: bool = False) -> str:
    kind = 0 if plain else draw(st.integers(0, 19))
    if kind < 14 and ctx.numbers:
        digits = draw(st.sampled_from(ctx.numbers))
        numbering = draw(st.sampled_from(ctx.numberings))
        form = 0 if plain else draw(st.integers(0, 3))
        if form == 0:
            return "+" + digits
        if form == 1:
            return numbering.international_prefix + digits
        # National form: country code dropped, trunk prefix (if any) in front, or nothing.
        if digits.startswith(numbering.country_code) and len(digits) > len(numbering.country_code):
            rest = digits[len(numbering.country_code):]
            return (numbering.trunk_prefix if form == 2 else "") + rest
        return digits
    if kind == 19:  # letters or other non-digits: INVALID_NUMBER
        return draw(st.sampled_from(("01x5", "+49 151", "abc", "+", "00", "0", "1", "+4915-1", "12345678901234567",
                                     "+1234567890123456", "٣٣١٢", "0049１")))
    return draw(st.from_regex(r"(\+|00|011|0|1)?[0-9]{1,13}", fullmatch=True))  # unknown prefixes too


def _duration(draw, ctx: RowContext) -> int:
    kind = draw(st.integers(0, 199))
    if kind == 199 and _one_in(draw, 5):  # 1 in 1000: the twin takes about a second per 72 h at 1 s increments
        return draw(st.sampled_from((72 * 3600, 72 * 3600 - 1, 40 * 3600 + 7)))
    if kind >= 192:
        return draw(st.integers(0, 4 * 3600))
    if kind < 62 and ctx.voice_edges:
        return max(0, draw(st.sampled_from(ctx.voice_edges)) + draw(st.sampled_from((-1, 0, 1))))
    if kind < 100:
        return draw(st.sampled_from((0, 1, 2, 5, 6, 7, 29, 30, 31, 59, 60, 61, 119, 120, 121)))
    return draw(st.integers(0, 900))


def _data_bytes(draw, ctx: RowContext) -> int:
    limit = ctx.min_increment["data"] * TWIN_INCREMENTS
    kind = draw(st.integers(0, 99))
    if kind == 99:
        return 2**44 + draw(st.integers(1, 2**20))  # above the largest event: OVERFLOW
    if kind < 40 and ctx.data_edges:
        value = max(0, draw(st.sampled_from(ctx.data_edges)) + draw(st.sampled_from((-1, 0, 1))))
    elif kind < 50:
        value = draw(st.sampled_from((0, 1, 1023, 1024, 1025)))
    else:
        value = draw(st.integers(0, limit))
    return min(value, limit)


@st.composite
def usage_rows(draw, ref: ReferenceData, *, min_size: int = 1, max_size: int = 20) -> list[dict]:
    """Rows (``tests.usage_rows.usage_row`` dicts, record ids r0, r1, ...) against ``ref``."""
    ctx = row_context(ref, random.Random(draw(st.integers(0, 2**32 - 1))))
    count = draw(st.integers(min_size, max_size))
    return [draw(usage_row_for(ctx, index)) for index in range(count)]


@st.composite
def usage_row_for(draw, ctx: RowContext, index: int, service: str | None = None, plain: bool = False) -> dict:
    """One row. ``plain``: a subscriber near an instant where it is rated, at home, dialling a number of the
    tables (most such rows are rated)."""
    service = service or draw(st.sampled_from(("VOICE", "VOICE", "SMS", "DATA")))
    unknown = not plain and _one_in(draw, 15)
    msisdn = draw(st.sampled_from(ctx.unknown_msisdns if unknown else ctx.msisdns))
    known = msisdn if msisdn in ctx.anchors else ctx.msisdns[0]
    if plain:
        start = draw(st.sampled_from(ctx.anchors[known])) + draw(st.integers(-7200, 7200)) * US_PER_S
        visited = None
    else:
        anchors = ctx.boundaries[known] if _one_in(draw, 6) else ctx.anchors[known]
        start = draw(st.sampled_from(anchors)) + draw(start_offsets_us())
        visited = draw(st.sampled_from(ctx.visited)) if _one_in(draw, 3) else None
    fields = dict(service=service, start_time=start, served_msisdn=msisdn, visited_network=visited,
                  source=draw(st.sampled_from(("sw1", "sw2"))))
    if service == "VOICE":
        fields["duration_s"] = _duration(draw, ctx)
        fields["other_party"] = draw(_number(ctx, plain))
    elif service == "SMS":
        fields["message_count"] = 1_000_001 if _one_in(draw, 100) else draw(st.integers(0, 3))
        fields["other_party"] = draw(_number(ctx))
    else:
        total = _data_bytes(draw, ctx)
        up = draw(st.integers(0, total))
        fields["bytes_up"], fields["bytes_down"] = up, total - up
        if _one_in(draw, 5):
            fields["other_party"] = draw(_number(ctx))  # ignored for data
    return usage_row(index, **fields)


def start_offsets_us() -> st.SearchStrategy[int]:
    """Offsets from an anchor: on it, a second or a minute off, within hours, or days away."""
    seconds = st.integers(0, 9).flatmap(lambda kind: (
        st.sampled_from((0, -1, 1, -30, -59, -60, 60, -3600)) if kind < 4 else
        st.integers(-7200, 7200) if kind < 9 else st.integers(-3 * 86_400, 3 * 86_400)))
    fraction = st.one_of(st.just(0), st.integers(0, 999_999))
    return st.builds(lambda s, f: s * US_PER_S + f, seconds, fraction)


# ---------------------------------------------------------------------------------------------
# Writing an operator in the file format (docs/reference-data.md)


def _decimal(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _instant_text(value_us: int) -> str:
    value = instant(value_us)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _rounding_doc(rounding: Rounding) -> dict:
    return {"mode": rounding.mode.value, "decimals": rounding.decimals}


def _rate_doc(rate: Rate) -> dict:
    doc = {"service": rate.service, "zone": rate.zone, "band": rate.band,
           "connect_fee": _decimal(rate.connect_fee_micros)}
    if rate.minimum_micros is not None:
        doc["minimum_charge"] = _decimal(rate.minimum_micros)
    if rate.maximum_micros is not None:
        doc["maximum_charge"] = _decimal(rate.maximum_micros)
    if rate.increment_rounding is not None:
        doc["increment_rounding"] = _rounding_doc(rate.increment_rounding)
    if rate.rounding is not None:
        doc["rounding"] = _rounding_doc(rate.rounding)
    if rate.tiers is None:
        doc["steps"] = [{"from": s.from_units, "price": _decimal(s.price_micros), "per": s.per_units,
                         "increment": s.increment_units} for s in rate.steps]
    else:
        doc["tiers"] = {"group": rate.tiers.group, "increment": rate.tiers.increment_units, "levels": [
            {**({"up_to": lv.up_to_units} if lv.up_to_units is not None else {}),
             "price": _decimal(lv.price_micros), "per": lv.per_units} for lv in rate.tiers.levels]}
    return doc


def _rule_doc(rule: BandRule) -> dict:
    doc = {"band": rule.band, "from": _hhmm(rule.from_minute), "to": _hhmm(rule.to_minute)}
    if rule.holiday:
        doc["holiday"] = True
        if rule.zones != (ANY,):
            doc["zones"] = list(rule.zones)
    if not rule.holiday or rule.days != tuple(range(7)):
        doc["days"] = [WEEKDAYS[d] for d in rule.days]
    return doc


def _version_doc(v: PlanVersion) -> dict:
    doc = {"version": v.version, "valid_from": _instant_text(v.valid_from_us),
           "valid_to": None if v.valid_to_us is None else _instant_text(v.valid_to_us),
           "zone_table": v.zone_table, "rounding": _rounding_doc(v.rounding),
           "zero_duration": "charged" if v.zero_duration_charged else "free",
           "bands": {"default": v.default_band, "rules": [_rule_doc(r) for r in v.band_rules]},
           "rates": [_rate_doc(r) for r in v.rates],
           "allowances": [{"name": a.name, "service": a.service, "zones": list(a.zones), "units": a.units,
                           "order": a.order, **({"pool": a.pool} if a.pool != POOL_SUBSCRIPTION else {})}
                          for a in v.allowances],
           "recurring_fees": [{"name": f.name, "description": f.description, "amount": _decimal(f.amount_micros)}
                              for f in v.recurring_fees]}
    if v.roaming_table is not None:
        doc["roaming_table"] = v.roaming_table
    if v.holiday_calendar is not None:
        doc["holiday_calendar"] = v.holiday_calendar
    return doc


def _usage_type_doc(t: UsageType) -> dict:
    doc = {"name": t.name, "unit": t.unit, "destination": t.destination, "max_units": t.max_units}
    for key, value in (("unit_name", t.unit_name), ("increment", t.increment)):
        if value is not None:
            doc[key] = value
    if t.rounding is not None:
        doc["rounding"] = _rounding_doc(t.rounding)
    return doc


def write_reference(ref: ReferenceData, directory: Path) -> None:
    """Write ``ref`` as a reference-data directory (YAML written as JSON, which YAML reads)."""
    def write(relative: str, text: str) -> None:
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    op = ref.operator
    write("operator.yaml", json.dumps({
        "operator": op.name, "home_networks": list(op.home_networks),
        "currencies": {c.code: {"minor_unit_digits": c.minor_unit_digits} for c in op.currencies.values()},
        "invoice_rounding": op.invoice_rounding.value, "tax_rounding": op.tax_rounding.value}, indent=1))
    for plan in ref.plans.values():
        write(f"plans/{plan.plan_id}.yaml", json.dumps({
            "plan_id": plan.plan_id, "name": plan.name, "currency": plan.currency, "timezone": plan.timezone,
            "numbering": {"country_code": plan.numbering.country_code,
                          "international_prefix": plan.numbering.international_prefix,
                          "trunk_prefix": plan.numbering.trunk_prefix},
            "versions": [_version_doc(v) for v in plan.versions]}, indent=1))
    for table in list(ref.zone_tables.values()) + list(ref.roaming_tables.values()):
        write(table.name, "prefix,zone\n" + "".join(f"{p},{z}\n" for p, z in table.prefixes))
    if not ref.roaming_tables:
        (directory / "roaming").mkdir(exist_ok=True)
    for calendar in ref.calendars.values():
        write(calendar.name, "date,description\n" + "".join(f"{d},holiday\n" for d in calendar.dates))
    write("accounts.csv", "account_id,currency,timezone,bill_cycle_day,tax_region\n" + "".join(
        f"{a.account_id},{a.currency},{a.timezone},{a.bill_cycle_day},{a.tax_region}\n" for a in ref.accounts.values()))
    write("subscriptions.csv", "msisdn,account_id,plan_id,valid_from,valid_to\n" + "".join(
        f"{s.msisdn},{s.account_id},{s.plan_id},{_instant_text(s.valid_from_us)},"
        f"{'' if s.valid_to_us is None else _instant_text(s.valid_to_us)}\n" for s in ref.subscriptions))
    declared = [t for name, t in ref.usage_types.items() if builtin_usage_types().get(name) != t]
    if declared:
        write("usage_types.yaml", json.dumps({"usage_types": [_usage_type_doc(t) for t in declared]}, indent=1))
    write("tax_rates.csv", "tax_region,valid_from,rate,name\n" + "".join(
        f"{t.tax_region},{_instant_text(t.valid_from_us)},{_decimal(t.rate_millionths)},{t.name}\n"
        for t in ref.tax_rates))
