"""One CGRateS destination rate (a DestinationRates.csv row and its Rates.csv rows) -> a project rate.

* Rows of a rate are steps by elapsed units from the event start (GroupIntervalStart); the connect
  fee is the first row's. RateUnit and RateIncrement of 0 mean 1 s, as in CGRateS.
* Units: CGRateS holds usage as nanoseconds. Steps of voice (and of any usage type counted in
  seconds) must be whole seconds; SMS, data and count types are counted in the same units CGRateS
  counts them (a bare ``1`` is one message, one byte, one unit).
* Price: ``Rate`` per ``RateUnit``. A rate with more than 6 decimals is written per 10^k units
  (``0.0000125`` per 1 s = ``0.000125`` per 10 s), and one whose product with its unit or
  increment would leave int64 per fewer units: the same money. (An event too large to price
  exactly is rejected OVERFLOW when it is rated, so 1 per byte imports as it is.)
* A GroupIntervalStart that is not on the previous step's increment grid is moved to where that
  step's last increment ends (CGRateS rounds each piece up to its increment and shortens the next
  piece). Exact for events this rate prices from their start; flagged in ``RateSpec.moved_steps``.
* RoundingMethod/RoundingDecimals round the event total (decimals above 6 become 6: amounts are
  micro-units). MaxCost with ``*free`` caps the total; ``*disconnect`` does not change a completed
  call's cost (reported as a note).
* ``cgrates`` arithmetic adds ``increment_rounding: {mode: half_up, decimals: 5}`` — each
  increment's price rounded before multiplying, as CGRateS does; ``native`` keeps exact prices.
"""

from __future__ import annotations

import dataclasses
import decimal
import fractions

from rating.cgrates.report import Report
from rating.cgrates.tariff_files import DestinationRateRow, RateRow
from rating.cgrates.values import (
    NS_PER_S, ROUNDING_MODES, decimals_of, money_text, parse_decimal, parse_duration_ns)

ARITHMETIC = ("native", "cgrates")
CGRATES_INCREMENT_ROUNDING = ("half_up", 5)   # engine/timespans.go: globalRoundingDecimals, *middle
_MAX_DECIMALS = 6
_EXACT_LIMIT = 2**62   # rating.compile: a price times its per (or increment) must stay below it
_FREE = "*free"
_DISCONNECT = "*disconnect"


@dataclasses.dataclass(frozen=True)
class Step:
    from_units: int
    price: str            # decimal string, per ``per_units``
    per_units: int
    increment_units: int


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """A project rate without its (service, zone, band)."""
    connect_fee: str
    steps: tuple[Step, ...]
    maximum_charge: str | None
    rounding: tuple[str, int]                    # (mode, decimals)
    increment_rounding: tuple[str, int] | None
    moved_steps: bool                            # a GroupIntervalStart was moved onto the increment grid
    source: str                                  # "DR_1002_20CNT (DST_1002) -> RT_20CNT"


