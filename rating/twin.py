"""The slow twin of the rating kernels: the same rules in plain Python, written for clarity.

It is the oracle the property tests compare the kernels against, so it shares no code with them:
timezones through ``zoneinfo``, money as ``fractions.Fraction``, zoning through prefix strings,
and increments priced one at a time. Slow (one Python loop step per increment); use it on small
inputs only.

``rate_rows_twin(rows, reference)`` takes usage rows (dicts with the usage schema's fields;
``start_time`` as epoch microseconds) and returns one result dict per row, in input order.
"""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction
from zoneinfo import ZoneInfo

from cdr_schemas.reasons import Reason
from rating.reference.model import ANY, HOME_ZONE, PlanVersion, Rate, ReferenceData, Rounding, RoundingMode

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EXACT_LIMIT = 2**62   # an event whose exact amount reaches it is OVERFLOW (docs/tariffs.md)


def _instant(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _us(instant: dt.datetime) -> int:
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def round_fraction(value: Fraction, rounding: Rounding) -> int:
    """Round a non-negative amount of micros to a multiple of 10**(6-decimals) micros."""
    q = 10 ** (6 - rounding.decimals)
    units = value / q
    low = math.floor(units)
    rest = units - low
    mode = rounding.mode
    if rest == 0:
        up = False
    elif mode is RoundingMode.UP:
        up = True
    elif mode is RoundingMode.DOWN:
        up = False
    elif mode is RoundingMode.HALF_UP:
        up = rest >= Fraction(1, 2)
    else:
        up = rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1)
    return (low + (1 if up else 0)) * q


def normalise_twin(number: str, numbering) -> str | None:
    """E.164 digits of a dialled number, or None when it is not a valid number."""
    if number.startswith("+"):
        national = None
        rest = number[1:]
    elif numbering.international_prefix and number.startswith(numbering.international_prefix):
        national = None
        rest = number[len(numbering.international_prefix):]
    else:
        national = numbering.country_code
        rest = number[len(numbering.trunk_prefix):] if numbering.trunk_prefix and number.startswith(
            numbering.trunk_prefix) else number
    if not rest or not all("0" <= c <= "9" for c in rest):
        return None
    digits = (national or "") + rest
    return digits if len(digits) <= 15 else None


def longest_prefix_zone(digits: str, prefixes: dict[str, str]) -> str | None:
    for length in range(len(digits), 0, -1):
        zone = prefixes.get(digits[:length])
        if zone is not None:
            return zone
    return None


def rule_zone_twin(dialled: str, is_number: bool, table) -> str | None:
    """The zone an exact rule (any destination) or a string-prefix rule (a destination that is not
    a number) gives ``dialled``; None when neither does. Rules and destination compare trimmed and
    case-folded; a string prefix is tried against every leading part of the destination."""
    folded = dialled.strip().casefold()
    for value, zone in table.exact:
        if value == folded:
            return zone
    if is_number:
        return None
    best, best_length = None, 0
    for prefix, zone in table.string_prefixes:
        if folded.startswith(prefix) and len(prefix) > best_length:
            best, best_length = zone, len(prefix)
    return best


def band_twin(instant_us: int, version: PlanVersion, timezone: str, holidays: set[str], zone: str) -> str:
    """The band at an instant for an event in ``zone``: on a holiday date the first holiday rule whose
    weekdays, zones and times hold; else the first weekday rule that holds; else the default band."""
    local = _instant(instant_us).astimezone(ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    if local.date().isoformat() in holidays:
        for rule in version.band_rules:
            if (rule.holiday and local.weekday() in rule.days and (ANY in rule.zones or zone in rule.zones)
                    and rule.from_minute <= minute < rule.to_minute):
                return rule.band
    for rule in version.band_rules:
        if not rule.holiday and local.weekday() in rule.days and rule.from_minute <= minute < rule.to_minute:
            return rule.band
    return version.default_band


def rate_for(version: PlanVersion, service: str, zone: str, band: str) -> Rate | None:
    for want_zone, want_band in ((zone, band), (zone, ANY), (ANY, band), (ANY, ANY)):
        for rate in version.rates:
            if rate.service == service and rate.zone == want_zone and rate.band == want_band:
                return rate
    return None


def cycle_twin(instant_us: int, timezone: str, bill_cycle_day: int) -> tuple[str, int, int]:
    """(YYYY-MM, start us, end us) of the billing cycle containing the instant."""
    zone = ZoneInfo(timezone)
    local = _instant(instant_us).astimezone(zone)
    year, month = local.year, local.month
    if local.day < bill_cycle_day:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)

    def midnight(y, m):
        wall = dt.datetime(y, m, bill_cycle_day)
        # Earliest instant whose local wall time is at or after the wall midnight.
        for fold in (0, 1):
            candidate = wall.replace(tzinfo=zone, fold=fold)
            back = candidate.astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None)
            if back == wall:
                return _us(candidate.astimezone(dt.timezone.utc))
        return _us(wall.replace(tzinfo=zone).astimezone(dt.timezone.utc))

    return f"{year:04d}-{month:02d}", midnight(year, month), midnight(next_year, next_month)


