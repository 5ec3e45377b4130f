"""One account's invoice for one billing cycle, gathered from a published output store.

Reads only what the invoice needs (layout in docs/outputs.md): the account's summary rows and
charge lines, and the account's rated events of the service cycles its usage lines come from. The
filters are pushed down into the Parquet scans (Polars), and only the ``rated/service_cycle=...``
partitions of those cycles are opened; nothing loads every event of the store.

The store does not hold the currency's minor digits nor the account's timezone: they come from the
reference directory recorded in ``OUT/_SUCCESS``. When it cannot be read, amounts get 2 digits and
dates stay in UTC, and :attr:`InvoiceData.warnings` says so.

Re-rating (docs/rerating.md) publishes newer versions of cycles beside the base output. Everything
shown is read from the current version of each cycle, as ``sinks.store`` resolves it
(``current_versions``, ``current_version``, ``read_current``): a re-rated cycle's charge lines
(adjustments of a closed cycle included, on the invoice they land on), the newest summary of each
invoice, and the re-rated events. The files come from the store; the account filter is applied
here so that it stays pushed down into the scans.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from pathlib import Path

import polars as pl

from rating.billing import LINE_ORDER
from rating.cycles import month_index
from sinks import store
from sinks.files import SUCCESS_MARKER
from sinks.publish import settle

TOP_EVENTS = 10
FALLBACK_MINOR_DIGITS = 2
EVENT_SCHEMA = {"record_id": pl.Utf8, "service": pl.Utf8, "served_msisdn": pl.Utf8, "other_party": pl.Utf8,
                "start_time": pl.Datetime("us", "UTC"), "service_cycle": pl.Utf8, "zone": pl.Utf8, "band": pl.Utf8,
                "raw_units": pl.Int64, "charged_units": pl.Int64, "free_units": pl.Int64, "charge_micros": pl.Int64}
EVENT_COLUMNS = tuple(EVENT_SCHEMA)


@dataclasses.dataclass(frozen=True)
class InvoiceData:
    """Everything an invoice shows. Money stays in int minor units (lines, summary) or micro-units
    (events); ``minor_digits`` says how to write it."""
    account_id: str
    billing_cycle: str
    account_cycles: tuple[str, ...]   # every billing cycle of the account in the store, sorted
    summary: dict                     # the invoices/ row (invoice_summary_v1)
    lines: pl.DataFrame               # the charges/ rows (charge_line_v1), in invoice order
    top_events: pl.DataFrame          # costliest rated events (EVENT_COLUMNS), most expensive first
    minor_digits: int
    timezone: str | None              # the account's IANA timezone; None when the reference is unreadable
    bill_cycle_day: int | None
    operator: str | None
    warnings: tuple[str, ...] = ()


def load_invoice(output_dir: str | Path, account_id: str, cycle: str | None = None, *,
                 top: int = TOP_EVENTS) -> InvoiceData:
    """The invoice of ``account_id`` for billing cycle ``cycle`` (YYYY-MM; default: the account's latest).

    Raises ValueError when the store is not a published output, or the account or cycle has no
    invoice in it (the message lists what exists).
    """
    out = settle(output_dir)  # finishes a publication a crash interrupted: the store is the old or the new one
    manifest = _read_manifest(out)
    summaries = _account_summaries(out, account_id)
    cycles = tuple(summaries["billing_cycle"].to_list())
    if cycle is None:
        cycle = cycles[-1]
    month_index(cycle)
    if cycle not in cycles:
        raise ValueError(f"account {account_id} has no invoice for {cycle} in {out}; its billing cycles: "
                         f"{', '.join(cycles)}")
    summary = summaries.filter(pl.col("billing_cycle") == cycle).row(0, named=True)
    lines = _lines(out, account_id, cycle)
    warnings = list(_check_totals(summary, lines))
    # A run bills each service cycle on one invoice (its own, or the next open one when closed), so
    # the usage lines' service cycles select exactly the events billed here.
    service_cycles = sorted(set(lines.filter(pl.col("line_type") == "USAGE")["service_cycle"].to_list()))
    missing = [c for c in service_cycles if not store.current_version(out, c).rated_files()]
    if missing:
        where = ", ".join(str(store.current_version(out, c).path / "rated" / f"service_cycle={c}") for c in missing)
        warnings.append(f"no rated events for service cycle(s) {', '.join(missing)} ({where}); "
                        f"the costliest events leave them out")
    events = rated_events_query(out, account_id, service_cycles)
    top_events = (events.sort(["charge_micros", "start_time", "record_id"], descending=[True, False, False])
                  .head(top).collect())
    digits, timezone, cycle_day, operator, reference_warnings = _reference_terms(
        manifest.get("reference"), account_id, summary["currency"], out)
    return InvoiceData(account_id=account_id, billing_cycle=cycle, account_cycles=cycles, summary=summary,
                       lines=lines, top_events=top_events, minor_digits=digits, timezone=timezone,
                       bill_cycle_day=cycle_day, operator=operator,
                       warnings=tuple(warnings + reference_warnings))


def rated_events_query(output_dir: str | Path, account_id: str, service_cycles) -> pl.LazyFrame:
    """Lazy scan of the account's rated events in the given service cycles (EVENT_COLUMNS), each read
    from its current version (the base output's ``rated/service_cycle=...`` or a re-rate's).

    Only those partitions are listed; the account filter and the column selection go into the
    Parquet scan, so row groups of other accounts are skipped by their statistics.
    """
    out = Path(output_dir)
    parts = [p for c in sorted(service_cycles) for p in store.current_version(out, c).rated_files()]
    if not parts:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    # service_cycle is a column of the files as well as the partition name: read it from the files
    return (pl.scan_parquet(parts, hive_partitioning=False)
            .filter(pl.col("account_id") == account_id)
            .select(EVENT_COLUMNS))


def _read_manifest(out: Path) -> dict:
    marker = out / SUCCESS_MARKER
    if not marker.is_file():
        raise ValueError(f"{out}: not a published output store (no {SUCCESS_MARKER}); "
                         f"run usage-rating batch --output {out} first")
    try:
        manifest = json.loads(marker.read_text())
    except ValueError:
        raise ValueError(f"{marker}: not JSON; rerun usage-rating batch to publish the store again") from None
    return manifest if isinstance(manifest, dict) else {}


def _account_summaries(out: Path, account_id: str) -> pl.DataFrame:
    """The account's current invoice summaries, one per billing cycle, sorted.

    ``store.current_invoices`` for one account: the base output's summaries, replaced per billing
    cycle by each re-rate's, in publication order (``CURRENT.json``'s history); the account filter
    goes into each scan.
    """
    parts = store.parquet_files(out / "invoices")
    if not parts:
        raise ValueError(f"{out}: the store holds no invoices (invoices/ is empty); rate some usage first")
    layers = [parts] + [files for entry in store.read_current(out)["history"]
                        if (files := store.parquet_files(out / entry["path"] / "invoices"))]
    account = pl.col("account_id") == account_id
    scans = [pl.scan_parquet(files).filter(account).with_columns(pl.lit(layer).alias("_layer"))
             for layer, files in enumerate(layers)]
    summaries = (pl.concat(scans, how="vertical_relaxed").sort(["billing_cycle", "_layer"])
                 .unique("billing_cycle", keep="last", maintain_order=True).drop("_layer").collect())
    if summaries.height == 0:
        invoices = pl.concat([pl.scan_parquet(files).select("account_id") for files in layers])
        known = invoices.select(pl.col("account_id").unique().sort()).collect()["account_id"].to_list()
        raise ValueError(f"account {account_id!r} has no invoice in {out}; {len(known):,} accounts have one, "
                         f"e.g. {', '.join(_nearest(known, account_id))}")
    return summaries


def _nearest(known: list[str], wanted: str, count: int = 4) -> list[str]:
    """Account ids that look like ``wanted``: the same id in another case, then sorted neighbours."""
    same = [k for k in known if k.casefold() == wanted.casefold()]
    at = bisect.bisect_left(known, wanted)
    around = known[max(0, at - count // 2):at + count // 2]
    return list(dict.fromkeys(same + around))[:count]


def _lines(out: Path, account_id: str, cycle: str) -> pl.DataFrame:
    """The invoice's current charge lines: ``store.current_charges(billing_cycle=cycle)`` for one account.

    The base output's lines of service cycles never re-rated, plus each re-rated cycle's lines from its
    current version (for a closed cycle, its ADJUSTMENT and TAX lines on this invoice). The account and
    billing-cycle filters go into each scan.
    """
    parts = store.parquet_files(out / "charges")
    if not parts:
        raise ValueError(f"{out}: charges/ holds no lines although invoices/ has summaries; republish the store")
    versions = store.current_versions(out)
    here = (pl.col("account_id") == account_id) & (pl.col("billing_cycle") == cycle)
    scans = [pl.scan_parquet(parts).filter(here & ~pl.col("service_cycle").is_in(list(versions)))]
    scans += [pl.scan_parquet(files).filter(here & (pl.col("service_cycle") == service_cycle))
              for service_cycle, version in versions.items() if (files := version.charge_files())]
    lines = pl.concat(scans, how="vertical_relaxed").collect()
    order = pl.col("line_type").replace_strict(LINE_ORDER, default=len(LINE_ORDER), return_dtype=pl.Int64)
    return lines.sort([order, "service_cycle", "service", "zone", "band", "item"], nulls_last=False)


def _check_totals(summary: dict, lines: pl.DataFrame) -> list[str]:
    """The invoice shows the summary's totals; say so when the lines do not add up to them."""
    tax = int(lines.filter(pl.col("line_type") == "TAX")["amount_minor"].sum())
    subtotal = int(lines.filter(pl.col("line_type") != "TAX")["amount_minor"].sum())
    if (subtotal, tax) == (summary["subtotal_minor"], summary["tax_minor"]):
        return []
    return [f"the lines add up to subtotal {subtotal} and tax {tax} (minor units) but the invoice summary says "
            f"{summary['subtotal_minor']} and {summary['tax_minor']}; the summary's figures are shown"]


