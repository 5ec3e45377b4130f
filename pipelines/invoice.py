"""One account's invoice for one billing cycle, read from the output store (Iceberg tables).

Reads only what the invoice needs (tables in docs/outputs.md): the account's summary rows and charge
lines, and the account's rated events of the service cycles its usage lines come from. Every read
is a scan of the snapshot the store's run log names (the latest run, or ``as_of``) with the account
and cycle filters pushed down: the cycle filters prune to partitions, the account filter skips files
and row groups by their statistics; nothing loads every event of the store.

The store does not hold the currency's minor digits nor the account's timezone: they come from the
reference directory the run log records for the last rating run. When it cannot be read, amounts
get 2 digits and dates stay in UTC, and :attr:`InvoiceData.warnings` says so. A re-rated cycle is
shown as its re-rate committed it (adjustments of a closed cycle on the invoice they land on).
"""

from __future__ import annotations

import bisect
import dataclasses
from pathlib import Path

import polars as pl
from pyiceberg.expressions import And, EqualTo, In

from rating.billing import LINE_ORDER
from rating.cycles import month_index
from sinks.iceberg import IcebergStore

TOP_EVENTS = 10
FALLBACK_MINOR_DIGITS = 2
EVENT_SCHEMA = {"record_id": pl.Utf8, "service": pl.Utf8, "served_msisdn": pl.Utf8, "other_party": pl.Utf8,
                "start_time": pl.Datetime("us", "UTC"), "service_cycle": pl.Utf8, "zone": pl.Utf8, "band": pl.Utf8,
                "raw_units": pl.Int64, "charged_units": pl.Int64, "free_units": pl.Int64, "charge_micros": pl.Int64,
                "subscriber": pl.Utf8, "subscriber_kind": pl.Utf8}
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


def load_invoice(output_dir: str | Path, account_id: str, cycle: str | None = None, *, as_of: str | None = None,
                 catalog_uri: str | None = None, top: int = TOP_EVENTS) -> InvoiceData:
    """The invoice of ``account_id`` for billing cycle ``cycle`` (YYYY-MM; default: the account's latest),
    as the store stood after its latest run or the run ``as_of`` names (a run id or an ISO timestamp).

    Raises ValueError when there is no store at ``output_dir``, or the account or cycle has no
    invoice in it (the message lists what exists).
    """
    store = IcebergStore.open(str(output_dir), catalog_uri, create=False)
    run = store.run_as_of(as_of)
    summaries = _account_summaries(store, run.run_id, account_id)
    cycles = tuple(summaries["billing_cycle"].to_list())
    if cycle is None:
        cycle = cycles[-1]
    month_index(cycle)
    if cycle not in cycles:
        raise ValueError(f"account {account_id} has no invoice for {cycle} in {output_dir}; its billing cycles: "
                         f"{', '.join(cycles)}")
    summary = summaries.filter(pl.col("billing_cycle") == cycle).row(0, named=True)
    lines = _lines(store, run.run_id, account_id, cycle)
    warnings = list(_check_totals(summary, lines))
    # A run bills each service cycle on one invoice (its own, or the next open one when closed), so
    # the usage lines' service cycles select exactly the events billed here.
    service_cycles = sorted(set(lines.filter(pl.col("line_type") == "USAGE")["service_cycle"].to_list()))
    missing = sorted(set(service_cycles) - store.partition_values("rated", as_of=run.run_id))
    if missing:
        warnings.append(f"no rated events for service cycle(s) {', '.join(missing)} in the rated table; "
                        f"the costliest events leave them out")
    events = rated_events_query(store, account_id, service_cycles, as_of=run.run_id)
    top_events = (events.sort(["charge_micros", "start_time", "record_id"], descending=[True, False, False])
                  .head(top).collect())
    digits, timezone, cycle_day, operator, reference_warnings = _reference_terms(
        _reference_of(store, run.run_number), account_id, summary["currency"], output_dir)
    return InvoiceData(account_id=account_id, billing_cycle=cycle, account_cycles=cycles, summary=summary,
                       lines=lines, top_events=top_events, minor_digits=digits, timezone=timezone,
                       bill_cycle_day=cycle_day, operator=operator,
                       warnings=tuple(warnings + reference_warnings))


