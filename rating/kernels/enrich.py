"""Effective dating and billing cycles: subscription and plan version in force, cycle of an event."""

from __future__ import annotations

import numpy as np
from numba import njit

from cdr_schemas.reasons import Reason
from rating.kernels.calendar import (US_PER_DAY, US_PER_S, civil_from_days, days_from_civil, local_to_utc, offset_and_next,
                                     offset_interval)

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
UNKNOWN_SUBSCRIBER = int(Reason.UNKNOWN_SUBSCRIBER)
NO_PLAN_VERSION = int(Reason.NO_PLAN_VERSION)
OVERFLOW = int(Reason.OVERFLOW)
INVALID_FIELD = int(Reason.INVALID_FIELD)


@njit(nogil=True, cache=True)
def raw_units(service, duration_s, message_count, bytes_up, bytes_down, quantity, quantity_valid, type_unit,
              max_units, out_units, out_reason):
    """Raw units per row of usage type ``service`` (a type code): ``quantity`` where
    ``quantity_valid`` is 1 (an empty ``quantity_valid``: no row has one), else by the type's unit
    (``type_unit``): seconds (0) ``duration_s``, messages (1) and counts (3) ``message_count``,
    bytes (2) ``bytes_up + bytes_down``.

    A counter above the type's largest ratable event (``max_units[service]``) is OVERFLOW and a
    negative one INVALID_FIELD (which wins); such rows get 0 units, so no wrapped int64 sum
    (2^62 + 2^62 is negative) ever reaches the kernels' allowance and tier counters, shared by the
    whole account and cycle. ``out_reason`` is 0 for the others.
    """
    has_quantity = len(quantity_valid) > 0
    for i in range(len(service)):
        s = service[i]
        unit = type_unit[s]
        units = 0
        reason = 0
        if has_quantity and quantity_valid[i] == 1:
            units = quantity[i]
            if units < 0:
                reason = INVALID_FIELD
            elif units > max_units[s]:
                reason = OVERFLOW
        elif unit != 2:
            units = duration_s[i] if unit == 0 else np.int64(message_count[i])
            if units < 0:
                reason = INVALID_FIELD
            elif units > max_units[s]:
                reason = OVERFLOW
        else:
            up = bytes_up[i]
            down = bytes_down[i]
            if up < 0 or down < 0:
                reason = INVALID_FIELD
            elif up > max_units[s] or down > max_units[s]:
                reason = OVERFLOW
            else:
                units = up + down   # both within [0, max_units[s]] <= 2^44: no wrap
        out_units[i] = units if reason == 0 else 0
        out_reason[i] = reason


@njit(nogil=True, cache=True)
def subscription_fields(sub_row, sub_plan, sub_account, account_tz, account_bcd, out_plan, out_account, out_tz,
                        out_bcd):
    """Plan, account, account timezone and bill cycle day of each row's subscription row
    (``sub_row`` -1: none, giving plan 0, account -1, timezone -1, bill cycle day 1)."""
    for i in range(len(sub_row)):
        r = sub_row[i]
        if r < 0:
            out_plan[i] = 0
            out_account[i] = -1
            out_tz[i] = -1
            out_bcd[i] = 1
        else:
            a = sub_account[r]
            out_plan[i] = sub_plan[r]
            out_account[i] = a
            out_tz[i] = account_tz[a]
            out_bcd[i] = account_bcd[a]


@njit(nogil=True, cache=True)
def find_subscriptions(subscriber, start_us, sub_first, sub_count, sub_from_us, sub_to_us, out_row, out_reason):
    """Subscription row in force at each start time ([from, to)); -1 and UNKNOWN_SUBSCRIBER if none."""
    for i in range(len(subscriber)):
        out_row[i] = -1
        if out_reason[i] != 0:
            continue
        s = subscriber[i]
        if s >= 0:
            t = start_us[i]
            for r in range(sub_first[s], sub_first[s] + sub_count[s]):
                if sub_from_us[r] <= t < sub_to_us[r]:
                    out_row[i] = r
                    break
        if out_row[i] < 0:
            out_reason[i] = UNKNOWN_SUBSCRIBER


