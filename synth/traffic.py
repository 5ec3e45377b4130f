"""When records happen: a per-minute intensity over the period and its split into files and chunks.

Each timezone's subscribers follow a diurnal curve in their local time (quiet at night, busy in the
day and evening, flatter and later at weekends and on public holidays; DST-correct through
zoneinfo), scaled by the total activity weight of that timezone's subscribers. The period is cut
into ``files`` equal time slices, like mediation's hourly or daily files, and each file into chunks
of about ``chunk_records`` records. Record counts per chunk come from rounding the cumulative
intensity, so they are exact and independent of the chunk size's randomness.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

from synth.calendars import holidays
from synth.population import TIMEZONES, Population

BIN_S = 60     # time resolution of the intensity: one minute
_TZ_COUNTRY = {"Europe/Berlin": "DE", "Europe/London": "GB", "America/New_York": "US",
               "America/Chicago": "US", "America/Los_Angeles": "US"}

# Relative activity per local hour (0h..23h).
WEEKDAY = np.array([0.20, 0.10, 0.06, 0.05, 0.06, 0.15, 0.40, 0.75, 1.00, 1.10, 1.15, 1.20,
                    1.20, 1.15, 1.10, 1.15, 1.25, 1.35, 1.45, 1.45, 1.35, 1.10, 0.75, 0.40])
WEEKEND = np.array([0.35, 0.20, 0.12, 0.08, 0.06, 0.07, 0.12, 0.25, 0.45, 0.70, 0.90, 1.00,
                    1.05, 1.05, 1.00, 1.00, 1.05, 1.10, 1.20, 1.25, 1.20, 1.05, 0.80, 0.55])


@dataclasses.dataclass(frozen=True)
class Traffic:
    start_us: int
    bins: int
    by_timezone: np.ndarray    # (len(TIMEZONES), bins) expected activity per minute and timezone
    total: np.ndarray          # (bins,) sum over timezones


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    index: int          # global chunk number: seeds the chunk's RNG
    bin_lo: int
    bin_hi: int
    first_record: int   # position of the chunk's first record in the whole run
    count: int          # records in the chunk, anomalies included


@dataclasses.dataclass(frozen=True)
class FilePlan:
    index: int
    bin_lo: int
    bin_hi: int
    chunks: tuple[ChunkPlan, ...]


def _minute_curve(hourly: np.ndarray) -> np.ndarray:
    """Per-minute curve over a local day, linear between hourly values (wrapping at midnight)."""
    minutes = np.arange(1440) / 60.0
    return np.interp(minutes, np.arange(25), np.append(hourly, hourly[0]))


def build_traffic(population: Population, start: dt.date, days: int) -> Traffic:
    start_us = int(np.datetime64(start, "us").astype(np.int64))
    bins = days * 1440
    weekday, weekend = _minute_curve(WEEKDAY), _minute_curve(WEEKEND)
    weights = np.bincount(population.timezone, weights=population.weight, minlength=len(TIMEZONES))
    by_timezone = np.zeros((len(TIMEZONES), bins))
    utc_minutes = np.arange(bins, dtype=np.int64)
    start_dt = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
    for g, name in enumerate(TIMEZONES):
        if weights[g] == 0:
            continue
        zone = ZoneInfo(name)
        # UTC offset at every hour of the period (DST changes on the hour in these zones).
        offsets = np.array([(start_dt + dt.timedelta(hours=h)).astimezone(zone).utcoffset().total_seconds() // 60
                            for h in range(days * 24 + 1)], dtype=np.int64)
        local = utc_minutes + offsets[utc_minutes // 60]
        local_day = np.floor_divide(local, 1440)                  # days since start (local calendar)
        minute_of_day = local - local_day * 1440
        dates = np.datetime64(start, "D") + local_day
        weekday_index = (dates.astype(np.int64) + 3) % 7           # 1970-01-01 was a Thursday
        years = range(start.year - 1, (start + dt.timedelta(days=days)).year + 2)
        holiday_dates = np.array([np.datetime64(d, "D") for y in years for d, _ in holidays(_TZ_COUNTRY[name], y)])
        rest_day = (weekday_index >= 5) | np.isin(dates, holiday_dates)
        by_timezone[g] = weights[g] * np.where(rest_day, weekend[minute_of_day], weekday[minute_of_day])
    return Traffic(start_us=start_us, bins=bins, by_timezone=by_timezone, total=by_timezone.sum(axis=0))


def plan_files(traffic: Traffic, records: int, files: int, chunk_records: int) -> list[FilePlan]:
    """Split the run into ``files`` equal time slices and each slice into chunks of about
    ``chunk_records`` records, with exact record counts that add up to ``records``."""
    cumulative = np.concatenate([[0.0], np.cumsum(traffic.total)])
    cumulative /= cumulative[-1]
    position = np.rint(cumulative * records).astype(np.int64)      # records before each bin edge
    position[-1] = records
    plans = []
    chunk_index = 0
    for k in range(files):
        lo, hi = k * traffic.bins // files, (k + 1) * traffic.bins // files
        count = int(position[hi] - position[lo])
        pieces = max(1, -(-count // chunk_records))
        targets = position[lo] + np.rint(np.arange(pieces + 1) * count / pieces).astype(np.int64)
        edges = np.clip(np.searchsorted(position, targets, side="left"), lo, hi)
        edges[0], edges[-1] = lo, hi
        chunks = []
        for b_lo, b_hi in zip(edges[:-1], edges[1:]):
            n = int(position[b_hi] - position[b_lo])
            if n:
                chunks.append(ChunkPlan(chunk_index, int(b_lo), int(b_hi), int(position[b_lo]), n))
                chunk_index += 1
        plans.append(FilePlan(k, lo, hi, tuple(chunks)))
    return plans
