"""The revenue impact of a re-rate, as a JSON-ready document: totals, per plan, per zone, per
account decile, and the records that change most."""

from __future__ import annotations

import polars as pl

from rating.rerate.compare import RecordDiff


def account_deciles(by_account: pl.DataFrame) -> pl.DataFrame:
    """Revenue before and after per (currency, decile of accounts by previous revenue; 10 = the top)."""
    if by_account.height == 0:
        return pl.DataFrame(schema={"currency": pl.Utf8, "decile": pl.Int64, "accounts": pl.Int64,
                                    "previous_micros": pl.Int64, "rerated_micros": pl.Int64, "delta_micros": pl.Int64})
    ranked = by_account.sort(["currency", "previous_micros", "account_id"]).with_columns(
        pl.int_range(pl.len()).over("currency").alias("_rank"), pl.len().over("currency").alias("_n"))
    ranked = ranked.with_columns((pl.col("_rank") * 10 // pl.col("_n") + 1).cast(pl.Int64).alias("decile"))
    return (ranked.group_by(["currency", "decile"])
            .agg(pl.len().cast(pl.Int64).alias("accounts"), pl.col("previous_micros").sum(),
                 pl.col("rerated_micros").sum(), pl.col("delta_micros").sum())
            .sort(["currency", "decile"]))


def impact_summary(diff: RecordDiff, *, top: int = 20) -> dict:
    """The revenue impact as a JSON-ready document: totals, per plan, per zone, per account decile,
    and the ``top`` records that change most (by absolute money difference)."""
    def rows(frame: pl.DataFrame) -> list[dict]:
        return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
                for row in frame.iter_rows(named=True)]

    totals = {c: {"previous_micros": diff.previous_micros.get(c, 0), "rerated_micros": diff.rerated_micros.get(c, 0),
                  "delta_micros": d} for c, d in diff.delta_micros.items()}
    moved = diff.changes.filter(pl.col("delta_micros") != 0)
    biggest = (moved.with_columns(pl.col("delta_micros").abs().alias("_abs"))
               .sort(["_abs", "source", "record_id"], descending=[True, False, False]).head(top).drop("_abs"))
    return {
        "records": dict(diff.counts), "recycled": dict(diff.recycled), "unkeyed_rejects": diff.unkeyed_rejects,
        "totals": totals,
        "by_plan": rows(diff.by_plan), "by_zone": rows(diff.by_zone),
        "by_account_decile": rows(account_deciles(diff.by_account)),
        "top_records": rows(biggest.select(["status", "reasons", "source", "record_id", "account_id", "currency",
                                            "service", "start_time", "plan_id", "old_zone", "new_zone",
                                            "old_charge_micros", "new_charge_micros", "delta_micros"])),
    }
