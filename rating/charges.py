"""Invoice-ready charge lines from rated events: usage per (account, cycle, service, zone, band).

Sums are exact in micro-units; each line is rounded once to the currency's minor units with the
operator's invoice rounding, and the difference is carried in the line (``rounding_micros``).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from cdr_schemas import charge_line_schema
from rating.reference.model import RoundingMode

_UNITS = {"VOICE": "second", "SMS": "message", "DATA": "byte"}


def round_to_minor(amount_micros: np.ndarray, minor_digits: np.ndarray, mode: RoundingMode) -> np.ndarray:
    """Amounts in micro-units -> minor units (e.g. cents) with ``mode``; works for negatives."""
    q = (10 ** (6 - minor_digits)).astype(np.int64)
    sign = np.where(amount_micros < 0, -1, 1)
    a = np.abs(amount_micros)
    base = a // q
    rest = a - base * q
    if mode is RoundingMode.UP:
        up = rest > 0
    elif mode is RoundingMode.DOWN:
        up = np.zeros(len(a), np.bool_)
    elif mode is RoundingMode.HALF_UP:
        up = 2 * rest >= q
    else:
        up = (2 * rest > q) | ((2 * rest == q) & (base % 2 == 1))
    return sign * (base + up)


def usage_lines(rated: pa.Table | pa.RecordBatch, minor_digits: dict[str, int], mode: RoundingMode) -> pa.Table:
    """Usage charge lines, sorted by (account, billing cycle, service, zone, band)."""
    frame = pl.from_arrow(rated)
    if isinstance(frame, pl.Series) or frame.height == 0:
        return charge_line_schema().empty_table()
    lines = (
        frame.group_by(["account_id", "service_cycle", "service", "zone", "band", "currency"])
        .agg(
            pl.len().cast(pl.Int64).alias("quantity"),
            pl.col("raw_units").sum().alias("raw_units"),
            pl.col("charged_units").sum().alias("charged_units"),
            pl.col("free_units").sum().alias("free_units"),
            pl.col("charge_micros").sum().alias("amount_micros"),
        )
        .sort(["account_id", "service_cycle", "service", "zone", "band"])
    )
    digits = np.array([minor_digits[c] for c in lines["currency"].to_list()], np.int64)
    amount = lines["amount_micros"].to_numpy()
    minor = round_to_minor(amount, digits, mode)
    rounding = minor * (10 ** (6 - digits)) - amount
    lines = lines.with_columns(
        pl.col("service_cycle").alias("billing_cycle"),
        pl.lit("USAGE").alias("line_type"),
        (pl.col("service") + " " + pl.col("zone") + " " + pl.col("band")).alias("description"),
        pl.col("service").replace_strict(_UNITS, default=None).alias("unit"),
        pl.Series("amount_minor", minor),
        pl.Series("rounding_micros", rounding),
        pl.lit(False).alias("late"),
    )
    schema = charge_line_schema()
    table = lines.select(schema.names).to_arrow()
    return table.cast(schema)
