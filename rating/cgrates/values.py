"""Values as CGRateS tariff CSV files write them: durations, decimals, ``;`` lists, rounding names.

Every parser raises ``ValueError`` with a message saying what was expected and what arrived (the
caller adds the file and line). Nothing here rounds: a value that cannot be held exactly is an
error, so the import report can say so.
"""

from __future__ import annotations

import decimal
import re

NS_PER_S = 1_000_000_000
ANY = "*any"

_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": NS_PER_S,
            "m": 60 * NS_PER_S, "h": 3600 * NS_PER_S}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")

# CGRateS rounding method -> the project's rounding mode (docs/reference-data.md).
ROUNDING_MODES = {"*up": "up", "*down": "down", "*middle": "half_up", "*toeven": "half_even"}


def parse_duration_ns(text: str) -> int:
    """``"60s"`` -> 60e9, ``"1m30s"``, ``"1.5m"``; a bare integer is nanoseconds, as CGRateS reads it
    (so ``"1024"`` is 1024 units of data or SMS); ``""`` is 0. Raises ``ValueError`` otherwise."""
    value = text.strip()
    if value == "":
        return 0
    if value.isdigit():
        return int(value)
    if _DURATION.fullmatch(value) is None:
        raise ValueError(f"expected a duration such as 60s, 1m, 1m30s or a whole number of units, got {text!r}")
    total = decimal.Decimal(0)
    for number, unit in _DURATION_PART.findall(value):
        total += decimal.Decimal(number) * _UNIT_NS[unit]
    if total != total.to_integral_value():
        raise ValueError(f"duration {text!r} is not a whole number of nanoseconds")
    return int(total)


def parse_decimal(text: str, *, empty_is_zero: bool = False) -> decimal.Decimal:
    """``"0.2"`` -> Decimal('0.2'); ``""`` -> 0 when ``empty_is_zero``. No NaN, no infinity."""
    value = text.strip()
    if value == "" and empty_is_zero:
        return decimal.Decimal(0)
    try:
        number = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"expected a decimal number such as 0.2, got {text!r}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite decimal number, got {text!r}")
    return number


def decimals_of(number: decimal.Decimal) -> int:
    """Decimal places ``number`` needs: 0.125 -> 3, 10 -> 0."""
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent)


def money_text(number: decimal.Decimal) -> str:
    """A non-negative Decimal with at most 6 decimals as the project writes money: ``"0.2"``."""
    return format(number.normalize(), "f")


def parse_list(text: str) -> frozenset[int] | None:
    """``"1;2;3"`` -> {1, 2, 3}; ``"*any"`` or ``""`` -> None (no restriction)."""
    value = text.strip()
    if value in ("", ANY):
        return None
    items = set()
    for part in value.split(";"):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            raise ValueError(f"expected *any or numbers separated by ';', got {text!r}")
        items.add(int(part))
    return frozenset(items)


def parse_weight(text: str) -> float:
    value = text.strip()
    try:
        return float(value) if value else 0.0
    except ValueError:
        raise ValueError(f"expected a number for the weight, got {text!r}") from None