class RateConverter:
    """Converts destination-rate rows once per (row, service), reporting what cannot be converted."""

    def __init__(self, rates: dict[str, list[RateRow]], arithmetic: str, report: Report,
                 seconds: tuple[str, ...] = ("voice",)):
        if arithmetic not in ARITHMETIC:
            raise ValueError(f"--rounding must be one of {', '.join(ARITHMETIC)}, got {arithmetic!r}")
        self._rates = rates
        self._arithmetic = arithmetic
        self._report = report
        self._seconds = seconds   # usage types counted in seconds (whole-second units, increments, starts)
        self._cache: dict[tuple[DestinationRateRow, str], RateSpec | None] = {}

    def convert(self, row: DestinationRateRow, service: str) -> RateSpec | None:
        key = (row, service)
        if key not in self._cache:
            self._cache[key] = self._convert(row, service)
        return self._cache[key]

    def _convert(self, dr: DestinationRateRow, service: str) -> RateSpec | None:
        source = f"{dr.dr_id} ({dr.destination_id}) -> {dr.rates_tag}"
        fail = f"{dr.dr_id} ({dr.destination_id}) is not imported for {service}"
        rows = self._rates.get(dr.rates_tag)
        if not rows:
            self._report.unsupported(dr.where, f"rates {dr.rates_tag!r} are not in Rates.csv; {fail}")
            return None
        try:
            rounding = self._rounding(dr)
            maximum = self._maximum(dr)
            parsed = sorted((_parse_rate_row(r, service, service in self._seconds) for r in rows),
                            key=lambda p: p[0])
        except ValueError as error:
            self._report.unsupported(dr.where, f"{error}; {fail}")
            return None
        starts = [p[0] for p in parsed]
        if starts[0] != 0:
            # CGRateS finds no rate before the first GroupIntervalStart (GetRateParameters returns
            # rate -1 per -1 unit, and the piece's cost is then whatever that arithmetic gives): no
            # price a tariff means. The gap is imported as one free increment, the connect fee kept.
            self._report.note(rows[0].where, f"{dr.rates_tag} has no row with GroupIntervalStart 0: CGRateS has "
                                             f"no rate for the first {starts[0]} units of an event; they are "
                                             f"imported as free")
            first = parsed[0]
            parsed.insert(0, (0, first[1], decimal.Decimal(0), first[3], starts[0]))
            starts.insert(0, 0)
        if len(set(starts)) != len(starts):
            self._report.unsupported(rows[0].where, f"{dr.rates_tag} has two rows with the same "
                                                    f"GroupIntervalStart; {fail}")
            return None
        connect = parsed[0][1]
        if any(p[1] != 0 for p in parsed[1:]):
            self._report.note(rows[0].where, f"{dr.rates_tag}: the ConnectFee of rows after the first is ignored, "
                                             f"as CGRateS does")
        if connect < 0 or any(p[2] < 0 for p in parsed):
            self._report.unsupported(rows[0].where, f"{dr.rates_tag} has a negative price or fee; {fail}")
            return None
        if decimals_of(connect) > _MAX_DECIMALS:
            self._report.unsupported(rows[0].where, f"{dr.rates_tag}: ConnectFee {connect} has more than "
                                                    f"{_MAX_DECIMALS} decimals (micro-units); {fail}")
            return None
        steps = []
        for start, _, price, unit, increment in parsed:
            written = _price_per(price, unit, increment, service)
            if isinstance(written, str):
                self._report.unsupported(rows[0].where, f"{dr.rates_tag}: Rate {price} per {unit} {service} units "
                                                        f"{written}; {fail}")
                return None
            steps.append((start, *written, increment))
        placed, moved = _place_steps(steps)
        if moved:
            self._report.note(rows[0].where, f"{dr.rates_tag}: GroupIntervalStart {', '.join(str(s[0]) for s in steps)}"
                                             f" moved to {', '.join(str(s.from_units) for s in placed)} (where the "
                                             f"previous step's last increment ends, as CGRateS rounds each piece "
                                             f"up)")
        increment_rounding = CGRATES_INCREMENT_ROUNDING if self._arithmetic == "cgrates" else None
        return RateSpec(money_text(connect), tuple(placed), maximum, rounding, increment_rounding, moved, source)

    def _rounding(self, dr: DestinationRateRow) -> tuple[str, int]:
        method = dr.rounding_method.strip()
        if method not in ROUNDING_MODES:
            raise ValueError(f"RoundingMethod {method!r} is not one of {', '.join(ROUNDING_MODES)}")
        text = dr.rounding_decimals.strip()
        if not text.isdigit():
            raise ValueError(f"RoundingDecimals {text!r} is not a whole number >= 0")
        decimals = int(text)
        if decimals > _MAX_DECIMALS:
            self._report.note(dr.where, f"{dr.dr_id}: RoundingDecimals {decimals} rounds at micro-units (6 "
                                        f"decimals); exact in cgrates arithmetic, where amounts have at most 6")
            decimals = _MAX_DECIMALS
        return ROUNDING_MODES[method], decimals

    def _maximum(self, dr: DestinationRateRow) -> str | None:
        cost = parse_decimal(dr.max_cost, empty_is_zero=True)
        strategy = dr.max_cost_strategy.strip()
        if cost <= 0:
            return None
        if strategy == _FREE:
            if decimals_of(cost) > _MAX_DECIMALS:
                raise ValueError(f"MaxCost {cost} has more than {_MAX_DECIMALS} decimals")
            return money_text(cost)
        if strategy == _DISCONNECT:
            self._report.note(dr.where, f"{dr.dr_id}: MaxCost {cost} with *disconnect ends a live call at that cost "
                                        f"in CGRateS; the project rates completed calls, whose cost CGRateS does "
                                        f"not cap either, so no maximum is set")
            return None
        if strategy == "":
            self._report.note(dr.where, f"{dr.dr_id}: MaxCost {cost} without a MaxCostStrategy is ignored, as "
                                        f"CGRateS ignores it")
            return None
        raise ValueError(f"MaxCostStrategy {strategy!r} is not *free or *disconnect")


