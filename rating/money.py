"""Rounding money from micro-units to a currency's minor units, vectorised."""

from __future__ import annotations

import numpy as np

from rating.reference.model import RoundingMode


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