@njit(nogil=True, cache=True)
def find_versions(plan, start_us, plan_first_version, plan_version_count, ver_from_us, ver_to_us,
                  out_version, out_reason):
    """Plan version in force at each start time; -1 and NO_PLAN_VERSION if none."""
    for i in range(len(plan)):
        out_version[i] = -1
        if out_reason[i] != 0:
            continue
        p = plan[i]
        t = start_us[i]
        for v in range(plan_first_version[p], plan_first_version[p] + plan_version_count[p]):
            if ver_from_us[v] <= t < ver_to_us[v]:
                out_version[i] = v
                break
        if out_version[i] < 0:
            out_reason[i] = NO_PLAN_VERSION


@njit(nogil=True, cache=True)
def cycle_month_of(t_us, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets):
    """Cycle month index (year*12+month-1 of the cycle's start) of an instant in timezone ``tz``."""
    off, _ = offset_and_next(t_us, tz, tz_start, tz_transitions, tz_offsets)
    y, m, d = civil_from_days((t_us + off * US_PER_S) // US_PER_DAY)
    return _cycle_month(y * 12 + (m - 1), d, bill_cycle_day)


@njit(nogil=True, cache=True)
def _cycle_month(month, day_of_month, bill_cycle_day):
    """Cycle month of local date (``month`` = year*12+month-1, ``day_of_month``): the cycle that
    starts on ``bill_cycle_day`` of that month, or of the month before when the day is earlier."""
    return month - 1 if day_of_month < bill_cycle_day else month


@njit(nogil=True, cache=True)
def cycle_bounds_of(month, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets):
    """(UTC start, UTC end) of cycle ``month``: ``bill_cycle_day`` 00:00 local to the same day next month."""
    start_day = days_from_civil(month // 12, month % 12 + 1, bill_cycle_day)
    end_day = days_from_civil((month + 1) // 12, (month + 1) % 12 + 1, bill_cycle_day)
    start = local_to_utc(start_day * US_PER_DAY, tz, tz_start, tz_transitions, tz_offsets)
    end = local_to_utc(end_day * US_PER_DAY, tz, tz_start, tz_transitions, tz_offsets)
    return start, end


@njit(nogil=True, cache=True)
def cycle_of(t_us, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets):
    """(cycle month index year*12+month-1, cycle start UTC us, cycle end UTC us) of an instant.

    The cycle runs from ``bill_cycle_day`` 00:00 local to the same day next month.
    """
    month = cycle_month_of(t_us, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets)
    start, end = cycle_bounds_of(month, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets)
    return month, start, end


_MAX_BOUND_CACHE = 4_000_000   # (timezone, bill cycle day, month) slots; beyond it bounds are computed per row


@njit(nogil=True, cache=True)
def assign_cycles(start_us, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets,
                  out_month, out_start_us, out_end_us):
    """Billing cycle of each event's start in its account's timezone (rows with tz < 0 skipped).

    A batch holds few distinct (timezone, bill cycle day, month) triples: their bounds (eight
    timezone searches each) are computed once and reused for every row. Each timezone's offset is
    searched again only when a start falls outside the interval the last one found holds for.
    """
    n = len(start_us)
    lo = INT64_MAX
    hi = INT64_MIN
    max_bcd = 0
    # Per timezone, the last offset found and the UTC interval it holds for: a batch spans days,
    # offsets change twice a year, so the transition search runs a few times per timezone.
    zones = len(tz_start) - 1
    known_from = np.full(zones, INT64_MAX, np.int64)
    known_to = np.full(zones, INT64_MIN, np.int64)
    known_offset = np.zeros(zones, np.int64)
    known_day = np.full(zones, INT64_MIN, np.int64)   # and the last local day met, with its month and day
    known_month = np.zeros(zones, np.int64)
    known_day_of_month = np.zeros(zones, np.int64)
    for i in range(n):
        z = tz[i]
        if z < 0:
            out_month[i] = -1
            continue
        t = start_us[i]
        if not known_from[z] <= t < known_to[z]:
            known_offset[z], known_from[z], known_to[z] = offset_interval(t, z, tz_start, tz_transitions, tz_offsets)
        day = (t + known_offset[z] * US_PER_S) // US_PER_DAY
        if day != known_day[z]:
            y, m, d = civil_from_days(day)
            known_day[z] = day
            known_month[z] = y * 12 + (m - 1)
            known_day_of_month[z] = d
        month = _cycle_month(known_month[z], known_day_of_month[z], bill_cycle_day[i])
        out_month[i] = month
        lo = min(lo, month)
        hi = max(hi, month)
        max_bcd = max(max_bcd, bill_cycle_day[i])
    if hi < lo:
        return
    days = max_bcd + 1
    slots = (len(tz_start) - 1) * days * (hi - lo + 1)
    cached = slots <= _MAX_BOUND_CACHE
    cache_start = np.full(slots if cached else 0, INT64_MIN, np.int64)
    cache_end = np.zeros(slots if cached else 0, np.int64)
    for i in range(n):
        if tz[i] < 0:
            continue
        month = out_month[i]
        if not cached:
            out_start_us[i], out_end_us[i] = cycle_bounds_of(month, tz[i], bill_cycle_day[i], tz_start,
                                                             tz_transitions, tz_offsets)
            continue
        slot = (tz[i] * days + bill_cycle_day[i]) * (hi - lo + 1) + (month - lo)
        if cache_start[slot] == INT64_MIN:
            cache_start[slot], cache_end[slot] = cycle_bounds_of(month, tz[i], bill_cycle_day[i], tz_start,
                                                                 tz_transitions, tz_offsets)
        out_start_us[i] = cache_start[slot]
        out_end_us[i] = cache_end[slot]


@njit(nogil=True, cache=True)
def local_day(t_us, tz, tz_start, tz_transitions, tz_offsets):
    off, _ = offset_and_next(t_us, tz, tz_start, tz_transitions, tz_offsets)
    return (t_us + off * US_PER_S) // US_PER_DAY


@njit(nogil=True, cache=True)
def active_days(sub_from_us, sub_to_us, cycle_start_us, cycle_end_us, tz, tz_start, tz_transitions, tz_offsets,
                out_days, out_cycle_days):
    """Local calendar days a subscription is active in a cycle (a partial day counts), and cycle days."""
    for i in range(len(sub_from_us)):
        a = max(sub_from_us[i], cycle_start_us[i])
        b = min(sub_to_us[i], cycle_end_us[i])
        first = local_day(cycle_start_us[i], tz[i], tz_start, tz_transitions, tz_offsets)
        last = local_day(cycle_end_us[i] - 1, tz[i], tz_start, tz_transitions, tz_offsets)
        out_cycle_days[i] = last - first + 1
        if b <= a:
            out_days[i] = 0
        else:
            out_days[i] = (local_day(b - 1, tz[i], tz_start, tz_transitions, tz_offsets)
                           - local_day(a, tz[i], tz_start, tz_transitions, tz_offsets) + 1)


@njit(nogil=True, cache=True)
def cycle_bounds(month, tz, bill_cycle_day, tz_start, tz_transitions, tz_offsets, out_start_us, out_end_us):
    """UTC start and end of cycle ``month`` (year*12+month-1 of its start) for each account row."""
    for i in range(len(month)):
        out_start_us[i], out_end_us[i] = cycle_bounds_of(month[i], tz[i], bill_cycle_day[i], tz_start,
                                                         tz_transitions, tz_offsets)


@njit(nogil=True, cache=True)
def find_overlapping_versions(plan, from_us, to_us, plan_first_version, plan_version_count, ver_from_us,
                              ver_to_us, out_version):
    """First version of each plan that is in force at some instant of [from, to); -1 if none.

    That is the version in force at ``from``, or else the first one starting before ``to``: the
    version whose allowances and fees a subscription gets for (its part of) a cycle.
    """
    for i in range(len(plan)):
        out_version[i] = -1
        p = plan[i]
        for v in range(plan_first_version[p], plan_first_version[p] + plan_version_count[p]):
            if ver_from_us[v] < to_us[i] and ver_to_us[v] > from_us[i]:
                out_version[i] = v
                break