def _reference_terms(reference_dir, account_id: str, currency: str, out: Path):
    """(minor digits, timezone, bill cycle day, operator name, warnings) from the run's reference data."""
    from rating.reference import load_reference

    fallback = f"amounts are shown with {FALLBACK_MINOR_DIGITS} decimals and dates in UTC"
    if not reference_dir:
        return FALLBACK_MINOR_DIGITS, None, None, None, [
            f"{out / SUCCESS_MARKER} names no reference directory; {fallback}"]
    try:
        reference = load_reference(reference_dir)
    except ValueError as error:
        first = str(error).splitlines()[0]
        return FALLBACK_MINOR_DIGITS, None, None, None, [
            f"reference data {reference_dir} of this run cannot be read ({first}); {fallback}"]
    warnings = []
    declared = reference.operator.currencies.get(currency)
    digits = declared.minor_unit_digits if declared is not None else FALLBACK_MINOR_DIGITS
    if declared is None:
        warnings.append(f"currency {currency} is not in {reference_dir}/operator.yaml; "
                        f"amounts are shown with {FALLBACK_MINOR_DIGITS} decimals")
    account = reference.accounts.get(account_id)
    if account is None:
        warnings.append(f"account {account_id} is not in {reference_dir}/accounts.csv; dates are shown in UTC")
        return digits, None, None, reference.operator.name, warnings
    return digits, account.timezone, account.bill_cycle_day, reference.operator.name, warnings
