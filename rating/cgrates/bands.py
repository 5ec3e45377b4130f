"""Time bands of one plan version from the CGRateS timings its rating plans use.

A band is a class of minutes of the week with the same set of active weekly timings: everything
CGRateS's choice depends on at that minute (which timings compete, and when each started). Bands
are named after the active timing that started last (``PEAK``, ``OFFPEAK_EVENING``); the band
covering most of the week is the default, the others become day/time rules.

Dated timings (Years, Months or MonthDays given, e.g. NEW_YEAR) become a holiday calendar of their
dates from 2000 to 2099 (the years a usage record may have) with holiday rules. A holiday rule
cannot depend on the weekday, so this is exact only when, at each time of day, every such date
either changes nothing (the weekday rules already give CGRateS's choice) or gives the same choice
for every zone whatever its weekday. Where neither holds the dated timings are left out at those
times, and the report says which rate differs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Sequence

from rating.cgrates.report import Report
from rating.cgrates.timings import MINUTES_PER_DAY, Timing
from rating.cgrates.values import ANY

CALENDAR_YEARS = range(2000, 2100)   # cdr_schemas.validate: start times 2000-01-01 .. 2100-01-01
NO_TIMING = "NONE"                   # band of minutes where no timing is active
_NOT_NAME = re.compile(r"[^A-Z0-9_]")

Vector = tuple   # the winning candidate (or None) per key of the version, see ``Winners``
Winners = Callable[[frozenset[str]], Vector]


@dataclasses.dataclass(frozen=True)
class Rule:
    band: str
    days: tuple[int, ...]    # 0 = Monday; empty for a holiday rule
    from_minute: int
    to_minute: int
    holiday: bool


@dataclasses.dataclass(frozen=True)
class BandLayout:
    default: str
    rules: tuple[Rule, ...]
    calendar: tuple[str, ...]          # ISO dates of the holiday rules; empty without any
    vectors: dict[str, Vector]         # band -> winners
    members: dict[str, tuple[str, ...]]   # band -> timings active in it (for the import record)


def layout_bands(timings: Sequence[Timing], winners: Winners, keys: Sequence[str], report: Report) -> BandLayout:
    """Bands for the ``timings`` of a version; ``winners(active)`` gives the choice per key
    (``keys[i]`` describes entry i of a vector, for messages)."""
    weekly = [t for t in timings if not t.dated]
    dated = [t for t in timings if t.dated]
    cuts = sorted({0, MINUTES_PER_DAY} | {t.start_minute for t in timings} | {t.end_minute for t in timings})
    segments = list(zip(cuts, cuts[1:]))

    def weekly_active(day: int, a: int, b: int) -> frozenset[str]:
        return frozenset(t.tag for t in weekly if t.on_weekday(day) and t.covers(a, b))

    # Weekly bands, one per set of active timings.
    week = [(day, a, b, weekly_active(day, a, b)) for day in range(7) for a, b in segments]
    by_start = {t.tag: t.start_minute for t in timings}
    names: dict[frozenset[str], str] = {}
    taken: set[str] = set()
    for active in sorted({w[3] for w in week}, key=lambda s: sorted(s)):
        names[active] = unique_name(_band_name(active, by_start), taken)
    minutes: dict[str, int] = {}
    for _, a, b, active in week:
        minutes[names[active]] = minutes.get(names[active], 0) + (b - a)
    default = max(sorted(minutes), key=lambda band: minutes[band])
    vectors = {names[active]: winners(active) for active in names}
    members = {names[active]: tuple(sorted(active)) for active in names}
    rules = _weekly_rules([(day, a, b, names[active]) for day, a, b, active in week], default)

    calendar: tuple[str, ...] = ()
    if dated:
        holiday_rules, calendar = _holidays(dated, segments, weekly_active, winners, keys, vectors, members,
                                            taken, by_start, report)
        rules = holiday_rules + rules
    return BandLayout(default, tuple(rules), calendar, vectors, members)


def _holidays(dated, segments, weekly_active, winners, keys, vectors, members, taken, by_start, report):
    classes: dict[tuple[int, frozenset[str]], list[str]] = {}
    for year in CALENDAR_YEARS:
        day = dt.date(year, 1, 1)
        while day.year == year:
            on = frozenset(t.tag for t in dated if t.on_date(day))
            if on:
                classes.setdefault((day.weekday(), on), []).append(day.isoformat())
            day += dt.timedelta(days=1)

    def choice(klass, a, b):
        weekday, on = klass
        base = weekly_active(weekday, a, b)
        extra = frozenset(t.tag for t in dated if t.tag in on and t.covers(a, b))
        return winners(base | extra), winners(base), extra

    effective = [k for k in classes if any(choice(k, a, b)[0] != choice(k, a, b)[1] for a, b in segments)]
    band_of_vector = {vector: band for band, vector in vectors.items()}
    rules: list[Rule] = []
    left_out = []
    for a, b in segments:
        choices = {k: choice(k, a, b) for k in effective}
        if all(with_dated == without for with_dated, without, _ in choices.values()):
            continue
        distinct = {with_dated for with_dated, _, _ in choices.values()}
        if len(distinct) == 1:
            vector = distinct.pop()
            if vector not in band_of_vector:
                active = frozenset().union(*(extra for _, _, extra in choices.values()))
                band = unique_name(_band_name(active, by_start), taken)
                band_of_vector[vector] = band
                vectors[band] = vector
                members[band] = tuple(sorted(active))
            rules.append(Rule(band_of_vector[vector], (), a, b, True))
            continue
        left_out.append((a, b, choices))
    if left_out:
        _report_weekday_dependence(left_out, keys, report)
    merged: list[Rule] = []
    for rule in rules:
        if merged and merged[-1].band == rule.band and merged[-1].to_minute == rule.from_minute:
            merged[-1] = dataclasses.replace(merged[-1], to_minute=rule.to_minute)
        else:
            merged.append(rule)
    dates = sorted(d for k in effective for d in classes[k]) if merged else []
    return merged, tuple(dates)


def _report_weekday_dependence(left_out, keys, report: Report) -> None:
    """One finding per dated timing set: the times it is left out, and one rate that differs."""
    tags = sorted({tag for _, _, choices in left_out for _, _, extra in choices.values() for tag in extra})
    spans: list[list[int]] = []
    for a, b, _ in left_out:
        if spans and spans[-1][1] == a:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    example = ""
    _, _, choices = left_out[0]
    for (weekday, _), (with_dated, without, _) in sorted(choices.items(), key=lambda kv: kv[0][0]):
        for index, (x, y) in enumerate(zip(with_dated, without)):
            if x != y:
                example = (f"; e.g. {keys[index]} on such a date that is a {dt.date(2024, 1, 1 + weekday):%A}: "
                           f"CGRateS uses {x.describe() if x else 'no rate'}, the import uses "
                           f"{y.describe() if y else 'no rate'}")
                break
        if example:
            break
    report.unsupported(f"timing {', '.join(tags)}",
                       f"on its dates the rates of other zones still depend on the weekday, which a holiday band "
                       f"cannot express (holiday rules have no days), so it is left out "
                       f"{', '.join(f'{_hhmm(a)}-{_hhmm(b)}' for a, b in spans)}{example}")


def _weekly_rules(week: list[tuple[int, int, int, str]], default: str) -> list[Rule]:
    spans: list[tuple[int, int, int, str]] = []
    for day, a, b, band in week:
        if spans and spans[-1][0] == day and spans[-1][3] == band and spans[-1][2] == a:
            spans[-1] = (day, spans[-1][1], b, band)
        else:
            spans.append((day, a, b, band))
    grouped: dict[tuple[int, int, str], list[int]] = {}
    for day, a, b, band in spans:
        if band != default:
            grouped.setdefault((a, b, band), []).append(day)
    rules = [Rule(band, tuple(days), a, b, False) for (a, b, band), days in grouped.items()]
    return sorted(rules, key=lambda r: (r.days[0], r.from_minute, r.band))


def _band_name(active: frozenset[str], by_start: dict[str, int]) -> str:
    """The timing that started last (a named one before *any), as a band name."""
    if not active:
        return NO_TIMING
    latest = max(active, key=lambda tag: (by_start[tag], tag != ANY, tag))
    return _NOT_NAME.sub("_", latest.upper().lstrip("*")) or "BAND"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... whichever is not in ``taken``; the result is added to it."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