def rated_events_query(store: IcebergStore, account_id: str, service_cycles, *,
                       as_of: str | None = None) -> pl.LazyFrame:
    """The account's rated events in the given service cycles (EVENT_COLUMNS), as of the latest run
    or ``as_of``. The cycle filter prunes the scan to those partitions and the account filter skips
    files by their statistics (pyiceberg); the rows are filtered exactly."""
    if not service_cycles:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    where = And(EqualTo("account_id", account_id), In("service_cycle", sorted(service_cycles)))
    return pl.from_arrow(store.read("rated", as_of=as_of, row_filter=where, selected_fields=EVENT_COLUMNS)).lazy()


def _reference_of(store: IcebergStore, run_number: int) -> str | None:
    """The reference directory of the last rating run at or before ``run_number``, as its run-log row records it."""
    for run in reversed(store.runs()):
        reference = run.control_totals.get("run", {}).get("reference")
        if run.run_number <= run_number and reference:
            return reference
    return None


def _account_summaries(store: IcebergStore, as_of: str, account_id: str) -> pl.DataFrame:
    """The account's invoice summaries, one per billing cycle, sorted (the account filter in the scan)."""
    summaries = pl.from_arrow(store.read("invoices", as_of=as_of, row_filter=EqualTo("account_id", account_id)))
    if summaries.height == 0:
        known = pl.from_arrow(store.read("invoices", as_of=as_of, selected_fields=["account_id"]))
        if known.height == 0:
            raise ValueError(f"{store.output}: the store holds no invoices; rate some usage first")
        accounts = known["account_id"].unique().sort().to_list()
        raise ValueError(f"account {account_id!r} has no invoice in {store.output}; {len(accounts):,} accounts have "
                         f"one, e.g. {', '.join(_nearest(accounts, account_id))}")
    return summaries.sort("billing_cycle")


def _nearest(known: list[str], wanted: str, count: int = 4) -> list[str]:
    """Account ids that look like ``wanted``: the same id in another case, then sorted neighbours."""
    same = [k for k in known if k.casefold() == wanted.casefold()]
    at = bisect.bisect_left(known, wanted)
    around = known[max(0, at - count // 2):at + count // 2]
    return list(dict.fromkeys(same + around))[:count]


def _lines(store: IcebergStore, as_of: str, account_id: str, cycle: str) -> pl.DataFrame:
    """The invoice's charge lines (adjustments of re-rated closed cycles included), in invoice order."""
    where = And(EqualTo("account_id", account_id), EqualTo("billing_cycle", cycle))
    lines = pl.from_arrow(store.read("charges", as_of=as_of, row_filter=where))
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


def _reference_terms(reference_dir, account_id: str, currency: str, out):
    """(minor digits, timezone, bill cycle day, operator name, warnings) from the run's reference data:
    its operator.yaml and the account's row of accounts.csv only (the whole reference of a big
    operator takes seconds to load; an invoice needs these)."""
    from rating.reference.loader import load_account_terms

    fallback = f"amounts are shown with {FALLBACK_MINOR_DIGITS} decimals and dates in UTC"
    if not reference_dir:
        return FALLBACK_MINOR_DIGITS, None, None, None, [
            f"the run log of {out} names no reference directory; {fallback}"]
    try:
        operator, account = load_account_terms(reference_dir, account_id)
    except ValueError as error:
        first = str(error).splitlines()[0]
        return FALLBACK_MINOR_DIGITS, None, None, None, [
            f"reference data {reference_dir} of this run cannot be read ({first}); {fallback}"]
    warnings = []
    declared = operator.currencies.get(currency)
    digits = declared.minor_unit_digits if declared is not None else FALLBACK_MINOR_DIGITS
    if declared is None:
        warnings.append(f"currency {currency} is not in {reference_dir}/operator.yaml; "
                        f"amounts are shown with {FALLBACK_MINOR_DIGITS} decimals")
    if account is None:
        warnings.append(f"account {account_id} is not in {reference_dir}/accounts.csv; dates are shown in UTC")
        return digits, None, None, operator.name, warnings
    return digits, account.timezone, account.bill_cycle_day, operator.name, warnings
