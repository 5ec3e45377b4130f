"""Billing-cycle month labels: 'YYYY-MM' <-> month index (year*12 + month-1), one place for both.

Cycle *bounds* (an account's cycle from its bill cycle day at 00:00 in its timezone) are computed
by the kernel (rating.kernels.enrich.cycle_bounds); ``account_cycle_bounds`` is its one wrapper.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from rating.arrow_utils import take_strings
from rating.kernels.enrich import cycle_bounds

if TYPE_CHECKING:
    from rating.compile import CompiledReference

_MONTH_RANGE_LABELS = 1200   # month_labels formats every month of a spread up to this many


def month_index(label: str) -> int:
    """'YYYY-MM' -> year*12 + month-1; ValueError naming the label for anything else."""
    try:
        year, month = (int(part) for part in label.split("-"))
        if not 1 <= month <= 12 or len(label) != 7:
            raise ValueError
    except (ValueError, AttributeError):
        raise ValueError(f"cycle {label!r}: expected YYYY-MM, e.g. 2026-01") from None
    return year * 12 + month - 1


def month_label(index: int) -> str:
    """year*12 + month-1 -> 'YYYY-MM'."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def next_month_label(label: str) -> str:
    """The cycle after ``label`` ('2026-12' -> '2027-01')."""
    return month_label(month_index(label) + 1)


def month_labels(months: np.ndarray) -> pa.Array:
    """Cycle month indexes -> 'YYYY-MM' strings (Arrow), formatting each distinct month once.

    A batch spans a few months: every month between the least and the greatest is formatted once
    and gathered by index; a wider spread formats the distinct months only.
    """
    months = np.asarray(months, np.int64)
    if len(months) == 0:
        return pa.array([], pa.string())
    lo, hi = int(months.min()), int(months.max())
    if hi - lo < _MONTH_RANGE_LABELS:
        return take_strings(pa.array([month_label(m) for m in range(lo, hi + 1)], pa.string()), months - lo)
    unique, inverse = np.unique(months, return_inverse=True)
    labels = [month_label(int(m)) for m in unique]
    return take_strings(pa.array(labels, pa.string()), inverse.astype(np.int64).reshape(-1))


def account_cycle_bounds(compiled: "CompiledReference", account_rows: np.ndarray,
                         months: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC (start, end) in µs of cycle ``months[i]`` of the account in row ``account_rows[i]``."""
    T = compiled.tables
    account_rows = np.asarray(account_rows, np.int64)
    start = np.zeros(len(account_rows), np.int64)
    end = np.zeros(len(account_rows), np.int64)
    cycle_bounds(np.asarray(months, np.int64), compiled.account_tz[account_rows], compiled.account_bcd[account_rows],
                 T.tz_start, T.tz_transitions, T.tz_offsets, start, end)
    return start, end


def cycle_bounds_of(compiled: "CompiledReference", account_ids: list[str], cycle: str) -> pl.DataFrame:
    """UTC bounds (µs) of ``cycle`` for each account: (account_id, billing_cycle, cycle_start, cycle_end).

    ValueError naming the account when an account is not in the reference data."""
    rows = {a: i for i, a in enumerate(compiled.account_ids)}
    unknown = [a for a in account_ids if a not in rows]
    if unknown:
        raise ValueError(f"accounts {unknown[:5]} are in the output store but not in the reference data; "
                         "re-rate with reference data that still lists them")
    index = np.array([rows[a] for a in account_ids], np.int64)
    start, end = account_cycle_bounds(compiled, index, np.full(len(index), month_index(cycle), np.int64))
    return pl.DataFrame({"account_id": account_ids, "billing_cycle": [cycle] * len(index), "cycle_start": start,
                         "cycle_end": end}, schema={"account_id": pl.Utf8, "billing_cycle": pl.Utf8,
                                                    "cycle_start": pl.Int64, "cycle_end": pl.Int64})


def month_bounds(label: str) -> tuple[dt.datetime, dt.datetime]:
    """The calendar month ``label`` (YYYY-MM) as [start, end) instants in UTC."""
    index = month_index(label)
    start = dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime((index + 1) // 12, (index + 1) % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return start, end


def in_cycle_scope(start_time: pa.ChunkedArray | pa.Array, cycle: str) -> pa.Array:
    """Whether rejected records belong to ``cycle``: the calendar month (UTC) of their start_time.

    A rejected record may have no account (e.g. UNKNOWN_SUBSCRIBER), hence no cycle of its own; this
    rule gives each one with a start_time exactly one cycle. Records without start_time belong to none.
    """
    start, end = (pa.scalar(instant, pa.timestamp("us", tz="UTC")) for instant in month_bounds(cycle))
    inside = pc.and_(pc.greater_equal(start_time, start), pc.less(start_time, end))
    return pc.fill_null(inside, False)
