"""Money as people read it: exact int micro-units (or minor units) as decimal text, never through a float.

:func:`micros_text` is the one formatter behind every amount the command line shows; the others
are its settings for one kind of output: :func:`total_text` for the totals of the batch summary
and the re-rate report (to the cent), :func:`format_minor` and :func:`format_micros` for invoices.
``rate-one`` prints every digit (``micros_text`` as it is).
"""

from __future__ import annotations

from rating.reference.money import MICRO_DECIMALS


def micros_text(amount_micros: int, *, decimals: int = MICRO_DECIMALS, min_decimals: int = 0,
                grouping: bool = False) -> str:
    """``amount_micros`` (integer micro-units) as a decimal number of currency units.

    ``decimals`` (0 to 6): at most this many decimals, rounded half to even (6, the default: exact);
    ``min_decimals``: trailing zeros kept up to this many; ``grouping``: thousands separated by ','.
    The sign of a negative amount is kept even when it rounds to zero (``-0.00``). Exact for any
    int. ``641800`` -> ``'0.6418'``; ``2000000, min_decimals=2`` -> ``'2.00'``;
    ``-1234567891, decimals=2, min_decimals=2, grouping=True`` -> ``'-1,234.57'``.
    Raises ValueError unless ``0 <= min_decimals <= decimals <= 6``.
    """
    if not 0 <= min_decimals <= decimals <= MICRO_DECIMALS:
        raise ValueError(f"decimals {decimals} and min_decimals {min_decimals}: need 0 <= min_decimals <= decimals "
                         f"<= {MICRO_DECIMALS}")
    amount = int(amount_micros)
    step = 10 ** (MICRO_DECIMALS - decimals)
    scaled, rest = divmod(abs(amount), step)
    if 2 * rest > step or (2 * rest == step and scaled % 2 == 1):
        scaled += 1
    whole, fraction = divmod(scaled, 10 ** decimals)
    fraction_text = f"{fraction:0{decimals}d}".rstrip("0").ljust(min_decimals, "0") if decimals else ""
    sign = "-" if amount < 0 else ""
    whole_text = f"{whole:,}" if grouping else str(whole)
    return f"{sign}{whole_text}" + (f".{fraction_text}" if fraction_text else "")


def total_text(amount_micros: int, currency: str) -> str:
    """A total for the summaries: ``1234567891, 'EUR'`` -> ``'1,234.57 EUR'`` (to the cent, half to even)."""
    return f"{micros_text(amount_micros, decimals=2, min_decimals=2, grouping=True)} {currency}"


def format_minor(amount_minor: int, digits: int) -> str:
    """Minor units (cents: ``digits`` 2) as on an invoice: ``12345, 2`` -> ``'123.45'``; thousands separated."""
    return micros_text(int(amount_minor) * 10 ** (MICRO_DECIMALS - digits), min_decimals=digits, grouping=True)


def format_micros(amount_micros: int, digits: int) -> str:
    """Exact micro-units with at least ``digits`` decimals, as an invoice's single events:
    ``49000, 2`` -> ``'0.049'``; ``2000000, 2`` -> ``'2.00'``."""
    return micros_text(amount_micros, min_decimals=digits, grouping=True)
