"""Write a run's outputs into its staging directory, and count what was written.

Charge lines and invoice summaries come from the billing step (``pipelines.bill.BillAccounts``);
this module writes and counts them.

Layout (see docs/outputs.md):
    rated/service_cycle=YYYY-MM/part-SSSSS.parquet   one file per account shard and cycle
    charges/part-SSSSS.parquet                       invoice-ready lines of the accounts of a shard
    invoices/part-SSSSS.parquet                      one summary row per account and billing cycle
    rejected/part-SSSSS.parquet                      sorted by (input_file, input_position)
    duplicates/part-SSSSS.parquet                    sorted by (source, record_id, input_file, input_position)
    control/totals.json                              control totals
File names depend only on shard numbers and data, so reruns and other runners write the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.bill import CHARGES, INVOICES
from pipelines.coders import KeyedBatch
from pipelines.counters import SumCounters
from pipelines.decode import COUNTS, REJECTED
from pipelines.dedup import DUPLICATES
from pipelines.rate import RATED
from rating.money import exact_sum
from rating.partition import split_by_input_file
from sinks.files import write_json, write_parquet

OUTPUT_FOLDERS = ("rated", "charges", "invoices", "rejected", "duplicates", "control")


# Rated events are the biggest output: dictionary-encode only the columns with few distinct values,
# and keep statistics for the columns readers filter on (25% faster writes, same size).
RATED_DICTIONARY_COLUMNS = ["source", "service", "served_msisdn", "account_id", "plan_id", "currency",
                            "service_cycle", "zone", "band", "rate_id", "input_file"]
RATED_STATISTICS_COLUMNS = ["record_id", "start_time", "account_id", "service_cycle"]


def _part(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


class _WriteRated(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, element):
        shard, batch = element
        table = pa.Table.from_batches([batch])
        for cycle in sorted(pc.unique(table.column("service_cycle")).to_pylist()):
            part = table.filter(pc.equal(table.column("service_cycle"), cycle))
            write_parquet(Path(self._staging, "rated", f"service_cycle={cycle}", _part(shard)), part,
                          dictionary=RATED_DICTIONARY_COLUMNS, statistics=RATED_STATISTICS_COLUMNS)
        # Exact sums (Python ints): an int64 sum could wrap and still look balanced.
        frame = pl.from_arrow(table.select(["service_cycle", "service", "raw_units", "charge_micros"]))
        groups = frame.group_by(["service_cycle", "service"]).agg(
            exact_sum("raw_units"), exact_sum("charge_micros"), pl.len().alias("events"))
        cycles, units = {}, {"VOICE": 0, "SMS": 0, "DATA": 0}
        for row in groups.sort(["service_cycle", "service"]).iter_rows(named=True):
            entry = cycles.setdefault(row["service_cycle"], {"rated_micros": 0, "events": {}})
            entry["rated_micros"] += row["charge_micros"]
            entry["events"][row["service"]] = row["events"]
            units[row["service"]] += row["raw_units"]
        yield {"rated": table.num_rows, "rated_seconds": units["VOICE"], "rated_messages": units["SMS"],
               "rated_bytes": units["DATA"], "charge_micros": sum(e["rated_micros"] for e in cycles.values()),
               "cycles": cycles}


class _WriteCharges(beam.DoFn):
    """(shard, charge lines) -> ``charges/part-SSSSS.parquet``; per-cycle money, to check against the rated events."""

    def __init__(self, staging: str):
        self._staging = staging

    def process(self, element):
        shard, lines = element
        write_parquet(Path(self._staging, "charges", _part(shard)), lines)
        cycles: dict = {}
        frame = pl.from_arrow(lines.select(["service_cycle", "billing_cycle", "line_type", "amount_micros",
                                            "amount_minor", "rounding_micros", "currency"]))
        usage = frame.filter(pl.col("line_type") == "USAGE").group_by("service_cycle").agg(exact_sum("amount_micros"))
        for cycle, micros in usage.iter_rows():
            cycles.setdefault(cycle, {})["usage_line_micros"] = micros
        billed = frame.group_by(["billing_cycle", "currency"]).agg(exact_sum("amount_minor"),
                                                                    exact_sum("rounding_micros"))
        for cycle, currency, minor, rounding in billed.sort(["billing_cycle", "currency"]).iter_rows():
            entry = cycles.setdefault(cycle, {})
            entry.setdefault("invoice_lines_minor", {})[currency] = minor
            entry["rounding_micros"] = entry.get("rounding_micros", 0) + rounding
        yield {"cycles": cycles}


class _WriteInvoices(beam.DoFn):
    """(shard, invoice summaries) -> ``invoices/part-SSSSS.parquet``; invoice totals per cycle and currency."""

    def __init__(self, staging: str):
        self._staging = staging

    def process(self, element):
        shard, summary = element
        write_parquet(Path(self._staging, "invoices", _part(shard)), summary)
        cycles: dict = {}
        totals = pl.from_arrow(summary.select(["billing_cycle", "currency", "total_minor"])) \
            .group_by(["billing_cycle", "currency"]).agg(exact_sum("total_minor"))
        for cycle, currency, minor in totals.iter_rows():
            cycles.setdefault(cycle, {}).setdefault("invoice_totals_minor", {})[currency] = minor
        yield {"cycles": cycles}


class _SplitRejects(beam.DoFn):
    def __init__(self, shards: int):
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        yield from split_by_input_file(batch, self._shards)


class _WriteSortedShard(beam.DoFn):
    """Concatenate a shard's batches, sort them, write one part file, count rows (or reasons)."""

    def __init__(self, staging: str, folder: str, sort_keys: list[str], counter: str):
        self._staging = staging
        self._folder = folder
        self._sort_keys = sort_keys
        self._counter = counter

    def process(self, element):
        shard, batches = element
        table = pa.Table.from_batches(list(batches))
        table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in self._sort_keys]))
        write_parquet(Path(self._staging, self._folder, _part(shard)), table)
        if self._counter == "rejected":
            reasons, counts = np.unique(np.asarray(table.column("reason").to_pylist(), dtype=object),
                                        return_counts=True)
            yield {"rejected": {str(r): int(c) for r, c in zip(reasons, counts)}}
        else:
            yield {self._counter: table.num_rows}


