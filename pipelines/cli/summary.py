"""Readable summary of a finished batch run, from what it committed to the store."""

from __future__ import annotations

import polars as pl
from pyiceberg.expressions import In

from pipelines.inputs import format_skipped
from pipelines.money_text import total_text


def print_summary(result: dict, output_dir: str, catalog_uri: str | None = None, *, top: int = 5) -> None:
    from sinks.iceberg import IcebergStore

    records = result["records_in"]
    elapsed = result["elapsed_s"]
    shards = f", {result['shards']} shards" if "shards" in result else ""
    print(f"records in      {records:>14,}   ({result['input_files']} files{shards})")
    for line in format_skipped(result["skipped_inputs"]):
        print(line)
    for note in result.get("tidied", []):
        print(f"output store    {note}")
    if result.get("prior_in"):
        print(f"from the store  {result['prior_in']:>14,}   (events of its open cycles, rated again with the new records)")
    print(f"rated           {result['rated']:>14,}")
    print(f"duplicates      {result['duplicates']:>14,}")
    print(f"rejected        {result['rejected_total']:>14,}")
    for reason, count in result["rejected"].items():
        print(f"  {reason:<22}{count:>12,}")
    print(f"balanced        {'yes' if result['balanced'] else 'NO — see the run log (export --table runs)':>14}"
          f"   (records {'yes' if result['records_balanced'] else 'NO'}, money {'yes' if result['money_balanced'] else 'NO'})")
    store = IcebergStore.open(output_dir, catalog_uri, create=False)
    cycles = result["billing_cycles"]
    lines = store.read("charges", as_of=result["run_id"], row_filter=In("billing_cycle", cycles),
                       selected_fields=["line_type", "account_id", "service", "currency", "amount_micros"]) \
        if cycles else None
    charges = (pl.from_arrow(lines).filter(pl.col("line_type") == "USAGE")
               .group_by(["account_id", "service", "currency"]).agg(pl.col("amount_micros").sum())) \
        if lines is not None else pl.DataFrame()
    if charges.height:
        print("revenue by service (before tax):")
        by_service = charges.group_by(["service", "currency"]).agg(pl.col("amount_micros").sum()).sort(
            ["currency", "service"])
        for row in by_service.iter_rows(named=True):
            print(f"  {row['service']:<8}{total_text(row['amount_micros'], row['currency']):>24}")
        print(f"top {top} accounts:")
        by_account = (charges.group_by(["account_id", "currency"]).agg(pl.col("amount_micros").sum())
                      .sort(["amount_micros", "account_id"], descending=[True, False]).head(top))
        for row in by_account.iter_rows(named=True):
            print(f"  {row['account_id']:<14}{total_text(row['amount_micros'], row['currency']):>18}")
    print(f"committed       run {result['run_number']} ({result['run_id']}) of the store {store.uri}: tables "
          f"rated, charges, invoices, rejected, duplicates, runs")
    print(f"elapsed         {elapsed:>12.1f} s   ({records / max(elapsed, 1e-9):,.0f} records/s)")