def _parse_rate_row(row: RateRow, service: str, seconds: bool) -> tuple[int, decimal.Decimal, decimal.Decimal, int, int]:
    """(GroupIntervalStart, ConnectFee, Rate, RateUnit, RateIncrement), units in the service's units."""
    try:
        connect = parse_decimal(row.connect_fee, empty_is_zero=True)
        price = parse_decimal(row.rate, empty_is_zero=True)
        unit = parse_duration_ns(row.rate_unit) or NS_PER_S          # 0 means 1 s (engine/rateinterval.go)
        increment = parse_duration_ns(row.rate_increment) or NS_PER_S
        start = parse_duration_ns(row.group_interval_start)
    except ValueError as error:
        raise ValueError(f"{row.where}: {error}") from None
    values = (start, unit, increment)
    if seconds:
        if any(v % NS_PER_S for v in values):
            raise ValueError(f"{row.where}: {service} is rated in whole seconds; {row.rate_id} has a unit, increment "
                             f"or group start that is not ({row.rate_unit}, {row.rate_increment}, "
                             f"{row.group_interval_start})")
        start, unit, increment = (v // NS_PER_S for v in values)
    return start, connect, price, unit, increment


def _price_per(price: decimal.Decimal, unit: int, increment: int, service: str) -> tuple[str, int] | str:
    """(price text, per units) for ``price`` per ``unit``, or why it cannot be written.

    The price needs at most 6 decimals (else both are scaled up by 10**k), and its products with
    ``per`` and the increment must stay below 2**62 (rating.compile checks them); a price too large
    for that is written per fewer units.
    """
    for k in range(0, _MAX_DECIMALS + 1):
        scaled = fractions.Fraction(price) * 10**k
        if (scaled * 10**_MAX_DECIMALS).denominator != 1:
            continue
        for divisor in _divisors(unit * 10**k):
            per = unit * 10**k // divisor
            micros = scaled / divisor * 10**_MAX_DECIMALS
            if micros.denominator != 1:
                continue
            if micros * max(per, increment) < _EXACT_LIMIT:
                return money_text(decimal.Decimal(int(micros)).scaleb(-_MAX_DECIMALS)), per
        return "cannot be priced exactly in int64 micro-units (price x increment reaches 2^62)"
    return f"cannot be written with at most {_MAX_DECIMALS} decimals per unit"


def _divisors(n: int) -> list[int]:
    """Divisors of ``n`` in increasing order (``n`` is a unit count, with small prime factors)."""
    factors: dict[int, int] = {}
    rest, p = n, 2
    while p * p <= rest and p < 10_000:
        while rest % p == 0:
            factors[p] = factors.get(p, 0) + 1
            rest //= p
        p += 1
    if rest > 1:
        factors[rest] = factors.get(rest, 0) + 1
    divisors = [1]
    for prime, power in factors.items():
        divisors = [d * prime**e for d in divisors for e in range(power + 1)]
    return sorted(divisors)


def _place_steps(steps: list[tuple[int, str, int, int]]) -> tuple[list[Step], bool]:
    """Steps whose starts lie on the previous step's increment grid, as CGRateS prices them.

    A step ending at ``g`` overruns to the end of its last increment ``e``; the piece after it is
    shortened to start at ``e`` and priced by the row containing ``e`` (rows it skips entirely are
    never priced).
    """
    placed = [Step(0, steps[0][1], steps[0][2], steps[0][3])]
    moved = False
    k = 0
    while k + 1 < len(steps):
        current = placed[-1]
        boundary = steps[k + 1][0]
        span = boundary - current.from_units
        end = current.from_units + -(-span // current.increment_units) * current.increment_units
        nxt = k + 1
        while nxt + 1 < len(steps) and steps[nxt + 1][0] <= end:
            nxt += 1
        moved = moved or end != steps[nxt][0] or nxt != k + 1
        _, price, per, increment = steps[nxt]
        placed.append(Step(end, price, per, increment))
        k = nxt
    return placed, moved