class _WriteTotals(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, totals: dict):
        write_json(Path(self._staging, "control", "totals.json"), totals)
        yield totals


class WriteOutputs(beam.PTransform):
    """Write rated events, charges, invoices, rejects, duplicates and control totals into ``staging``.

    Input: a dict of PCollections with keys ``rated`` ((shard, batch)), ``charges`` and ``invoices``
    ((shard, table), from ``BillAccounts``), ``rejected`` (batches), ``duplicates`` ((shard, batch))
    and ``counts`` (counter dicts from decoding). ``shards``: how many reject files.
    """

    def __init__(self, staging: str, shards: int):
        super().__init__()
        self._staging = str(staging)
        self._shards = shards

    def expand(self, pcolls):
        rated_counts = pcolls[RATED] | "WriteRated" >> beam.ParDo(_WriteRated(self._staging))
        charge_counts = pcolls[CHARGES] | "WriteCharges" >> beam.ParDo(_WriteCharges(self._staging))
        invoice_counts = pcolls[INVOICES] | "WriteInvoices" >> beam.ParDo(_WriteInvoices(self._staging))
        reject_counts = (
            pcolls[REJECTED]
            | "KeyRejects" >> beam.ParDo(_SplitRejects(self._shards)).with_output_types(KeyedBatch)
            | "GroupRejects" >> beam.GroupByKey()
            | "WriteRejects" >> beam.ParDo(
                _WriteSortedShard(self._staging, "rejected", ["input_file", "input_position"], "rejected"))
        )
        duplicate_counts = (
            pcolls[DUPLICATES]
            | "GroupDuplicates" >> beam.GroupByKey()
            | "WriteDuplicates" >> beam.ParDo(_WriteSortedShard(
                self._staging, "duplicates", ["source", "record_id", "input_file", "input_position"], "duplicates"))
        )
        return (
            (pcolls[COUNTS], rated_counts, charge_counts, invoice_counts, reject_counts, duplicate_counts)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounters())
            | "WriteTotals" >> beam.ParDo(_WriteTotals(self._staging))
        )
