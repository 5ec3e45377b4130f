"""Exact decimal strings -> int64 micro-units (1e-6): prices, fees, tax rates. Never a float.

A value with more than 6 decimals is an error, never rounded: the operator decides how to round
their tariff, not the loader.
"""

from __future__ import annotations

import decimal
import re

MICRO_DECIMALS = 6
MICROS_PER_UNIT = 10**MICRO_DECIMALS
INT64_MAX = 2**63 - 1

_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.([0-9]+))?")


def decimal_micros(value: object, *, what: str = "money") -> int:
    """``"0.125"`` -> ``125000``. Raises ``ValueError`` (message without location) on anything else.

    Accepts only ``str`` of the form ``[-]digits[.digits]`` with at most 6 decimals; a YAML
    number (int or float) is rejected with a message to quote it.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(
            f"expected {what} as a quoted decimal string such as \"0.125\", "
            f"got {type(value).__name__} {value!r}")
    if isinstance(value, float):
        raise ValueError(
            f"expected {what} as a quoted decimal string, got the YAML number {value!r}, which "
            f"YAML reads as a binary float; quote it: \"{value!r}\"")
    if isinstance(value, int):
        raise ValueError(
            f"expected {what} as a quoted decimal string, got the YAML number {value!r}; "
            f"quote it: \"{value}\"")
    match = _DECIMAL_TEXT.fullmatch(value)
    if match is None:
        raise ValueError(
            f"expected {what} as a decimal string such as \"0.125\" (digits, an optional '-', "
            f"an optional '.' and up to {MICRO_DECIMALS} decimals), got {value!r}")
    decimals = match.group(1) or ""
    if len(decimals) > MICRO_DECIMALS:
        raise ValueError(
            f"expected at most {MICRO_DECIMALS} decimals (micro-units), got {value!r} with "
            f"{len(decimals)}; round it to {MICRO_DECIMALS} decimals yourself (the loader never "
            f"rounds)")
    micros = int(decimal.Decimal(value).scaleb(MICRO_DECIMALS))
    if abs(micros) > INT64_MAX:
        raise ValueError(f"{what} {value!r} does not fit in int64 micro-units; use a smaller value")
    return micros


def parse_money_micros(text: object, *, where: str) -> int:
    """Parse an exact decimal money string into int micro-units: ``"0.125"`` -> ``125000``.

    ``where`` names the value in the error message (e.g. ``"plans/MOBILE_S.yaml: connect_fee"``).
    Raises ``ValueError`` for floats, ints, malformed strings and more than 6 decimals. Negative
    amounts are accepted here; the loader rejects them where a price or fee is expected.
    """
    try:
        return decimal_micros(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
