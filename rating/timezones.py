"""IANA timezones compiled to offset-transition arrays that kernels can binary-search.

``zoneinfo`` knows the real rules (DST included) but is per-datetime Python; a kernel needs plain
arrays: ``transitions_us[k]`` is the UTC instant from which ``offsets_s[k]`` (seconds east of UTC)
applies. Index 0 holds the offset in force before the first transition at the start of the range.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo

import numpy as np

_RANGE_START = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
_RANGE_END = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
_MIN_US = np.iinfo(np.int64).min


@dataclasses.dataclass(frozen=True)
class CompiledZone:
    name: str
    transitions_us: np.ndarray  # int64, sorted; [0] = int64 min
    offsets_s: np.ndarray       # int64, seconds east of UTC from transitions_us[k]


def _offset_s(zone: zoneinfo.ZoneInfo, instant: dt.datetime) -> int:
    return int(instant.astimezone(zone).utcoffset().total_seconds())


@functools.cache
def compile_zone(name: str) -> CompiledZone:
    """Offset transitions of IANA zone ``name`` between 1990 and 2100, exact to the second.

    Raises ``ValueError`` naming the zone when it is unknown.
    """
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r}: use a name such as Europe/Berlin") from None
    transitions = [_MIN_US]
    offsets = [_offset_s(zone, _RANGE_START)]
    # One probe a day finds every change as long as two changes are more than a day apart: the
    # assumption the calendar kernels already make (kernels.calendar.local_to_utc), and true of
    # every zone in the tz database over 1990-2100.
    step = dt.timedelta(days=1)
    lo = _RANGE_START
    current = offsets[0]
    while lo < _RANGE_END:
        hi = lo + step
        off_hi = _offset_s(zone, hi)
        if off_hi != current:
            # Binary-search the second at which the offset changes in (lo, hi].
            a, b = int(lo.timestamp()), int(hi.timestamp())
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_s(zone, dt.datetime.fromtimestamp(mid, dt.timezone.utc)) == current:
                    a = mid
                else:
                    b = mid
            transitions.append(b * 1_000_000)
            offsets.append(off_hi)
            current = off_hi
        lo = hi
    return CompiledZone(name, np.asarray(transitions, np.int64), np.asarray(offsets, np.int64))


def stack_zones(names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate compiled zones for kernels: (first index per zone [n+1], transitions, offsets)."""
    compiled = [compile_zone(n) for n in names]
    starts = np.zeros(len(compiled) + 1, np.int64)
    for i, zone in enumerate(compiled):
        starts[i + 1] = starts[i] + len(zone.transitions_us)
    transitions = np.concatenate([z.transitions_us for z in compiled]) if compiled else np.zeros(0, np.int64)
    offsets = np.concatenate([z.offsets_s for z in compiled]) if compiled else np.zeros(0, np.int64)
    return starts, transitions, offsets
