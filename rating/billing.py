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
from rating.arrow_utils import take_names
from rating.cycles import account_cycle_bounds, month_index, month_label, month_labels
from rating.money import checked_product, exact_sum, require_int64, round_ratio, round_to_minor
from rating.compile import CompiledReference
from rating.kernels.enrich import active_days, find_overlapping_versions
from rating.reference.model import RoundingMode

LINE_ORDER = {"USAGE": 0, "ALLOWANCE": 1, "PLAN_FEE": 2, "ADJUSTMENT": 3, "TAX": 4}
_UNIT_LABELS = {"seconds": "second", "messages": "message", "bytes": "byte"}   # a count type's is its unit_name
BILLING_COLUMNS = ("account_id", "service_cycle", "service", "zone", "band", "currency", "raw_units", "charged_units",
                   "free_units", "charge_micros", "allowance_units")   # what bill_accounts reads of rated events


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
    usage = _usage_lines(rated, period, digits, operator.invoice_rounding, unit_labels(compiled))
    terms = _terms(compiled, account_rows, period)
    fees = _fee_lines(compiled, terms, digits, operator.invoice_rounding)
    allowances = _allowance_lines(compiled, terms, rated)
    lines = pl.concat([frame for frame in (usage, allowances, fees) if frame.height], how="diagonal_relaxed") \
        if any(f.height for f in (usage, allowances, fees)) else pl.from_arrow(_empty_lines())
    lines = _with_taxes(compiled, lines, digits, operator.tax_rounding)
    lines = finish_lines(lines)
    summary = _summaries(compiled, lines, terms)
    return lines, summary


def unit_labels(compiled: CompiledReference) -> dict[str, str]:
    """Usage type name (a charge line's ``service``) -> the unit its lines count in: second,
    message, byte, or a count type's ``unit_name`` (calls, kWh)."""
    return {t.name: t.unit_name or _UNIT_LABELS[t.unit] for t in compiled.reference.usage_types.values()}


