"""Invoice-ready charges for a set of accounts: usage, allowances, plan fees, taxes and summaries.

Beam-free: ``bill_accounts`` takes the rated events of some accounts (all of their events in the
run) and returns their charge lines and invoice summaries. The pipeline calls it once per account
shard; a library user can call it on everything at once.

Rules (docs/outputs.md, docs/tariffs.md):
* Usage lines per (account, billing cycle, service cycle, service, zone, band), amounts summed
  exactly in micro-units, then rounded once to the currency's minor units (operator
  ``invoice_rounding``); the difference is kept in the line.
* Usage of a closed cycle (``closed_through``) is billed on the next open cycle, flagged late,
  keeping its service cycle.
* For every billed cycle and every subscription active in it: recurring fees prorated by active
  days (exact micro-units, rounded with ``invoice_rounding``), and one allowance line per account,
  cycle and allowance (granted, used, left).
* Tax per line from the account's tax region (rate in force at the line's service-cycle start),
  rounded with ``tax_rounding`` to minor units; TAX lines sum them per rate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow as pa

from cdr_schemas import charge_line_schema, invoice_summary_schema
from rating.money import round_to_minor
from rating.compile import CompiledReference
from rating.kernels.enrich import active_days, cycle_bounds, find_overlapping_versions
from rating.reference.model import RoundingMode

LINE_ORDER = {"USAGE": 0, "ALLOWANCE": 1, "PLAN_FEE": 2, "ADJUSTMENT": 3, "TAX": 4}
_UNITS = {"VOICE": "second", "SMS": "message", "DATA": "byte"}
_SERVICE_OF = {"voice": "VOICE", "sms": "SMS", "data": "DATA"}
BILLING_COLUMNS = ("account_id", "service_cycle", "service", "zone", "band", "currency", "raw_units", "charged_units",
                   "free_units", "charge_micros", "allowance_units")   # what bill_accounts reads of rated events


def month_index(label: str) -> int:
    """'YYYY-MM' -> year*12 + month-1, with a clear error for anything else."""
    try:
        year, month = (int(part) for part in label.split("-"))
        if not 1 <= month <= 12 or len(label) != 7:
            raise ValueError
    except ValueError:
        raise ValueError(f"cycle {label!r}: expected YYYY-MM, e.g. 2026-01") from None
    return year * 12 + month - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@dataclasses.dataclass(frozen=True)
class BillingPeriod:
    """Which cycles a run bills: ``billed`` cycle ids (sorted), and cycles up to ``closed_through``
    (inclusive) are closed: their late usage goes to the next open cycle."""
    billed: tuple[str, ...]
    closed_through: str | None = None

    def __post_init__(self):
        for label in self.billed + ((self.closed_through,) if self.closed_through else ()):
            month_index(label)

    @classmethod
    def from_usage_cycles(cls, cycles, closed_through: str | None) -> "BillingPeriod":
        """Bill every open cycle that has usage, plus the first open cycle when late usage lands there."""
        months = {month_index(c) for c in cycles}
        if closed_through is not None:
            closed = month_index(closed_through)
            months = {m for m in months if m > closed} | ({closed + 1} if any(m <= closed for m in months) else set())
        return cls(billed=tuple(month_label(m) for m in sorted(months)), closed_through=closed_through)


def _empty_lines() -> pa.Table:
    return charge_line_schema().empty_table()


def bill_accounts(compiled: CompiledReference, account_rows: np.ndarray, rated: pa.Table,
                  period: BillingPeriod) -> tuple[pa.Table, pa.Table]:
    """(charge lines, invoice summaries) of ``account_rows``; ``rated`` holds all their rated events
    (at least the ``BILLING_COLUMNS`` of ``rated_event_schema()``)."""
    operator = compiled.reference.operator
    digits = {code: c.minor_unit_digits for code, c in operator.currencies.items()}
    account_rows = np.asarray(sorted(set(int(a) for a in account_rows)), np.int64)
    usage = _usage_lines(rated, period, digits, operator.invoice_rounding)
    terms = _terms(compiled, account_rows, period)
    fees = _fee_lines(compiled, terms, digits, operator.invoice_rounding)
    allowances = _allowance_lines(compiled, terms, rated)
    lines = pl.concat([frame for frame in (usage, allowances, fees) if frame.height], how="diagonal_relaxed") \
        if any(f.height for f in (usage, allowances, fees)) else pl.from_arrow(_empty_lines())
    lines = _with_taxes(compiled, lines, digits, operator.tax_rounding)
    lines = _finish(lines)
    summary = _summaries(compiled, lines, terms)
    return lines, summary


def _usage_lines(rated: pa.Table, period: BillingPeriod, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    if rated.num_rows == 0:
        return pl.DataFrame()
    frame = pl.from_arrow(rated.select(["account_id", "service_cycle", "service", "zone", "band", "currency",
                                        "raw_units", "charged_units", "free_units", "charge_micros"]))
    closed = month_index(period.closed_through) if period.closed_through else None
    cycles = frame["service_cycle"].unique().to_list()
    billing = {c: (month_label(closed + 1) if closed is not None and month_index(c) <= closed else c) for c in cycles}
    frame = frame.with_columns(pl.col("service_cycle").replace_strict(billing).alias("billing_cycle"))
    lines = (
        frame.group_by(["account_id", "billing_cycle", "service_cycle", "service", "zone", "band", "currency"])
        .agg(pl.len().cast(pl.Int64).alias("quantity"),
             pl.col("raw_units").sum(), pl.col("charged_units").sum(), pl.col("free_units").sum(),
             pl.col("charge_micros").sum().alias("amount_micros"))
        .with_columns(
            pl.lit("USAGE").alias("line_type"),
            (pl.col("billing_cycle") != pl.col("service_cycle")).alias("late"),
            (pl.col("service").str.to_lowercase() + " " + pl.col("zone") + " " + pl.col("band")).alias("description"),
            pl.col("service").replace_strict(_UNITS, default=None).alias("unit"),
        )
    )
    return _round_lines(lines, digits, mode)


def _round_lines(lines: pl.DataFrame, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    d = np.array([digits[c] for c in lines["currency"].to_list()], np.int64)
    amount = lines["amount_micros"].to_numpy().astype(np.int64)
    minor = round_to_minor(amount, d, mode)
    return lines.with_columns(pl.Series("amount_minor", minor, pl.Int64),
                              pl.Series("rounding_micros", minor * 10 ** (6 - d) - amount, pl.Int64))


@dataclasses.dataclass(frozen=True)
class _Terms:
    """One row per (account, billed cycle, subscription active in it)."""
    account: np.ndarray
    month: np.ndarray
    cycle_start: np.ndarray
    cycle_end: np.ndarray
    sub_row: np.ndarray
    days: np.ndarray
    cycle_days: np.ndarray
    version: np.ndarray
    # (account, month) cycles billed, with their bounds, whether or not a subscription is active
    cycle_account: np.ndarray
    cycle_month: np.ndarray
    cycle_bounds: tuple[np.ndarray, np.ndarray]


def _terms(compiled: CompiledReference, account_rows: np.ndarray, period: BillingPeriod) -> _Terms:
    T = compiled.tables
    months = np.array([month_index(c) for c in period.billed], np.int64)
    acc = np.repeat(account_rows, len(months))
    mon = np.tile(months, len(account_rows))
    start = np.zeros(len(acc), np.int64)
    end = np.zeros(len(acc), np.int64)
    cycle_bounds(mon, compiled.account_tz[acc], compiled.account_bcd[acc], T.tz_start, T.tz_transitions,
                 T.tz_offsets, start, end)
    # Subscriptions of each account overlapping each cycle.
    by_account = np.argsort(compiled.sub_account, kind="stable")
    first = np.searchsorted(compiled.sub_account[by_account], acc, side="left")
    last = np.searchsorted(compiled.sub_account[by_account], acc, side="right")
    counts = last - first
    pair = np.repeat(np.arange(len(acc)), counts)
    offsets = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
    sub_row = by_account[np.repeat(first, counts) + offsets]
    overlap = (compiled.sub_from_us[sub_row] < end[pair]) & (compiled.sub_to_us[sub_row] > start[pair])
    pair, sub_row = pair[overlap], sub_row[overlap]
    days = np.zeros(len(pair), np.int64)
    cycle_days = np.ones(len(pair), np.int64)
    active_days(compiled.sub_from_us[sub_row], compiled.sub_to_us[sub_row], start[pair], end[pair],
                compiled.account_tz[acc[pair]], T.tz_start, T.tz_transitions, T.tz_offsets, days, cycle_days)
    version = np.empty(len(pair), np.int64)
    find_overlapping_versions(compiled.sub_plan[sub_row], np.maximum(compiled.sub_from_us[sub_row], start[pair]),
                              np.minimum(compiled.sub_to_us[sub_row], end[pair]), T.plan_first_version,
                              T.plan_version_count, T.ver_from_us, T.ver_to_us, version)
    return _Terms(account=acc[pair], month=mon[pair], cycle_start=start[pair], cycle_end=end[pair],
                  sub_row=sub_row, days=days, cycle_days=cycle_days, version=version,
                  cycle_account=acc, cycle_month=mon, cycle_bounds=(start, end))


def _fee_lines(compiled: CompiledReference, terms: _Terms, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    rows = []
    for i in range(len(terms.sub_row)):
        v = terms.version[i]
        if v < 0 or terms.days[i] <= 0:
            continue
        account = terms.account[i]
        msisdn = compiled.msisdns[int(np.searchsorted(compiled.sub_first, terms.sub_row[i], side="right") - 1)].as_py()
        cycle = month_label(int(terms.month[i]))
        days, cycle_days = int(terms.days[i]), int(terms.cycle_days[i])
        for fee in compiled.plan_versions[v].recurring_fees:
            amount = _round_ratio(fee.amount_micros * days, cycle_days, mode)
            prorated = "" if days == cycle_days else f", {days}/{cycle_days} days"
            rows.append(dict(account_id=compiled.account_ids[account], billing_cycle=cycle, service_cycle=cycle,
                             line_type="PLAN_FEE", item=f"{fee.name} {msisdn}",
                             description=f"{fee.description} ({msisdn}{prorated})", quantity=days, unit="day",
                             amount_micros=amount, currency=compiled.account_currency[account], late=False))
    if not rows:
        return pl.DataFrame()
    return _round_lines(pl.DataFrame(rows), digits, mode)


def _round_ratio(numerator: int, denominator: int, mode: RoundingMode) -> int:
    """round(numerator / denominator) to a whole micro-unit with ``mode`` (non-negative)."""
    whole, rest = divmod(numerator, denominator)
    if rest == 0 or mode is RoundingMode.DOWN:
        return whole
    if mode is RoundingMode.UP:
        return whole + 1
    if mode is RoundingMode.HALF_UP:
        return whole + (1 if 2 * rest >= denominator else 0)
    return whole + (1 if 2 * rest > denominator or (2 * rest == denominator and whole % 2 == 1) else 0)


def _allowance_lines(compiled: CompiledReference, terms: _Terms, rated: pa.Table) -> pl.DataFrame:
    granted: dict[tuple, int] = {}
    services: dict[str, str] = {}
    for i in range(len(terms.sub_row)):
        v = terms.version[i]
        if v < 0:
            continue
        for allowance in compiled.plan_versions[v].allowances:
            key = (compiled.account_ids[terms.account[i]], month_label(int(terms.month[i])), allowance.name,
                   compiled.account_currency[terms.account[i]])
            granted[key] = granted.get(key, 0) + allowance.units * int(terms.days[i]) // int(terms.cycle_days[i])
            services[allowance.name] = _SERVICE_OF[allowance.service]
    if not granted:
        return pl.DataFrame()
    used: dict[tuple, int] = {}
    if rated.num_rows:
        uses = pl.from_arrow(rated.select(["account_id", "service_cycle", "allowance_units"])) \
            .explode("allowance_units").drop_nulls("allowance_units").unnest("allowance_units") \
            .group_by(["account_id", "service_cycle", "allowance"]).agg(pl.col("units").sum())
        used = {(r[0], r[1], r[2]): r[3] for r in uses.iter_rows()}
    rows = []
    for (account, cycle, name, currency), units in sorted(granted.items()):
        spent = used.get((account, cycle, name), 0)
        service = services[name]
        rows.append(dict(account_id=account, billing_cycle=cycle, service_cycle=cycle, line_type="ALLOWANCE",
                         service=service, item=name,
                         description=f"{name}: {spent:,} of {units:,} {_UNITS[service]}s used",
                         quantity=1, unit=_UNITS[service], free_units=spent, granted_units=units,
                         left_units=units - spent, amount_micros=0, amount_minor=0, rounding_micros=0,
                         currency=currency, late=False))
    return pl.DataFrame(rows)


def _tax_rate_at(compiled: CompiledReference, region: str, instant_us: int):
    rate = None
    for tax in compiled.reference.tax_rates:
        if tax.tax_region == region and tax.valid_from_us <= instant_us:
            rate = tax
    return rate


def _with_taxes(compiled: CompiledReference, lines: pl.DataFrame, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    if lines.height == 0:
        return lines
    accounts = {a: i for i, a in enumerate(compiled.account_ids)}
    T = compiled.tables
    keys = lines.select(["account_id", "service_cycle"]).unique().sort(["account_id", "service_cycle"])
    rows = np.array([accounts[a] for a in keys["account_id"].to_list()], np.int64)
    months = np.array([month_index(c) for c in keys["service_cycle"].to_list()], np.int64)
    start = np.zeros(len(rows), np.int64)
    end = np.zeros(len(rows), np.int64)
    cycle_bounds(months, compiled.account_tz[rows], compiled.account_bcd[rows], T.tz_start, T.tz_transitions,
                 T.tz_offsets, start, end)
    rate_millionths, tax_name = [], []
    for row, cycle_start in zip(rows, start):
        region = compiled.reference.accounts[compiled.account_ids[row]].tax_region
        tax = _tax_rate_at(compiled, region, int(cycle_start))
        rate_millionths.append(0 if tax is None else tax.rate_millionths)
        tax_name.append("" if tax is None else tax.name)
    keys = keys.with_columns(pl.Series("rate_millionths", rate_millionths, pl.Int64), pl.Series("tax_name", tax_name))
    lines = lines.join(keys, on=["account_id", "service_cycle"], how="left")
    amount = lines["amount_minor"].to_numpy().astype(np.int64)
    rate = lines["rate_millionths"].to_numpy().astype(np.int64)
    # tax in minor units = round(amount_minor x rate / 10^6): reuse the micro->minor rounding with 0 digits
    tax = round_to_minor(amount * rate, np.zeros(len(amount), np.int64), mode)
    lines = lines.with_columns(pl.Series("tax_minor", tax, pl.Int64))
    taxed = lines.filter(pl.col("tax_minor") != 0)
    if taxed.height:
        tax_lines = (
            taxed.group_by(["account_id", "billing_cycle", "service_cycle", "tax_name", "rate_millionths", "currency"])
            .agg(pl.col("tax_minor").sum().alias("amount_minor"), pl.len().cast(pl.Int64).alias("quantity"),
                 pl.col("amount_minor").sum().alias("base_minor"))
        )
        d = np.array([digits[c] for c in tax_lines["currency"].to_list()], np.int64)
        tax_lines = tax_lines.with_columns(
            pl.lit("TAX").alias("line_type"),
            pl.col("tax_name").alias("item"),
            (pl.col("tax_name") + " on " + pl.col("base_minor").cast(pl.Utf8) + " minor units").alias("description"),
            pl.Series("amount_micros", tax_lines["amount_minor"].to_numpy() * 10 ** (6 - d), pl.Int64),
            pl.lit(0, pl.Int64).alias("rounding_micros"),
            pl.lit(0, pl.Int64).alias("tax_minor"),
            pl.lit(False).alias("late"),
        ).drop(["base_minor"])
        lines = pl.concat([lines, tax_lines], how="diagonal_relaxed")
    return lines.drop(["rate_millionths", "tax_name"])


def _finish(lines: pl.DataFrame) -> pa.Table:
    schema = charge_line_schema()
    if lines.height == 0:
        return _empty_lines()
    defaults = {"service": None, "zone": None, "band": None, "item": None, "unit": None, "raw_units": 0,
                "charged_units": 0, "free_units": 0, "granted_units": 0, "left_units": 0, "tax_minor": 0}
    for name, value in defaults.items():
        if name not in lines.columns:
            lines = lines.with_columns(pl.lit(value).alias(name))
    lines = lines.with_columns([pl.col(c).fill_null(0) for c in ("raw_units", "charged_units", "free_units",
                                                                  "granted_units", "left_units", "tax_minor")])
    keys = ["account_id", "billing_cycle", "_order", "service_cycle", "service", "zone", "band", "item"]
    # Every other column breaks the remaining ties (e.g. two fee lines of one MSISDN after a plan
    # change), so the order never depends on how Polars grouped the rows.
    keys += [c for c in schema.names if c not in keys]
    lines = lines.with_columns(pl.col("line_type").replace_strict(LINE_ORDER).alias("_order")).sort(
        keys, nulls_last=False)
    return lines.select(schema.names).to_arrow().cast(schema)


def _summaries(compiled: CompiledReference, lines: pa.Table, terms: _Terms) -> pa.Table:
    bounds = pl.DataFrame({
        "account_id": [compiled.account_ids[a] for a in terms.cycle_account],
        "billing_cycle": [month_label(int(m)) for m in terms.cycle_month],
        "cycle_start": terms.cycle_bounds[0], "cycle_end": terms.cycle_bounds[1],
    }, schema={"account_id": pl.Utf8, "billing_cycle": pl.Utf8, "cycle_start": pl.Int64, "cycle_end": pl.Int64})
    return summarise_invoices(lines, bounds)


def summarise_invoices(lines: pa.Table, bounds: pl.DataFrame) -> pa.Table:
    """Invoice summaries (``invoice_summary_schema()``) of charge lines; ``bounds`` gives each
    (account_id, billing_cycle) its cycle_start and cycle_end (int64 UTC micros)."""
    schema = invoice_summary_schema()
    frame = pl.from_arrow(lines)
    if frame.height == 0:
        return schema.empty_table()
    is_tax = pl.col("line_type") == "TAX"
    is_usage = pl.col("line_type") == "USAGE"
    summary = frame.group_by(["account_id", "billing_cycle", "currency"]).agg(
        pl.col("amount_minor").filter(~is_tax).sum().alias("subtotal_minor"),
        pl.col("amount_minor").filter(is_tax).sum().alias("tax_minor"),
        pl.col("quantity").filter(is_usage).sum().alias("rated_events"),
        pl.col("quantity").filter(is_usage & pl.col("late")).sum().alias("late_events"),
        pl.col("free_units").filter(is_usage).sum().alias("free_units"),
        pl.col("rounding_micros").sum().alias("rounding_micros"),
    ).with_columns((pl.col("subtotal_minor") + pl.col("tax_minor")).alias("total_minor"))
    summary = summary.join(bounds, on=["account_id", "billing_cycle"], how="left")
    missing = summary.filter(pl.col("cycle_start").is_null())
    if missing.height:
        raise ValueError(f"no cycle bounds for invoices {missing.select(['account_id', 'billing_cycle']).rows()[:3]}")
    summary = summary.with_columns(pl.col("cycle_start").cast(pl.Datetime("us", "UTC")),
                                   pl.col("cycle_end").cast(pl.Datetime("us", "UTC")))
    return summary.sort(["account_id", "billing_cycle"]).select(schema.names).to_arrow().cast(schema)
