"""Adjustment lines for a closed cycle that was re-rated: ADJUSTMENT lines per (account, currency,
service or plan fees) that move the billed totals exactly to the re-rated ones, with their TAX
lines, and the per-record money behind them."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow as pa

from cdr_schemas import charge_line_schema
from rating.billing import finish_lines, tax_lines
from rating.rerate.compare import KEY


_KIND = (pl.when(pl.col("line_type") == "USAGE").then(pl.col("service"))
         .when(pl.col("line_type") == "PLAN_FEE").then(pl.lit("PLAN_FEE"))
         .when(pl.col("line_type") == "ADJUSTMENT").then(pl.col("item"))
         .otherwise(pl.lit(None, pl.Utf8)))
_FEES = "PLAN_FEE"   # the kind of fee money; every other kind is a usage type's (usage_types.yaml forbids the name)


def _money_by_kind(lines: pl.DataFrame, with_fees: bool) -> pl.DataFrame:
    frame = lines.with_columns(_KIND.alias("kind")).filter(pl.col("kind").is_not_null())
    if not with_fees:
        frame = frame.filter(pl.col("kind") != "PLAN_FEE")
    return frame.group_by(["account_id", "currency", "kind"]).agg(
        pl.col("amount_micros").sum(), pl.col("amount_minor").sum(), pl.col("tax_minor").sum())


def record_contributions(changes: pl.DataFrame) -> pl.DataFrame:
    """Per-record money behind adjustments: one row per (record, account) whose charge moved.

    A record that changed account gives two rows (a credit on the old one, a debit on the new one),
    so the rows of an (account, service) sum exactly to its usage adjustment.
    """
    moved = changes.filter(pl.col("delta_micros") != 0)
    same = moved.filter(pl.col("old_account_id").is_null() | pl.col("old_account_id").eq_missing(pl.col("account_id"))
                        | pl.col("new_charge_micros").is_null())
    same = same.with_columns(pl.coalesce("account_id", "old_account_id").alias("account_id"))
    switched = moved.filter(pl.col("old_account_id").is_not_null() & pl.col("new_charge_micros").is_not_null()
                            & pl.col("old_account_id").ne_missing(pl.col("account_id")))
    credit = switched.with_columns(pl.col("old_account_id").alias("account_id"),
                                   (-pl.col("old_charge_micros")).alias("delta_micros"))
    debit = switched.with_columns(pl.col("new_charge_micros").alias("delta_micros"))
    columns = ["account_id", "currency", "service", "source", "record_id", "start_time", "status", "previous",
               "reasons", "old_charge_micros", "new_charge_micros", "delta_micros"]
    return pl.concat([f.select(columns) for f in (same, credit, debit)]).sort(["account_id", "service", *KEY])


@dataclasses.dataclass(frozen=True)
class Adjustments:
    """ADJUSTMENT and TAX lines (``charge_line_schema()``), the per-record rows behind them, and
    whether billed + adjustments equals the re-rated money for every (account, currency, kind)."""
    lines: pa.Table
    records: pl.DataFrame
    balanced: bool


def adjustment_lines(billed: pa.Table, rerated: pa.Table, changes: pl.DataFrame, *, cycle: str, billing_cycle: str,
                     version: int, digits: dict[str, int]) -> Adjustments:
    """Lines that move a closed cycle's billed lines exactly to its re-rated lines.

    ``billed``: the cycle's lines as they stand (service cycle ``cycle``, earlier adjustments
    included); ``rerated``: the cycle's lines recomputed from the re-rated events. Per (account,
    currency, service) of usage — and per account for plan fees when the store billed the cycle's
    fees — one ADJUSTMENT line with ``amount_micros`` = re-rated − billed (exact), ``amount_minor`` =
    the difference of the minor-unit amounts and ``tax_minor`` the difference of the tax on them, so
    billed + adjustment equals the re-rated figures in micros, minor units and tax alike. A TAX line
    per (account, tax) carries the adjustments' tax. Lines go on ``billing_cycle``, ``late``.
    """
    billed_frame, rerated_frame = pl.from_arrow(billed), pl.from_arrow(rerated)
    with_fees = billed_frame.filter(_KIND == "PLAN_FEE").height > 0
    keys = ["account_id", "currency", "kind"]
    old = _money_by_kind(billed_frame, with_fees)
    new = _money_by_kind(rerated_frame, with_fees)
    diff = old.join(new, on=keys, how="full", coalesce=True, suffix="_new").with_columns(
        [pl.col(c).fill_null(0) for c in ("amount_micros", "amount_minor", "tax_minor",
                                          "amount_micros_new", "amount_minor_new", "tax_minor_new")])
    diff = diff.with_columns(
        (pl.col("amount_micros_new") - pl.col("amount_micros")).alias("d_micros"),
        (pl.col("amount_minor_new") - pl.col("amount_minor")).alias("d_minor"),
        (pl.col("tax_minor_new") - pl.col("tax_minor")).alias("d_tax"),
    ).filter((pl.col("d_micros") != 0) | (pl.col("d_minor") != 0) | (pl.col("d_tax") != 0)).sort(keys)

    records = record_contributions(changes)
    behind = records.group_by(["account_id", "currency", pl.col("service").alias("kind")]).agg(
        pl.len().cast(pl.Int64).alias("records"), pl.col("delta_micros").sum().alias("records_micros"))
    diff = diff.join(behind, on=keys, how="left").with_columns(pl.col("records").fill_null(0),
                                                               pl.col("records_micros").fill_null(0))
    # Every usage adjustment is exactly the sum of the per-record changes behind it.
    usage = pl.col("kind") != _FEES
    check = (old.filter(usage).join(new.filter(usage), on=keys, how="full", coalesce=True, suffix="_new")
             .join(behind, on=keys, how="full", coalesce=True)
             .with_columns([pl.col(c).fill_null(0) for c in ("amount_micros", "amount_micros_new", "records_micros")]))
    balanced = bool((check["amount_micros_new"] - check["amount_micros"] == check["records_micros"]).all())

    d = np.array([digits[c] for c in diff["currency"].to_list()], np.int64)
    lines = diff.with_columns(
        pl.lit(billing_cycle).alias("billing_cycle"), pl.lit(cycle).alias("service_cycle"),
        pl.lit("ADJUSTMENT").alias("line_type"),
        pl.when(pl.col("kind") != _FEES).then(pl.col("kind")).otherwise(pl.lit(None, pl.Utf8)).alias("service"),
        pl.col("kind").alias("item"),
        (pl.lit(f"re-rating of {cycle} (version {version}): ")
         + pl.when(pl.col("d_micros") < 0).then(pl.lit("credit")).otherwise(pl.lit("debit")) + pl.lit(" ")
         + pl.when(pl.col("kind") == "PLAN_FEE").then(pl.lit("plan fees"))
         .otherwise(pl.col("kind").str.to_lowercase() + pl.lit(" usage, ") + pl.col("records").cast(pl.Utf8)
                    + pl.lit(" records"))).alias("description"),
        pl.col("records").alias("quantity"),
        pl.col("d_micros").alias("amount_micros"), pl.col("d_minor").alias("amount_minor"),
        (pl.col("d_minor") * pl.Series(10 ** (6 - d)) - pl.col("d_micros")).alias("rounding_micros"),
        pl.col("d_tax").alias("tax_minor"), pl.lit(True).alias("late"),
    ).drop(["kind", "amount_micros_new", "amount_minor_new", "tax_minor_new", "d_micros", "d_minor", "d_tax",
            "records", "records_micros"])
    taxes = _adjustment_taxes(lines, billed_frame, rerated_frame, digits)
    return Adjustments(lines=finish_lines(pl.concat([lines, taxes], how="diagonal_relaxed")), records=records,
                       balanced=balanced)


def _adjustment_taxes(lines: pl.DataFrame, billed: pl.DataFrame, rerated: pl.DataFrame, digits: dict) -> pl.DataFrame:
    """TAX lines of the adjustments, named after the tax each account's lines already carry."""
    names = (pl.concat([rerated, billed]).filter(pl.col("line_type") == "TAX")
             .group_by("account_id", maintain_order=True).agg(pl.col("item").first().alias("tax_name")))
    taxed = lines.filter(pl.col("tax_minor") != 0).join(names, on="account_id", how="left").with_columns(
        pl.col("tax_name").fill_null("tax"))
    taxes = tax_lines(taxed, digits, [], pl.col("tax_name") + pl.lit(" on re-rating adjustments"), late=True)
    return taxes.drop("tax_name") if taxes.height else taxes


def same_lines(a: pa.Table, b: pa.Table) -> bool:
    """Whether two sets of charge lines are equal, whatever their order and file split."""
    if a.num_rows != b.num_rows:
        return False
    keys = [(name, "ascending") for name in charge_line_schema().names]
    cast = charge_line_schema()
    return a.cast(cast).sort_by(keys).equals(b.cast(cast).sort_by(keys))
