"""Read the rating files of a CGRateS tariff plan folder into rows, values still as written.

Files (columns as CGRateS's ``data/tariffplans/*/`` write them; ``#`` lines and blank lines are
skipped, cells are trimmed):

    Timings.csv           Tag,Years,Months,MonthDays,WeekDays,Time
    Destinations.csv      Id,Prefix
    Rates.csv             Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart
    DestinationRates.csv  Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy
    RatingPlans.csv       Id,DestinationRatesId,TimingTag,Weight
    RatingProfiles.csv    Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject
    AccountActions.csv    Tenant,Account,...   (only the accounts are read: subscribers without a profile)

A missing file is an empty table (``RatingPlans.csv`` and ``RatingProfiles.csv`` are required). A
row with too few cells, or with bytes that are not UTF-8, is reported at its line and skipped.
Values are parsed where they are used, so the report names the row that could not be converted.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
from pathlib import Path

from rating.cgrates.report import Report
from rating.reference.csv_tables import open_csv_text, undecodable_byte


@dataclasses.dataclass(frozen=True)
class TimingRow:
    tag: str
    years: str
    months: str
    month_days: str
    week_days: str
    time: str
    where: str


@dataclasses.dataclass(frozen=True)
class RateRow:
    rate_id: str
    connect_fee: str
    rate: str
    rate_unit: str
    rate_increment: str
    group_interval_start: str
    where: str


@dataclasses.dataclass(frozen=True)
class DestinationRateRow:
    dr_id: str
    destination_id: str
    rates_tag: str
    rounding_method: str
    rounding_decimals: str
    max_cost: str
    max_cost_strategy: str
    where: str


@dataclasses.dataclass(frozen=True)
class RatingPlanRow:
    plan_id: str
    dr_id: str
    timing_tag: str
    weight: str
    where: str
    order: int           # position in RatingPlans.csv: ties are broken by it


@dataclasses.dataclass(frozen=True)
class RatingProfileRow:
    tenant: str
    category: str
    subject: str
    activation_time: str
    plan_id: str
    fallback_subjects: str
    where: str


@dataclasses.dataclass(frozen=True)
class TariffPlan:
    folder: Path
    timings: dict[str, TimingRow]
    destinations: dict[str, list[tuple[str, str]]]          # id -> [(prefix, where)]
    rates: dict[str, list[RateRow]]                          # id -> rows
    destination_rates: dict[str, list[DestinationRateRow]]   # id -> rows (one per destination)
    rating_plans: dict[str, list[RatingPlanRow]]             # id -> rows
    rating_profiles: tuple[RatingProfileRow, ...]
    accounts: tuple[tuple[str, str], ...]                    # (tenant, account)


def read_tariff_plan(folder: str | Path, report: Report) -> TariffPlan:
    """Read the rating files of ``folder``; raises ``ValueError`` if it is not a tariff plan."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory; pass a CGRateS tariff plan folder (with RatingPlans.csv "
                         f"and RatingProfiles.csv)")
    for required in ("RatingPlans.csv", "RatingProfiles.csv"):
        if not (root / required).is_file():
            raise ValueError(f"{root} has no {required}; a CGRateS tariff plan folder needs RatingPlans.csv and "
                             f"RatingProfiles.csv")

    timings: dict[str, TimingRow] = {}
    for where, cells in _rows(root, "Timings.csv", 6, report):
        if cells[0] in timings:
            report.unsupported(where, f"timing {cells[0]} is defined twice (first at {timings[cells[0]].where}); "
                                      f"the first definition is used")
            continue
        timings[cells[0]] = TimingRow(*cells[:6], where=where)

    destinations: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for where, cells in _rows(root, "Destinations.csv", 2, report):
        destinations[cells[0]].append((cells[1], where))

    rates: dict[str, list[RateRow]] = collections.defaultdict(list)
    for where, cells in _rows(root, "Rates.csv", 6, report):
        rates[cells[0]].append(RateRow(*cells[:6], where=where))

    destination_rates: dict[str, list[DestinationRateRow]] = collections.defaultdict(list)
    for where, cells in _rows(root, "DestinationRates.csv", 5, report):
        cells = cells + [""] * (7 - len(cells))   # MaxCost and MaxCostStrategy are optional
        destination_rates[cells[0]].append(DestinationRateRow(*cells[:7], where=where))

    rating_plans: dict[str, list[RatingPlanRow]] = collections.defaultdict(list)
    for order, (where, cells) in enumerate(_rows(root, "RatingPlans.csv", 4, report)):
        rating_plans[cells[0]].append(RatingPlanRow(*cells[:4], where=where, order=order))

    profiles = []
    for where, cells in _rows(root, "RatingProfiles.csv", 5, report):
        if len(cells) >= 7 and cells[0] in ("*out", "*in"):   # older files lead with a Direction column
            cells = cells[1:]
        cells = cells + [""] * (6 - len(cells))
        profiles.append(RatingProfileRow(*cells[:6], where=where))

    accounts = tuple((cells[0], cells[1]) for _, cells in _rows(root, "AccountActions.csv", 2, report))
    return TariffPlan(root, timings, dict(destinations), dict(rates), dict(destination_rates),
                      dict(rating_plans), tuple(profiles), accounts)


def _rows(root: Path, name: str, min_cells: int, report: Report):
    """(``"Name.csv:LINE"``, trimmed cells) of each data row; too-short rows are reported."""
    path = root / name
    if not path.is_file():
        return
    with open_csv_text(path) as handle:
        reader = csv.reader(handle)
        start = 1                                 # a quoted value may span lines: report the first
        for cells in reader:
            line, start = start, reader.line_num + 1
            cells = [cell.strip() for cell in cells]
            if not any(cells) or cells[0].startswith("#"):
                continue
            where = f"{name}:{line}"
            bad_byte = undecodable_byte(cells)
            if bad_byte is not None:
                report.unsupported(where, f"{bad_byte}; save the file as UTF-8; row skipped")
                continue
            if len(cells) < min_cells:
                report.unsupported(where, f"expected at least {min_cells} columns, got {len(cells)}; row skipped")
                continue
            yield where, cells
