"""Bill the cycles the stream fed, from the store's rated events, when they are closed.

The streaming job commits rated events, rejects and duplicates, not charges: billing needs every
account of the reference (plan fees are owed without usage) and the cycle's last events. So
``close-cycle --reference DIR`` bills each cycle it closes that a stream run fed: every account's
charge lines and invoice summary, from the cycle's rated events as the store holds them, replacing
the cycle's charges and invoices in the same commit that closes it (``rating.billing``, the code
the batch job bills with).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pyiceberg.expressions import EqualTo, In

from cdr_schemas import charge_line_schema, invoice_summary_schema
from pipelines.outputs import write_by_cycle
from pipelines.staged_run import StagedRun
from rating.billing import BILLING_COLUMNS, BillingPeriod, bill_accounts
from rating.cycles import month_index
from rating.engine import RatingEngine
from rating.money import exact_sum
from sinks.iceberg import IcebergStore


def stream_fed_cycles(store: IcebergStore, through: str, closed_through: str | None) -> list[str]:
    """The cycles after ``closed_through`` and up to ``through`` that a stream run committed events to."""
    fed = set()
    for run in store.runs():
        if run.kind == "stream":
            fed.update(run.control_totals.get("cycles", {}))
    low = month_index(closed_through) if closed_through else -1
    return sorted(c for c in fed if low < month_index(c) <= month_index(through))


def bill_cycles(run: StagedRun, cycles: list[str], reference_dir: str, closed_through: str | None) -> tuple[dict, dict]:
    """Write every account's charge lines and invoice summary of each of ``cycles`` into the run's
    files; returns (the cycles' billing totals, the overwrite filters of charges and invoices)."""
    engine = RatingEngine.load(reference_dir)
    accounts = np.arange(len(engine.compiled.account_ids), dtype=np.int64)
    totals = {}
    for cycle in cycles:
        rated = run.store.read("rated", row_filter=EqualTo("service_cycle", cycle), selected_fields=BILLING_COLUMNS)
        lines, summary = bill_accounts(engine.compiled, accounts, rated,
                                       BillingPeriod(billed=(cycle,), closed_through=closed_through))
        lines, summary = lines.cast(charge_line_schema()), summary.cast(invoice_summary_schema())
        write_by_cycle(run.dirs, "charges", 0, lines, "billing_cycle")
        write_by_cycle(run.dirs, "invoices", 0, summary, "billing_cycle")
        rated_micros = pl.from_arrow(rated.select(["charge_micros"])).select(exact_sum("charge_micros")).item()
        usage = pl.from_arrow(lines.select(["line_type", "amount_micros"])).filter(pl.col("line_type") == "USAGE")
        usage_micros = usage.select(exact_sum("amount_micros")).item() if usage.height else 0
        totals[cycle] = {"rated_events": rated.num_rows, "rated_micros": rated_micros,
                         "usage_line_micros": usage_micros, "money_balanced": rated_micros == usage_micros,
                         "accounts": len(accounts)}
    overwrite = {"charges": In("billing_cycle", cycles), "invoices": In("billing_cycle", cycles)}
    return totals, overwrite