def _usage_lines(rated: pa.Table, period: BillingPeriod, digits: dict, mode: RoundingMode,
                 units: dict[str, str]) -> pl.DataFrame:
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
             exact_sum("raw_units"), exact_sum("charged_units"), exact_sum("free_units"),
             exact_sum("charge_micros").alias("amount_micros"))
        .pipe(require_int64, ["raw_units", "charged_units", "free_units", "amount_micros"],
              ["account_id", "billing_cycle", "service", "zone", "band"], "usage line")
        .with_columns(
            pl.lit("USAGE").alias("line_type"),
            (pl.col("billing_cycle") != pl.col("service_cycle")).alias("late"),
            (pl.col("service").str.to_lowercase() + " " + pl.col("zone") + " " + pl.col("band")).alias("description"),
            pl.col("service").replace_strict(units, default=None, return_dtype=pl.Utf8).alias("unit"),
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
    start, end = account_cycle_bounds(compiled, acc, mon)
    # Subscriptions of each account overlapping each cycle.
    by_account = compiled.sub_by_account
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


def _expand(terms: _Terms, keep: np.ndarray, per_version: list[list]) -> tuple[np.ndarray, np.ndarray, list]:
    """(term index, item index, items) for every item of the plan version of each kept term, in term
    then item order.

    ``keep`` is a boolean mask over the terms; ``per_version[v]`` lists the items (fees or
    allowances) of version row ``v``; item indexes run over ``items``, all versions' items
    concatenated.
    """
    kept = np.flatnonzero(keep)
    versions = terms.version[kept]
    items = [item for version_items in per_version for item in version_items]
    counts = np.array([len(version_items) for version_items in per_version], np.int64)
    first = np.cumsum(counts) - counts
    per_term = counts[versions]
    term = np.repeat(np.arange(len(versions)), per_term)
    item = np.repeat(first[versions], per_term) + (np.arange(len(term)) - np.repeat(np.cumsum(per_term) - per_term,
                                                                                    per_term))
    return kept[term], item, items


def _fee_lines(compiled: CompiledReference, terms: _Terms, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    """One PLAN_FEE line per (subscription, billed cycle, recurring fee), prorated by active days."""
    term, item, fees = _expand(terms, (terms.version >= 0) & (terms.days > 0),
                               [list(v.recurring_fees) for v in compiled.plan_versions])
    if len(term) == 0:
        return pl.DataFrame()
    days, cycle_days = terms.days[term], terms.cycle_days[term]
    amount = np.array([fee.amount_micros for fee in fees], np.int64)[item]
    account = terms.account[term]
    subscriber = np.searchsorted(compiled.sub_first, terms.sub_row[term], side="right") - 1
    cycle = pl.from_arrow(month_labels(terms.month[term]))
    # The identity key names the subscriber: the MSISDN, the SIP URI, imsi:..., account:...
    msisdn = pl.from_arrow(compiled.subscriber_keys.take(pa.array(subscriber, pa.int64())))
    frame = pl.DataFrame({
        "account_id": pl.from_arrow(take_names(compiled.account_ids, account)),
        "billing_cycle": cycle, "service_cycle": cycle,
        "fee_name": pl.Series([f.name for f in fees], dtype=pl.Utf8)[item],
        "fee_description": pl.Series([f.description for f in fees], dtype=pl.Utf8)[item],
        "msisdn": msisdn, "quantity": days, "cycle_days": cycle_days,
        "amount_micros": round_ratio(amount * days, cycle_days, mode),
        "currency": pl.from_arrow(take_names(compiled.account_currency, account)),
    })
    prorated = pl.when(pl.col("quantity") == pl.col("cycle_days")).then(pl.lit("")).otherwise(
        pl.format(", {}/{} days", pl.col("quantity"), pl.col("cycle_days")))
    frame = frame.with_columns(
        pl.lit("PLAN_FEE").alias("line_type"),
        pl.format("{} {}", pl.col("fee_name"), pl.col("msisdn")).alias("item"),
        pl.format("{} ({}{})", pl.col("fee_description"), pl.col("msisdn"), prorated).alias("description"),
        pl.lit("day").alias("unit"), pl.lit(False).alias("late"),
    ).select(["account_id", "billing_cycle", "service_cycle", "line_type", "item", "description", "quantity", "unit",
              "amount_micros", "currency", "late"])
    return _round_lines(frame, digits, mode)


def _allowance_lines(compiled: CompiledReference, terms: _Terms, rated: pa.Table) -> pl.DataFrame:
    """One ALLOWANCE line per (account, cycle, allowance): granted (prorated per subscription), used, left."""
    term, item, allowances = _expand(terms, terms.version >= 0, [list(v.allowances) for v in compiled.plan_versions])
    if len(term) == 0:
        return pl.DataFrame()
    units = np.array([a.units for a in allowances], np.int64)[item]
    account = terms.account[term]
    granted = pl.DataFrame({
        "account_id": pl.from_arrow(take_names(compiled.account_ids, account)),
        "service_cycle": pl.from_arrow(month_labels(terms.month[term])),
        "item": pl.Series([a.name for a in allowances], dtype=pl.Utf8)[item],
        "currency": pl.from_arrow(take_names(compiled.account_currency, account)),
        "granted_units": units * terms.days[term] // terms.cycle_days[term],
    }).group_by(["account_id", "service_cycle", "item", "currency"]).agg(pl.col("granted_units").sum())
    if rated.num_rows:
        used = pl.from_arrow(rated.select(["account_id", "service_cycle", "allowance_units"])) \
            .explode("allowance_units").drop_nulls("allowance_units").unnest("allowance_units") \
            .group_by(["account_id", "service_cycle", "allowance"]).agg(pl.col("units").sum().alias("free_units")) \
            .rename({"allowance": "item"})
        granted = granted.join(used, on=["account_id", "service_cycle", "item"], how="left")
    else:
        granted = granted.with_columns(pl.lit(0, pl.Int64).alias("free_units"))
    service_of = {a.name: a.service.upper() for a in allowances}
    units = unit_labels(compiled)
    plural = {name: unit if unit not in _UNIT_LABELS.values() else unit + "s" for name, unit in units.items()}
    lines = granted.sort(["account_id", "service_cycle", "item", "currency"]).with_columns(
        pl.col("free_units").fill_null(0).cast(pl.Int64),
        pl.col("item").replace_strict(service_of).alias("service"))
    lines = lines.with_columns(
        pl.col("service_cycle").alias("billing_cycle"), pl.lit("ALLOWANCE").alias("line_type"),
        pl.Series("description", [f"{name}: {spent:,} of {granted:,} {plural[service]} used" for name, spent, granted,
                                  service in lines.select(["item", "free_units", "granted_units", "service"]).iter_rows()],
                  dtype=pl.Utf8),
        pl.lit(1, pl.Int64).alias("quantity"), pl.col("service").replace_strict(units, return_dtype=pl.Utf8).alias("unit"),
        (pl.col("granted_units") - pl.col("free_units")).alias("left_units"),
        pl.lit(0, pl.Int64).alias("amount_micros"), pl.lit(0, pl.Int64).alias("amount_minor"),
        pl.lit(0, pl.Int64).alias("rounding_micros"), pl.lit(False).alias("late"))
    return lines.select(["account_id", "billing_cycle", "service_cycle", "line_type", "service", "item", "description",
                         "quantity", "unit", "free_units", "granted_units", "left_units", "amount_micros",
                         "amount_minor", "rounding_micros", "currency", "late"])


def _tax_rate_at(compiled: CompiledReference, region: str, instant_us: int):
    rate = None
    for tax in compiled.reference.tax_rates:
        if tax.tax_region == region and tax.valid_from_us <= instant_us:
            rate = tax
    return rate


def _with_taxes(compiled: CompiledReference, lines: pl.DataFrame, digits: dict, mode: RoundingMode) -> pl.DataFrame:
    if lines.height == 0:
        return lines
    keys = lines.select(["account_id", "service_cycle"]).unique().sort(["account_id", "service_cycle"])
    rows = np.array([compiled.account_row[a] for a in keys["account_id"].to_list()], np.int64)
    months = np.array([month_index(c) for c in keys["service_cycle"].to_list()], np.int64)
    start, _ = account_cycle_bounds(compiled, rows, months)
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
    tax = round_to_minor(checked_product(amount, rate, "tax on a charge line (minor units x rate millionths)"),
                         np.zeros(len(amount), np.int64), mode)
    lines = lines.with_columns(pl.Series("tax_minor", tax, pl.Int64))
    taxes = tax_lines(lines.filter(pl.col("tax_minor") != 0), digits, ["rate_millionths"],
                      pl.col("tax_name") + " on " + pl.col("base_minor").cast(pl.Utf8) + " minor units", late=False)
    if taxes.height:
        lines = pl.concat([lines, taxes], how="diagonal_relaxed")
    return lines.drop(["rate_millionths", "tax_name"])


def tax_lines(taxed: pl.DataFrame, digits: dict, extra_keys: list[str], description: pl.Expr, *,
              late: bool) -> pl.DataFrame:
    """TAX lines of charge lines that carry tax: their ``tax_minor`` summed per (account, billing
    cycle, service cycle, ``tax_name``, currency, ``extra_keys``). ``description`` may use the
    summed ``base_minor`` (the lines' own amounts). Used by billing and by re-rating adjustments."""
    if taxed.height == 0:
        return pl.DataFrame()
    keys = ["account_id", "billing_cycle", "service_cycle", "tax_name", *extra_keys, "currency"]
    lines = (taxed.group_by(keys)
             .agg(exact_sum("tax_minor").alias("amount_minor"), pl.len().cast(pl.Int64).alias("quantity"),
                  exact_sum("amount_minor").alias("base_minor"))
             .pipe(require_int64, ["amount_minor", "base_minor"], ["account_id", "billing_cycle", "tax_name"],
                   "tax line"))
    d = np.array([digits[c] for c in lines["currency"].to_list()], np.int64)
    return lines.with_columns(
        pl.lit("TAX").alias("line_type"),
        pl.col("tax_name").alias("item"),
        description.alias("description"),
        pl.Series("amount_micros", lines["amount_minor"].to_numpy() * 10 ** (6 - d), pl.Int64),
        pl.lit(0, pl.Int64).alias("rounding_micros"),
        pl.lit(0, pl.Int64).alias("tax_minor"),
        pl.lit(late).alias("late"),
    ).drop(["base_minor"])


def finish_lines(lines: pl.DataFrame) -> pa.Table:
    """Charge lines as ``charge_line_schema()`` in the store's line order, missing columns defaulted.

    Every column breaks the remaining ties, so the order never depends on how Polars grouped the
    rows: billing, re-rated versions and adjustments all come out the same way."""
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
        pl.col("amount_minor").filter(~is_tax).cast(pl.Int128).sum().alias("subtotal_minor"),
        pl.col("amount_minor").filter(is_tax).cast(pl.Int128).sum().alias("tax_minor"),
        pl.col("quantity").filter(is_usage).sum().alias("rated_events"),
        pl.col("quantity").filter(is_usage & pl.col("late")).sum().alias("late_events"),
        pl.col("free_units").filter(is_usage).cast(pl.Int128).sum().alias("free_units"),
        exact_sum("rounding_micros"),
    ).with_columns((pl.col("subtotal_minor") + pl.col("tax_minor")).alias("total_minor")).pipe(
        require_int64, ["subtotal_minor", "tax_minor", "total_minor", "free_units", "rounding_micros"],
        ["account_id", "billing_cycle"], "invoice")
    summary = summary.join(bounds, on=["account_id", "billing_cycle"], how="left")
    missing = summary.filter(pl.col("cycle_start").is_null())
    if missing.height:
        raise ValueError(f"no cycle bounds for invoices {missing.select(['account_id', 'billing_cycle']).rows()[:3]}")
    summary = summary.with_columns(pl.col("cycle_start").cast(pl.Datetime("us", "UTC")),
                                   pl.col("cycle_end").cast(pl.Datetime("us", "UTC")))
    return summary.sort(["account_id", "billing_cycle"]).select(schema.names).to_arrow().cast(schema)
