"""Pricing: time bands, steps and increments, allowances and graduated tiers, rounding.

``rate_events`` walks each event's increments in elapsed order. At each point it takes the band in
force at that instant (types counted in seconds, such as voice; the others keep the band of their
start), the rate for (usage type, zone, band), the step containing the elapsed units, and prices whole increments until
the step, the usage or the band ends. Allowances cover whole increments in their declared order;
graduated tiers split an event's paid units over cumulative cycle usage. Money is accumulated
exactly as ``whole`` micro-units plus ``frac / denominator`` and rounded once per event. An event
whose exact amount (connect fee and paid increments, before minimum and maximum) reaches 2^62
micro-units is OVERFLOW: the sums are checked before each product is formed, so none wraps.

Events must be ordered by (account, cycle, start time, source, record_id) so that the allowance
and tier state (rows of ``allow_state`` / ``tier_state`` chosen by slot columns) is consumed in
event-time order: the result does not depend on arrival order or batching.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cdr_schemas.reasons import Reason
from rating.kernels.calendar import US_PER_DAY, US_PER_MIN, US_PER_S, offset_and_next
from rating.tables import MAX_ALLOWANCES_PER_EVENT

NO_RATE = int(Reason.NO_RATE)
OVERFLOW = int(Reason.OVERFLOW)
INVALID_FIELD = int(Reason.INVALID_FIELD)
ROUND_UP, ROUND_DOWN, ROUND_HALF_UP, ROUND_HALF_EVEN = 0, 1, 2, 3
_INT64_MAX = np.iinfo(np.int64).max
_OVERFLOW_LIMIT = 2**62
_SMALL = 2**31   # two factors below it multiply to less than 2^62


@njit(nogil=True, cache=True)
def _ceil_div(a, b):
    return -((-a) // b)


@njit(nogil=True, cache=True, inline="always")
def _is_holiday(day, holidays_day, first, count):
    lo = first
    hi = first + count
    while lo < hi:
        mid = (lo + hi) // 2
        if holidays_day[mid] < day:
            lo = mid + 1
        else:
            hi = mid
    return lo < first + count and holidays_day[lo] == day


@njit(nogil=True, cache=True, inline="always")
def band_at(t_us, v, h, tz, tz_start, tz_transitions, tz_offsets, week_band, week_next_min, ver_hol_first,
            ver_hol_count, holidays_day, hol_band, hol_next_min):
    """(band, UTC instant at which the band may next change) at ``t_us`` for plan version ``v``; ``h``
    is the row of ``hol_band`` for the event's zone (``hol_variant[v, zone]``: holiday rules may
    apply to some zones and weekdays only). The caller looks ``h`` up once per event: passing
    ``hol_variant`` and the zone in here instead cost ~3% of the kernel's time (measured).

    Takes only the arrays it reads, not the whole ``RatingTables``: Numba reference-counts every
    array of a tuple argument on each call, which cost ~90% of the kernel's time (perf/RESULTS.md).
    Inlined (with ``_is_holiday`` and the timezone search it calls) in Numba IR: no calls and
    fewer reference counts per record (kernel 123 -> 95 ms per 1M records, same charges).
    """
    off, next_transition = offset_and_next(t_us, tz, tz_start, tz_transitions, tz_offsets)
    local = t_us + off * US_PER_S
    day = local // US_PER_DAY
    minute = (local - day * US_PER_DAY) // US_PER_MIN
    w = ((day + 3) % 7) * 1440 + minute  # 1970-01-01 was a Thursday; 0 = Monday
    band = week_band[v, w]
    minutes = week_next_min[v, w]
    count = ver_hol_count[v]
    if count > 0:
        if _is_holiday(day, holidays_day, ver_hol_first[v], count):
            holiday_band = hol_band[h, w]
            holiday_minutes = hol_next_min[h, w]
            if holiday_band >= 0:
                band = holiday_band
                minutes = holiday_minutes
            elif holiday_minutes < minutes:
                minutes = holiday_minutes
        if 1440 - minute < minutes:  # tomorrow may be a holiday, or not
            minutes = 1440 - minute
    change = (day * 1440 + minute + minutes) * US_PER_MIN - off * US_PER_S
    if next_transition < change:
        change = next_transition
    return band, change


@njit(nogil=True, cache=True)
def round_exact(whole, frac, den, q, mode):
    """Round whole + frac/den (micros, non-negative) to a multiple of q micros."""
    rest = whole % q
    base = whole - rest
    num = rest * den + frac  # < q * den
    if num == 0:
        return whole
    span = q * den
    if mode == ROUND_UP:
        up = True
    elif mode == ROUND_DOWN:
        up = False
    elif mode == ROUND_HALF_UP:
        up = 2 * num >= span
    else:
        up = 2 * num > span or (2 * num == span and (base // q) % 2 == 1)
    return base + q if up else base


@njit(nogil=True, cache=True)
def rounding_nanos(rounded, whole, frac, den):
    """(rounded - (whole + frac/den)) in nano-units, truncated toward zero."""
    x = (rounded - whole) * 1000 - (frac * 1000) // den
    if (frac * 1000) % den != 0 and x > 0:
        x -= 1
    return x


@njit(nogil=True, cache=True)
def _add_exact(whole, frac, den, price, units, per):
    """(whole, frac) + price x units / per, exactly; (_OVERFLOW_LIMIT, 0) once the whole part
    reaches it (sticky: a later add keeps it there). ``whole`` < _OVERFLOW_LIMIT or equal to it,
    ``price x per`` < 2^62 (rating.compile checks it), so no product or sum wraps."""
    q = units // per
    # price x q < 2^62 when both are below 2^31 (the usual case: no division); else compare exactly
    if (q >= _SMALL or price >= _SMALL) and price > 0 and q >= _ceil_div(_OVERFLOW_LIMIT - whole, price):
        return _OVERFLOW_LIMIT, 0   # price x q alone takes the sum to the limit
    r = units - q * per
    pr = price * r
    whole += price * q + pr // per
    frac += (pr % per) * (den // per)
    if frac >= den:
        whole += frac // den
        frac = frac % den
    if whole >= _OVERFLOW_LIMIT:
        return _OVERFLOW_LIMIT, 0
    return whole, frac


@njit(nogil=True, cache=True, inline="always")
def _add_whole(whole, count, price):
    """whole + count x price micros (non-negative), or _OVERFLOW_LIMIT once the sum reaches it."""
    if (count >= _SMALL or price >= _SMALL) and price > 0 and count >= _ceil_div(_OVERFLOW_LIMIT - whole, price):
        return _OVERFLOW_LIMIT
    whole += count * price   # < 2^62 + 2^62: no wrap
    return _OVERFLOW_LIMIT if whole >= _OVERFLOW_LIMIT else whole


@njit(nogil=True, cache=True, inline="always")  # inlined in Numba IR: no call, no array refcounts
def _cover_increments(allow_state, cover_row, cover, used, k, n_inc, inc):
    """Cover up to ``n_inc`` increments of ``inc`` units from the ``k`` allowances ``cover`` (names,
    in consumption order), each held in row ``cover_row[q]`` of ``allow_state`` (the subscription's
    slot, or the account's pool); whole increments only. Takes them from ``allow_state``, adds them
    to ``used`` and returns how many increments were covered."""
    covered = 0
    for q in range(k):
        if covered == n_inc:
            break
        left = allow_state[cover_row[q], cover[q]]
        c = min(n_inc - covered, left // inc)
        if c > 0:
            allow_state[cover_row[q], cover[q]] = left - c * inc
            used[q] += c * inc
            covered += c
    return covered


@njit(nogil=True, cache=True, inline="always")
def _give_back(allow_state, cover_row, cover, used, k):
    """Return to the allowances (the subscription's row or the account's pool) what a rejected event took."""
    for q in range(k):
        allow_state[cover_row[q], cover[q]] += used[q]


@njit(nogil=True, cache=True)
def rate_events(service, raw_units, start_us, zone, version, tz, allow_slot, tier_slot, pool_base, T,
                allow_state, tier_state,
                out_reason, out_charge, out_connect, out_charged, out_free, out_band, out_split,
                out_rate, out_tier, out_rounding_nanos, out_allow_name, out_allow_used):
    """Rate events in order. Rows whose ``out_reason`` is already non-zero are left unrated.

    Per row: ``service`` the usage type code (0 voice / 1 sms / 2 data / declared types; ``T.type_split``
    says which walk the bands increment by increment); ``raw_units`` in the type's unit;
    ``zone`` and ``version`` global ids; ``tz`` the plan's timezone id; ``allow_slot`` a row of
    ``allow_state`` (remaining units per allowance name) or -1; ``tier_slot`` a row of
    ``tier_state`` (paid units so far per tier group) or -1. Both states are updated in place.
    A pooled allowance (``T.allow_pooled``) is held in the account's row of ``allow_state`` for the
    cycle, ``pool_base + tier_slot`` (one per account and cycle, as tier slots are); ``pool_base``
    -1: no pool rows (the reference has no pooled allowance, or a stateless run).
    """
    cover = np.empty(MAX_ALLOWANCES_PER_EVENT, np.int64)
    cover_row = np.empty(MAX_ALLOWANCES_PER_EVENT, np.int64)
    used = np.empty(MAX_ALLOWANCES_PER_EVENT, np.int64)
    tz_start, tz_transitions, tz_offsets = T.tz_start, T.tz_transitions, T.tz_offsets
    week_band, week_next_min, hol_band, hol_next_min = T.week_band, T.week_next_min, T.hol_band, T.hol_next_min
    ver_hol_first, ver_hol_count, holidays_day = T.ver_hol_first, T.ver_hol_count, T.holidays_day
    hol_variant = T.hol_variant
    type_split = T.type_split
    for i in range(len(service)):
        for q in range(MAX_ALLOWANCES_PER_EVENT):
            out_allow_name[i, q] = -1
            out_allow_used[i, q] = 0
        out_charge[i] = 0
        out_connect[i] = 0
        out_charged[i] = 0
        out_free[i] = 0
        out_band[i] = -1
        out_split[i] = 0
        out_rate[i] = -1
        out_tier[i] = -1
        out_rounding_nanos[i] = 0
        if out_reason[i] != 0:
            continue
        s = service[i]
        raw = raw_units[i]
        t0 = start_us[i]
        z = zone[i]
        v = version[i]
        if raw < 0:  # rate() rejects these first; never let one reach the shared counters
            out_reason[i] = INVALID_FIELD
            continue
        if raw > T.max_units[s]:
            out_reason[i] = OVERFLOW
            continue
        h = hol_variant[v, z]   # the holiday week of this version for the event's zone
        band0, change = band_at(t0, v, h, tz[i], tz_start, tz_transitions, tz_offsets, week_band, week_next_min,
                                ver_hol_first, ver_hol_count, holidays_day, hol_band, hol_next_min)
        r0 = T.rate_index[v, s, z, band0]
        if r0 < 0:
            out_reason[i] = NO_RATE
            continue
        out_band[i] = band0
        out_rate[i] = r0

        # Allowances that cover this service and zone, in consumption order.
        k = 0
        slot = allow_slot[i]
        if slot >= 0:
            pool_row = pool_base + tier_slot[i] if pool_base >= 0 and tier_slot[i] >= 0 else -1
            a0 = T.ver_allow_first[v]
            for a in range(a0, a0 + T.ver_allow_count[v]):
                if T.allow_service[a] == s and T.allow_zone_ok[a, z] == 1:
                    row = slot
                    if T.allow_pooled[a] == 1:
                        row = pool_row
                        if row < 0:
                            continue
                    cover[k] = T.allow_name[a]
                    cover_row[k] = row
                    used[k] = 0
                    k += 1

        den = T.ver_denominator[v]
        whole = 0
        frac = 0
        paid_any = False
        first_covered = False
        charged = 0
        free = 0
        failed = False
        failed_reason = NO_RATE
        tier_group = -1  # the tier counter this event moves, written back only once it is priced
        tier_after = 0
        if raw == 0:
            paid_any = T.ver_zero_charged[v] == 1
        elif T.rate_tier_group[r0] >= 0:
            inc = T.rate_tier_inc[r0]
            n_inc = _ceil_div(raw, inc)
            charged = n_inc * inc
            covered = _cover_increments(allow_state, cover_row, cover, used, k, n_inc, inc)
            first_covered = covered > 0
            free = covered * inc
            paid = charged - free
            paid_any = paid > 0
            g = T.rate_tier_group[r0]
            cum = 0
            if tier_slot[i] >= 0:
                cum = tier_state[tier_slot[i], g]
            if cum > _OVERFLOW_LIMIT - paid:  # the cycle's counter itself would leave int64
                failed_reason = OVERFLOW
                failed = True
            else:
                lo = 0
                l0 = T.rate_level_first[r0]
                last = l0 + T.rate_level_count[r0] - 1
                for lv in range(l0, last + 1):
                    hi = T.level_up_to[lv]
                    a = max(cum, lo)
                    b = min(cum + paid, hi)
                    if b > a:
                        whole, frac = _add_exact(whole, frac, den, T.level_price_micros[lv], b - a, T.level_per[lv])
                    if cum + paid <= hi or lv == last:
                        out_tier[i] = lv - l0
                        break
                    lo = hi
                if tier_slot[i] >= 0:
                    tier_group = g
                    tier_after = cum + paid
        else:
            u = 0
            r = r0
            band = band0
            split = type_split[s] == 1
            while u < raw:
                if split and u > 0 and t0 + u * US_PER_S >= change:
                    band, change = band_at(t0 + u * US_PER_S, v, h, tz[i], tz_start, tz_transitions, tz_offsets,
                                           week_band, week_next_min, ver_hol_first, ver_hol_count, holidays_day,
                                           hol_band, hol_next_min)
                    r = T.rate_index[v, s, z, band]
                    if r < 0:
                        failed = True
                        break
                    if band != band0:
                        out_split[i] = 1
                j0 = T.rate_step_first[r]
                j_end = j0 + T.rate_step_count[r]
                j = j0
                while j + 1 < j_end and T.step_from[j + 1] <= u:
                    j += 1
                seg_end = raw
                if j + 1 < j_end and T.step_from[j + 1] < seg_end:
                    seg_end = T.step_from[j + 1]
                if split:
                    u_change = _ceil_div(change - t0, US_PER_S)
                    if u_change < seg_end:
                        seg_end = u_change
                inc = T.step_inc[j]
                n_inc = _ceil_div(seg_end - u, inc)
                covered = _cover_increments(allow_state, cover_row, cover, used, k, n_inc, inc)
                if u == 0:
                    first_covered = covered > 0
                paid = n_inc - covered
                if paid > 0:
                    paid_any = True
                    if T.step_inc_price_micros[j] >= 0:
                        whole = _add_whole(whole, paid, T.step_inc_price_micros[j])
                    else:
                        whole, frac = _add_exact(whole, frac, den, T.step_price_micros[j], paid * inc, T.step_per[j])
                free += covered * inc
                u += n_inc * inc
            charged = u
        if failed:
            _give_back(allow_state, cover_row, cover, used, k)
            out_reason[i] = failed_reason
            out_tier[i] = -1
            continue

        if paid_any and not first_covered:
            out_connect[i] = T.rate_connect_micros[r0]
            whole = _add_whole(whole, 1, T.rate_connect_micros[r0])
        # The exact amount before minimum and maximum must stay in the safe range (a maximum does not
        # save it), and so must the charge after them (a minimum of 2^62 micros or more).
        overflow = whole >= _OVERFLOW_LIMIT
        if paid_any and not overflow:
            minimum = T.rate_min_micros[r0]
            if minimum >= 0 and whole < minimum:
                whole = minimum
                frac = 0
            maximum = T.rate_max_micros[r0]
            if maximum >= 0 and (whole > maximum or (whole == maximum and frac > 0)):
                whole = maximum
                frac = 0
        if overflow or whole >= _OVERFLOW_LIMIT:
            _give_back(allow_state, cover_row, cover, used, k)
            out_reason[i] = OVERFLOW
            out_connect[i] = 0
            out_tier[i] = -1
            continue
        if tier_group >= 0:
            tier_state[tier_slot[i], tier_group] = tier_after
        charge = round_exact(whole, frac, den, T.rate_round_q_micros[r0], T.rate_round_mode[r0])
        out_charge[i] = charge
        out_rounding_nanos[i] = rounding_nanos(charge, whole, frac, den)
        out_charged[i] = charged
        out_free[i] = free
        for q in range(k):
            if used[q] > 0:
                out_allow_name[i, q] = cover[q]
                out_allow_used[i, q] = used[q]
