"""Time bands of one plan version from the CGRateS timings its rating plans use.

A band is a class of minutes of the week with the same set of active weekly timings: everything
CGRateS's choice depends on at that minute (which timings compete, and when each started). Bands
are named after the active timing that started last (``PEAK``, ``OFFPEAK_EVENING``); the band
covering most of the week is the default, the others become day/time rules.

Dated timings (Years, Months or MonthDays given, e.g. NEW_YEAR) become a holiday calendar of their
dates from 2000 to 2099 (the years a usage record may have) with holiday rules. A holiday rule names
the weekdays and zones whose rates the date changes, at the times it changes them; other zones keep
their weekday bands (tutorial2's NEW_YEAR reprices zone DST_20 only). This is exact unless dates on
the same weekday need different rates for one zone (two dated timings with different rates): one
calendar cannot tell those dates apart, so they are left out at those times and reported.
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
    days: tuple[int, ...]    # 0 = Monday (a holiday rule: the weekdays of the date)
    from_minute: int
    to_minute: int
    holiday: bool
    zones: tuple[str, ...] | None = None   # a holiday rule: the zones it applies to


@dataclasses.dataclass(frozen=True)
class BandLayout:
    default: str
    rules: tuple[Rule, ...]
    calendar: tuple[str, ...]          # ISO dates of the holiday rules; empty without any
    vectors: dict[str, Vector]         # band -> winners
    members: dict[str, tuple[str, ...]]   # band -> timings active in it (for the import record)
    scopes: dict[str, frozenset[int]] = dataclasses.field(default_factory=dict)
    # holiday band -> the keys it prices (holiday rules apply to their zones only); others: every key


def layout_bands(timings: Sequence[Timing], winners: Winners, keys: Sequence[str], report: Report,
                 key_zones: Sequence[str]) -> BandLayout:
    """Bands for the ``timings`` of a version; ``winners(active)`` gives the choice per key
    (``keys[i]`` describes entry i of a vector, for messages; ``key_zones[i]`` is its zone)."""
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
    scopes: dict[str, frozenset[int]] = {}
    if dated:
        holiday_rules, calendar, scopes = _holidays(dated, segments, weekly_active, winners, keys, key_zones,
                                                    vectors, members, taken, by_start, report)
        rules = holiday_rules + rules
    return BandLayout(default, tuple(rules), calendar, vectors, members, scopes)


def _holidays(dated, segments, weekly_active, winners, keys, key_zones, vectors, members, taken, by_start,
              report):
    """Holiday rules (and their calendar) giving, on each date of a dated timing, the choice CGRateS
    makes there: per time segment, weekday and zone, the rates the date's timings lead to. A rule
    names the weekdays and zones it changes; the other zones keep the weekday's bands. Dates on one
    weekday whose dated timings lead one zone to different rates (two different holidays) cannot share
    a calendar: left out there, and reported."""
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

    effective = [k for k in classes
                 if any(_priced(choice(k, a, b)[0]) != _priced(choice(k, a, b)[1]) for a, b in segments)]
    zone_keys: dict[str, list[int]] = {}
    for index, zone in enumerate(key_zones):
        zone_keys.setdefault(zone, []).append(index)
    bands: list[_HolidayBand] = []
    pieces: list[tuple[str, int, int, int, str]] = []   # (band, from, to, weekday, zone)
    left_out = []
    for a, b in segments:
        for weekday in range(7):
            choices = {k: choice(k, a, b) for k in effective if k[0] == weekday}
            for zone, indices in zone_keys.items():
                wanted = {k: tuple(with_dated[i] for i in indices) for k, (with_dated, _, _) in choices.items()}
                if not wanted:
                    continue
                base = tuple(next(iter(choices.values()))[1][i] for i in indices)   # the weekday's own choice
                prices = {_priced(vector) for vector in wanted.values()}
                if prices == {_priced(base)}:
                    continue
                if len(prices) > 1:
                    left_out.append((a, b, weekday, zone, indices, wanted, base))
                    continue
                extra = frozenset().union(*(e for _, _, e in choices.values()))
                band = _holiday_band(bands, dict(zip(indices, next(iter(wanted.values())))), extra, by_start, taken)
                pieces.append((band, a, b, weekday, zone))
    if left_out:
        _report_dates_apart(left_out, keys, report)
    for band in bands:
        vectors[band.name] = tuple(band.choices.get(i) for i in range(len(keys)))
        members[band.name] = tuple(sorted(band.members))
    rules = _holiday_rules(pieces)
    dates = sorted(d for k in effective for d in classes[k]) if rules else []
    scopes = {band.name: frozenset(band.choices) for band in bands}
    return rules, tuple(dates), scopes


def _priced(vector: Vector) -> tuple:
    """What prices the keys of ``vector``: the destination rates chosen (not which timing chose them)."""
    return tuple(None if candidate is None else candidate.dr for candidate in vector)


@dataclasses.dataclass
class _HolidayBand:
    """A band holiday rules give: the choice per key of the zones it is in force for (other keys are
    never priced in it) and the dated timings behind it."""
    name: str
    base_name: str
    choices: dict
    members: set


def _holiday_band(bands: list[_HolidayBand], choices: dict, extra: frozenset[str], by_start, taken) -> str:
    """The holiday band giving ``choices`` (key -> candidate): one named after the same timings that
    agrees where both price, or a new one."""
    base_name = _band_name(extra, by_start)
    for band in bands:
        if band.base_name == base_name and all(_priced((band.choices.get(i, c),)) == _priced((c,))
                                               for i, c in choices.items()):
            band.choices.update(choices)
            band.members |= extra
            return band.name
    bands.append(_HolidayBand(unique_name(base_name, taken), base_name, dict(choices), set(extra)))
    return bands[-1].name


def _holiday_rules(pieces: list[tuple[str, int, int, int, str]]) -> list[Rule]:
    """Few rules covering exactly the (band, time segment, weekday, zone) pieces: weekdays with the
    same band for a zone and segment in one rule, zones with the same weekdays in one rule, adjacent
    segments joined. The pieces never overlap, so neither do the rules (their order does not matter)."""
    days: dict[tuple[str, int, int, str], list[int]] = {}
    for band, a, b, weekday, zone in pieces:
        days.setdefault((band, a, b, zone), []).append(weekday)
    zones: dict[tuple[str, int, int, tuple[int, ...]], list[str]] = {}
    for (band, a, b, zone), weekdays in days.items():
        zones.setdefault((band, a, b, tuple(sorted(weekdays))), []).append(zone)
    spans = sorted((band, weekdays, tuple(sorted(names)), a, b) for (band, a, b, weekdays), names in zones.items())
    merged: list[Rule] = []
    for band, weekdays, names, a, b in spans:
        last = merged[-1] if merged else None
        if last and (last.band, last.days, last.zones, last.to_minute) == (band, weekdays, names, a):
            merged[-1] = dataclasses.replace(last, to_minute=b)
        else:
            merged.append(Rule(band, weekdays, a, b, True, names))
    return sorted(merged, key=lambda r: (r.days[0], r.from_minute, r.band, r.zones))


def _report_dates_apart(left_out, keys, report: Report) -> None:
    """One finding: the times holiday rules leave out, and one rate that differs there."""
    spans: list[list[int]] = []
    for a, b, *_ in sorted(left_out, key=lambda piece: piece[0]):
        if spans and spans[-1][1] >= a:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    a, b, weekday, zone, indices, wanted, base = left_out[0]
    tags = sorted({tag for piece in left_out for _, on in piece[5] for tag in on})
    example = ""
    for (_, on), vector in sorted(wanted.items(), key=lambda kv: sorted(kv[0][1])):
        for position, (x, y) in enumerate(zip(vector, base)):
            if _priced((x,)) != _priced((y,)):
                example = (f"; e.g. {keys[indices[position]]} at {_hhmm(a)} on a {dt.date(2024, 1, 1 + weekday):%A} "
                           f"of {', '.join(sorted(on))}: CGRateS uses {x.describe() if x else 'no rate'}, the import "
                           f"uses {y.describe() if y else 'no rate'}")
                break
        if example:
            break
    report.unsupported(f"timing {', '.join(tags)}",
                       f"dates of these timings that fall on the same weekday need different rates for one zone, "
                       f"which one holiday calendar cannot express, so they are left out "
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