def _local_date(instant_us: int, timezone: str) -> dt.date:
    return _instant(instant_us).astimezone(ZoneInfo(timezone)).date()


def prorated_units(units: int, sub, cycle_start: int, cycle_end: int, timezone: str) -> int:
    start = max(sub.valid_from_us, cycle_start)
    end = min(sub.valid_to_us if sub.valid_to_us is not None else cycle_end, cycle_end)
    cycle_days = (_local_date(cycle_end - 1, timezone) - _local_date(cycle_start, timezone)).days + 1
    if end <= start:
        return 0
    days = (_local_date(end - 1, timezone) - _local_date(start, timezone)).days + 1
    return units * days // cycle_days


def version_end_us(plan, index: int) -> int | None:
    version = plan.versions[index]
    if version.valid_to_us is not None:
        return version.valid_to_us
    return plan.versions[index + 1].valid_from_us if index + 1 < len(plan.versions) else None


def grant_version(plan, sub, cycle_start: int, cycle_end: int) -> PlanVersion | None:
    """The version whose allowances and fees a subscription gets for a cycle: the first version in
    force at some instant of the subscription's part of the cycle."""
    start = max(sub.valid_from_us, cycle_start)
    end = min(sub.valid_to_us if sub.valid_to_us is not None else cycle_end, cycle_end)
    for index, version in enumerate(plan.versions):
        version_end = version_end_us(plan, index)
        if version.valid_from_us < end and (version_end is None or version_end > start):
            return version
    return None


def pool_grant(ref: ReferenceData, account_id: str, name: str, cycle_start: int, cycle_end: int,
               timezone: str) -> int:
    """Units of the pooled allowance ``name`` an account gets for a cycle: the sum over its
    subscriptions of what each would get on its own (``prorated_units`` of the grant version's
    ``pool: account`` allowance of that name; 0 for a subscription whose version does not list it)."""
    total = 0
    for sub in ref.subscriptions:
        if sub.account_id != account_id:
            continue
        if sub.valid_from_us >= cycle_end or (sub.valid_to_us is not None and sub.valid_to_us <= cycle_start):
            continue
        version = grant_version(ref.plans[sub.plan_id], sub, cycle_start, cycle_end)
        for allowance in version.allowances if version is not None else ():
            if allowance.pooled and allowance.name == name:
                total += prorated_units(allowance.units, sub, cycle_start, cycle_end, timezone)
    return total


class _State:
    """Allowance units left per (subscription, cycle, allowance) and per (POOL, account, cycle,
    allowance) for pooled ones, and tier usage per (account, cycle, group)."""

    def __init__(self):
        self.granted: set[tuple] = set()
        self.allowance_left: dict[tuple, int] = {}
        self.tier_used: dict[tuple, int] = {}


_POOL = "pool"   # first element of a pooled allowance's key in _State.allowance_left


def rate_rows_twin(rows: list[dict], ref: ReferenceData) -> list[dict]:
    """Rate usage rows with the twin; returns per row a dict with ``reason`` and the priced fields."""
    prefix_tables = {name: dict(t.prefixes) for name, t in ref.zone_tables.items()}
    roaming_tables = {name: dict(t.prefixes) for name, t in ref.roaming_tables.items()}
    subs_by_identity: dict[tuple[str, str], list] = {}
    for sub in ref.subscriptions:
        subs_by_identity.setdefault((sub.kind, sub.subscriber), []).append(sub)

    prepared = []
    for index, row in enumerate(rows):
        prepared.append(_enrich(index, row, ref, subs_by_identity, prefix_tables, roaming_tables))
    # Event-time order per (account, cycle); ties by (source, record_id).
    order = sorted(range(len(rows)), key=lambda i: (
        prepared[i].get("account_id") or "", prepared[i].get("cycle") or "", rows[i]["start_time"],
        rows[i]["source"], rows[i]["record_id"]))
    state = _State()
    results: list[dict | None] = [None] * len(rows)
    for i in order:
        p = prepared[i]
        if p["reason"] == Reason.RATED:
            _price(p, rows[i], ref, state)
        results[i] = p
    return results


