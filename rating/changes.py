"""Whether a record's rating changed: one definition for re-rating and for the stream's corrections.

A record is rated differently when any of ``RATING_COLUMNS`` differs between two ratings of it:
who pays (account, plan, version, currency), how it was zoned and banded, which rule, tier and
allowances priced it, and what it costs, its rounding included. ``rating.rerate.compare`` uses it to
tell CHANGED from UNCHANGED records; ``rating.stream_rater`` to decide which re-rated records are
emitted again as corrections.
"""

from __future__ import annotations

from typing import Callable

import polars as pl

RATING_COLUMNS = ["account_id", "plan_id", "plan_version", "currency", "zone", "band", "band_split", "rate_id",
                  "tier", "charged_units", "free_units", "allowance_units", "connect_fee_micros", "charge_micros",
                  "rounding_nanos"]


def column_differs(old: pl.Expr, new: pl.Expr, name: str, list_length: int = 0) -> pl.Expr:
    """Two values of rated-event column ``name`` differ (null = absent: null vs null is equal).

    ``allowance_units`` (a list of {allowance, units}) is compared element by element up to
    ``list_length`` (the longest list on either side): much faster than list equality in Polars.
    """
    if name != "allowance_units":
        return old.ne_missing(new)
    differs = old.list.len().ne_missing(new.list.len())
    for i in range(list_length):
        a, b = old.list.get(i, null_on_oob=True), new.list.get(i, null_on_oob=True)
        differs = differs | a.struct.field("allowance").ne_missing(b.struct.field("allowance")) \
            | a.struct.field("units").ne_missing(b.struct.field("units"))
    return differs


def allowance_list_length(frame: pl.DataFrame, old_name: str, new_name: str) -> int:
    """The longest ``allowance_units`` list in either of two columns of ``frame``."""
    if frame.height == 0:
        return 0
    return int(frame.select(pl.max_horizontal(pl.col(old_name).list.len().max(),
                                              pl.col(new_name).list.len().max())).item() or 0)


def rating_changed(old_name: Callable[[str], str], new_name: Callable[[str], str], list_length: int) -> pl.Expr:
    """True where any of ``RATING_COLUMNS`` differs; ``old_name``/``new_name`` map a column to the
    names its two sides have in the joined frame."""
    return pl.any_horizontal([column_differs(pl.col(old_name(c)), pl.col(new_name(c)), c, list_length)
                              for c in RATING_COLUMNS])
