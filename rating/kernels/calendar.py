"""Civil-calendar and timezone arithmetic for kernels: epoch days <-> dates, UTC <-> local.

Pure Numba functions over int64; timezones come as the arrays of ``rating.timezones.stack_zones``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

US_PER_S = 1_000_000
US_PER_MIN = 60 * US_PER_S
US_PER_DAY = 86_400 * US_PER_S
INT64_MAX = np.iinfo(np.int64).max


@njit(nogil=True, cache=True)
def civil_from_days(days):
    """(year, month, day) of a count of days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y, m, d


@njit(nogil=True, cache=True)
def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a civil date."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m + 9 if m <= 2 else m - 3
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(nogil=True, cache=True, inline="always")
def _transition_index(t_us, tz, tz_start, tz_transitions):
    lo = tz_start[tz]
    hi = tz_start[tz + 1] - 1
    # Last k in [lo, hi] with transitions[k] <= t_us; transitions[lo] is int64 min.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tz_transitions[mid] <= t_us:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(nogil=True, cache=True, inline="always")
def offset_and_next(t_us, tz, tz_start, tz_transitions, tz_offsets):
    """(offset in seconds east of UTC at t_us, UTC instant of the next offset change or INT64_MAX)."""
    k = _transition_index(t_us, tz, tz_start, tz_transitions)
    nxt = INT64_MAX
    if k + 1 < tz_start[tz + 1]:
        nxt = tz_transitions[k + 1]
    return tz_offsets[k], nxt


@njit(nogil=True, cache=True)
def offset_interval(t_us, tz, tz_start, tz_transitions, tz_offsets):
    """(offset in seconds east of UTC at t_us, UTC instant it took effect (int64 min: always),
    UTC instant of the next change or INT64_MAX): the offset holds on [from, to)."""
    k = _transition_index(t_us, tz, tz_start, tz_transitions)
    nxt = INT64_MAX
    if k + 1 < tz_start[tz + 1]:
        nxt = tz_transitions[k + 1]
    return tz_offsets[k], tz_transitions[k], nxt


@njit(nogil=True, cache=True)
def local_to_utc(local_us, tz, tz_start, tz_transitions, tz_offsets):
    """UTC instant of a local wall time.

    In a DST fold the earlier instant; in a DST gap the transition instant (the first instant whose
    local time is at or after the wall time). Assumes at most one transition within a day.
    """
    off_a, _ = offset_and_next(local_us - US_PER_DAY, tz, tz_start, tz_transitions, tz_offsets)
    off_b, _ = offset_and_next(local_us + US_PER_DAY, tz, tz_start, tz_transitions, tz_offsets)
    utc_a = local_us - off_a * US_PER_S
    utc_b = local_us - off_b * US_PER_S
    valid_a = offset_and_next(utc_a, tz, tz_start, tz_transitions, tz_offsets)[0] == off_a
    valid_b = offset_and_next(utc_b, tz, tz_start, tz_transitions, tz_offsets)[0] == off_b
    if valid_a and valid_b:
        return min(utc_a, utc_b)
    if valid_a:
        return utc_a
    if valid_b:
        return utc_b
    return offset_and_next(min(utc_a, utc_b), tz, tz_start, tz_transitions, tz_offsets)[1]
