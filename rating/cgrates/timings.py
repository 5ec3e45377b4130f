"""CGRateS timings: when each is active, on the project's one-minute grid.

A timing is active on the dates its Years/Months/MonthDays/WeekDays match, from its start time
until its end time (``Time`` is ``HH:MM:SS`` or ``HH:MM:SS;HH:MM:SS``; without an end it runs to
midnight). WeekDays follow Go's numbering (0 or 7 Sunday, 1 Monday .. 6 Saturday); here days are
0 = Monday .. 6 = Sunday like the rest of the project. The built-in ``*any`` is always active.

Times must fall on whole minutes (an end of ``HH:MM:59`` is read as the next minute, CGRateS's end
being inclusive); anything else is reported and the timing is left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from rating.cgrates.report import Report
from rating.cgrates.tariff_files import TimingRow
from rating.cgrates.values import ANY, parse_list

MINUTES_PER_DAY = 1440


@dataclasses.dataclass(frozen=True)
class Timing:
    tag: str
    years: frozenset[int] | None        # None: no restriction
    months: frozenset[int] | None
    month_days: frozenset[int] | None
    week_days: frozenset[int] | None    # 0 = Monday .. 6 = Sunday
    start_minute: int                   # minute of the day, inclusive
    end_minute: int                     # exclusive, up to 1440

    @property
    def dated(self) -> bool:
        """True when the timing applies on particular dates (holidays), not every week."""
        return self.years is not None or self.months is not None or self.month_days is not None

    def on_weekday(self, weekday: int) -> bool:
        return self.week_days is None or weekday in self.week_days

    def on_date(self, day: dt.date) -> bool:
        return ((self.years is None or day.year in self.years)
                and (self.months is None or day.month in self.months)
                and (self.month_days is None or day.day in self.month_days)
                and self.on_weekday(day.weekday()))

    def covers(self, start_minute: int, end_minute: int) -> bool:
        """Active over the whole of [start_minute, end_minute) of a day it applies on."""
        return self.start_minute <= start_minute and end_minute <= self.end_minute


ANY_TIMING = Timing(ANY, None, None, None, None, 0, MINUTES_PER_DAY)


def parse_timing(row: TimingRow, report: Report) -> Timing | None:
    """The timing of a Timings.csv row; ``None`` (reported) when it cannot be expressed."""
    try:
        years = parse_list(row.years)
        months = parse_list(row.months)
        month_days = parse_list(row.month_days)
        go_days = parse_list(row.week_days)
        start, end = _time_range(row.time)
    except ValueError as error:
        report.unsupported(row.where, f"timing {row.tag}: {error}; rates in this timing are not imported")
        return None
    if month_days is not None and any(d < 1 or d > 31 for d in month_days):
        report.unsupported(row.where, f"timing {row.tag}: month days {row.month_days!r} (negative days count "
                                      f"from the month's end in CGRateS) are not supported; rates in this timing "
                                      f"are not imported")
        return None
    if go_days is not None and any(d < 0 or d > 7 for d in go_days):
        report.unsupported(row.where, f"timing {row.tag}: week days must be 0..7, got {row.week_days!r}")
        return None
    week_days = None if go_days is None else frozenset((d - 1) % 7 for d in go_days)  # Go 0/7 = Sunday -> 6
    if start >= end:
        report.unsupported(row.where, f"timing {row.tag}: start {row.time!r} is not before its end")
        return None
    return Timing(row.tag, years, months, month_days, week_days, start, end)


def _time_range(text: str) -> tuple[int, int]:
    value = text.strip()
    if value in ("", ANY):
        return 0, MINUTES_PER_DAY
    parts = [p.strip() for p in value.split(";")]
    if len(parts) > 2:
        raise ValueError(f"expected HH:MM:SS or HH:MM:SS;HH:MM:SS, got {text!r}")
    start = _clock(parts[0], text, end=False)
    end = _clock(parts[1], text, end=True) if len(parts) == 2 and parts[1] else MINUTES_PER_DAY
    return start, end


def _clock(part: str, text: str, *, end: bool) -> int:
    pieces = part.split(":")
    if len(pieces) != 3 or not all(p.isdigit() for p in pieces):
        raise ValueError(f"expected a time HH:MM:SS, got {text!r}")
    hours, minutes, seconds = (int(p) for p in pieces)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"expected a time of day HH:MM:SS, got {text!r}")
    minute = hours * 60 + minutes
    if seconds == 0:
        return minute
    if end and seconds == 59:   # CGRateS ends are inclusive: 18:59:59 ends at 19:00
        return minute + 1
    raise ValueError(f"time {part!r} is not on a whole minute (the project's time bands have minute resolution)")
