"""Rounding money from micro-units to a currency's minor units, vectorised."""

from __future__ import annotations

import numpy as np
import polars as pl

from rating.reference.model import RoundingMode


def round_ratio(numerator, denominator, mode: RoundingMode):
    """round(numerator / denominator) to a whole number with ``mode``, for non-negative numerators.

    Works on Python ints (exact at any size: the tariff compiler) and on int64 NumPy arrays (billing)
    alike. The per-event rounding inside the pricing kernel is the kernel's own
    (rating.kernels.pricing.round_exact), checked against this one by the twin tests.
    """
    whole, rest = divmod(numerator, denominator)
    if mode is RoundingMode.UP:
        up = rest > 0
    elif mode is RoundingMode.DOWN:
        up = rest < 0   # never: False, or an all-False array
    elif mode is RoundingMode.HALF_UP:
        up = 2 * rest >= denominator
    else:
        up = (2 * rest > denominator) | ((2 * rest == denominator) & (whole % 2 == 1))
    return whole + up


def round_to_minor(amount_micros: np.ndarray, minor_digits: np.ndarray, mode: RoundingMode) -> np.ndarray:
    """Amounts in micro-units -> minor units (e.g. cents) with ``mode``; works for negatives
    (rounded by magnitude, sign kept)."""
    q = (10 ** (6 - minor_digits)).astype(np.int64)
    sign = np.where(amount_micros < 0, -1, 1)
    return sign * round_ratio(np.abs(amount_micros), q, mode)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def exact_sum(name: str) -> pl.Expr:
    """Sum of an integer money or unit column that cannot wrap around (Polars' int64 sum does,
    silently: 2^62 + 2^62 comes out negative). The result is Int128: pass it to ``require_int64``."""
    return pl.col(name).cast(pl.Int128).sum()


def require_int64(frame: pl.DataFrame, columns: list[str], keys: list[str], what: str) -> pl.DataFrame:
    """``frame`` with ``columns`` (exact sums) back in Int64.

    Raises ValueError naming the first row's ``keys`` when a value is outside int64: an amount that
    large cannot be billed exactly, and wrapping it would move money between lines and accounts.
    """
    outside = pl.any_horizontal([(pl.col(c) < INT64_MIN) | (pl.col(c) > INT64_MAX) for c in columns])
    bad = frame.filter(outside)
    if bad.height:
        row = bad.row(0, named=True)
        where = ", ".join(f"{k} {row[k]}" for k in keys)
        column = next(c for c in columns if not INT64_MIN <= row[c] <= INT64_MAX)
        raise ValueError(f"{what} of {where}: {column} = {row[column]} does not fit in int64 micro-units; "
                         "the input holds usage too large to bill exactly (check the rated events of that "
                         "account for implausible volumes)")
    return frame.with_columns([pl.col(c).cast(pl.Int64) for c in columns])


def checked_product(a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    """``a * b`` element-wise in int64; ValueError (with ``what``) where the product would wrap."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    limit = np.where(b != 0, INT64_MAX // np.maximum(np.abs(b), 1), INT64_MAX)
    if np.any(np.abs(a) > limit):
        first = int(np.flatnonzero(np.abs(a) > limit)[0])
        raise ValueError(f"{what}: {int(a[first])} x {int(b[first])} does not fit in int64")
    return a * b