def _identity(row) -> tuple[str | None, str]:
    """(kind, value) of the row's subscriber: ``subscriber`` and its kind when set, else
    ``served_msisdn`` as an MSISDN; a SIP URI with its scheme and host lower-cased."""
    if row.get("subscriber") is None:
        return "msisdn", row["served_msisdn"]
    kind, value = row.get("subscriber_kind"), row["subscriber"]
    if kind == "sip":
        scheme, _, rest = value.partition(":")
        user, at, host = rest.partition("@")
        if scheme.lower() == "sip" and at and host.isascii():
            value = f"sip:{user}@{host.lower()}"
    return kind, value


def _enrich(index, row, ref, subs_by_identity, prefix_tables, roaming_tables) -> dict:
    out = {"index": index, "reason": Reason.RATED}
    type_name = (row.get("usage_type") or row["service"]).upper()
    usage_type = ref.usage_types.get(type_name)
    if usage_type is None:
        out["reason"] = Reason.UNKNOWN_USAGE_TYPE
        return out
    out["usage_type"] = usage_type
    t = row["start_time"]
    sub = next((s for s in subs_by_identity.get(_identity(row), [])
                if s.valid_from_us <= t and (s.valid_to_us is None or t < s.valid_to_us)), None)
    if sub is None:
        out["reason"] = Reason.UNKNOWN_SUBSCRIBER
        return out
    plan = ref.plans[sub.plan_id]
    account = ref.accounts[sub.account_id]
    version = None
    for k, v in enumerate(plan.versions):
        end = version_end_us(plan, k)
        if v.valid_from_us <= t and (end is None or t < end):
            version = v
    if version is None:
        out["reason"] = Reason.NO_PLAN_VERSION
        return out
    cycle, cycle_start, cycle_end = cycle_twin(t, account.timezone, account.bill_cycle_day)
    out.update(sub=sub, plan=plan, version=version, account_id=account.account_id, cycle=cycle,
               cycle_start=cycle_start, cycle_end=cycle_end, account_tz=account.timezone)
    destination = None
    named_zone = None   # from an exact or string-prefix rule
    if usage_type.destination != "none" and row.get("other_party") is not None:
        destination = normalise_twin(row["other_party"], plan.numbering)
        named_zone = rule_zone_twin(row["other_party"], destination is not None, ref.zone_tables[version.zone_table])
        if destination is None and named_zone is None:
            out["reason"] = Reason.INVALID_NUMBER
            return out
    out["destination_e164"] = destination
    visited = row.get("visited_network")
    if visited is not None and visited not in ref.operator.home_networks:
        table = roaming_tables.get(version.roaming_table) if version.roaming_table else None
        zone = longest_prefix_zone(visited, table) if table is not None and visited.isdigit() else None
    elif usage_type.destination == "none" or (usage_type.destination == "optional" and row.get("other_party") is None):
        zone = HOME_ZONE
    elif named_zone is not None:
        zone = named_zone
    else:
        zone = longest_prefix_zone(destination or "", prefix_tables[version.zone_table])
    if zone is None:
        out["reason"] = Reason.NO_ZONE
        return out
    out["zone"] = zone
    return out


def _raw_units(row, usage_type) -> int:
    if row.get("quantity") is not None:
        return row["quantity"]
    if usage_type.unit == "seconds":
        return row["duration_s"]
    if usage_type.unit in ("messages", "count"):
        return row["message_count"]
    return row["bytes_up"] + row["bytes_down"]


def _price(p: dict, row: dict, ref: ReferenceData, state: _State) -> None:
    version: PlanVersion = p["version"]
    plan = p["plan"]
    usage_type = p["usage_type"]
    service = usage_type.service
    raw = _raw_units(row, usage_type)
    t0 = row["start_time"]
    holidays = set(ref.calendars[version.holiday_calendar].dates) if version.holiday_calendar else set()
    if raw > usage_type.max_units:
        p["reason"] = Reason.OVERFLOW
        return
    band0 = band_twin(t0, version, plan.timezone, holidays, p["zone"])
    rate0 = rate_for(version, service, p["zone"], band0)
    if rate0 is None:
        p["reason"] = Reason.NO_RATE
        return

    slot = (p["sub"], p["cycle"])
    if slot not in state.granted:
        state.granted.add(slot)
        for a in grant_version(plan, p["sub"], p["cycle_start"], p["cycle_end"]).allowances:
            if not a.pooled:
                state.allowance_left[(*slot, a.name)] = prorated_units(
                    a.units, p["sub"], p["cycle_start"], p["cycle_end"], p["account_tz"])
    covering = [a for a in sorted(version.allowances, key=lambda a: a.order)
                if a.service == service and (ANY in a.zones or p["zone"] in a.zones)]
    allowances = [a.name for a in covering]
    # Where each covering allowance's balance lives: the subscription's, or the account's pool.
    key_of = {a.name: (_POOL, p["account_id"], p["cycle"], a.name) if a.pooled else (*slot, a.name)
              for a in covering}
    for a in covering:
        if a.pooled and key_of[a.name] not in state.allowance_left:
            state.allowance_left[key_of[a.name]] = pool_grant(ref, p["account_id"], a.name, p["cycle_start"],
                                                              p["cycle_end"], p["account_tz"])
    snapshot = {key_of[name]: state.allowance_left.get(key_of[name], 0) for name in allowances}   # by balance key

    def take(inc: int) -> str | None:
        for name in allowances:
            key = key_of[name]
            if state.allowance_left.get(key, 0) >= inc:
                state.allowance_left[key] -= inc
                return name
        return None

    amount = Fraction(0)
    used: dict[str, int] = {}
    paid_any = False
    first_covered = False
    free = 0
    charged = 0
    split = False
    tier = -1
    tier_after = None   # (tier key, counter after this event): written once the event is priced
    if raw == 0:
        paid_any = version.zero_duration_charged
    elif rate0.tiers is not None:
        inc = rate0.tiers.increment_units
        n = -(-raw // inc)
        charged = n * inc
        covered = 0
        for k in range(n):
            name = take(inc)
            if name is None:
                break  # coverage is a prefix: once no allowance holds an increment, none holds the next
            used[name] = used.get(name, 0) + inc
            covered += 1
        first_covered = covered > 0
        free = covered * inc
        paid = charged - free
        paid_any = paid > 0
        key = (p["account_id"], p["cycle"], rate0.tiers.group)
        cum = state.tier_used.get(key, 0)
        low = 0
        levels = rate0.tiers.levels
        for index, level in enumerate(levels):
            high = level.up_to_units if level.up_to_units is not None else float("inf")
            overlap = min(cum + paid, high) - max(cum, low)
            if overlap > 0:
                amount += Fraction(level.price_micros * int(overlap), level.per_units)
            if cum + paid <= high or index == len(levels) - 1:
                tier = index
                break
            low = high
        tier_after = (key, cum + paid)
    else:
        u = 0
        while u < raw:
            if usage_type.unit == "seconds":   # each increment in the band of its start
                band = band_twin(t0 + u * 1_000_000, version, plan.timezone, holidays, p["zone"])
                rate = rate_for(version, service, p["zone"], band)
                if rate is None:
                    state.allowance_left.update(snapshot)
                    p["reason"] = Reason.NO_RATE
                    return
                split = split or band != band0
            else:
                rate = rate0
            step = [s for s in rate.steps if s.from_units <= u][-1]
            inc = step.increment_units
            name = take(inc)
            if name is not None:
                used[name] = used.get(name, 0) + inc
                free += inc
                if u == 0:
                    first_covered = True
            else:
                paid_any = True
                if rate.increment_rounding is not None:
                    amount += round_fraction(Fraction(step.price_micros * inc, step.per_units), rate.increment_rounding)
                else:
                    amount += Fraction(step.price_micros * inc, step.per_units)
            u += inc
        charged = u
    connect = 0
    if paid_any and not first_covered:
        connect = rate0.connect_fee_micros
        amount += connect
    if amount >= _EXACT_LIMIT:   # before minimum and maximum: the event's own arithmetic leaves the safe range
        _overflow(p, state, snapshot)
        return
    if paid_any:
        if rate0.minimum_micros is not None and amount < rate0.minimum_micros:
            amount = Fraction(rate0.minimum_micros)
        if rate0.maximum_micros is not None and amount > rate0.maximum_micros:
            amount = Fraction(rate0.maximum_micros)
    if amount >= _EXACT_LIMIT:   # a minimum charge of 2^62 micros or more
        _overflow(p, state, snapshot)
        return
    if tier_after is not None:
        state.tier_used[tier_after[0]] = tier_after[1]
    rounding = rate0.rounding or usage_type.rounding or version.rounding
    charge = round_fraction(amount, rounding)
    p.update(charge_micros=charge, connect_fee_micros=connect, charged_units=charged, free_units=free,
             band=band0, band_split=split, tier=tier, raw_units=raw,
             rounding_nanos=int((charge - amount) * 1000),
             allowance_units=[(n, used[n]) for n in allowances if used.get(n)],
             rate_id=f"{plan.plan_id}/v{version.version}/{service}/{rate0.zone}/{rate0.band}", service=usage_type.name,
             plan_version=version.version)


def _overflow(p: dict, state: _State, snapshot: dict) -> None:
    """Reject OVERFLOW: the event gives back what it took from its allowances, its subscription's or
    its account's pool (``snapshot``: balance key -> units before the event; tier counters it has not
    moved yet)."""
    state.allowance_left.update(snapshot)
    p["reason"] = Reason.OVERFLOW
