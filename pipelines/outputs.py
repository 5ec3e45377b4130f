"""Write a run's outputs where the store's tables keep their data files, and count what was written.

Charge lines and invoice summaries come from the billing step (``pipelines.bill.BillAccounts``);
this module writes and counts them. ``OutputDirs`` says where each output goes (for a run against
the store: each table's data folder, ``pipelines.store_run``), and names every file after the run
so runs never overwrite each other's files:

    rated/service_cycle=YYYY-MM/RUN-part-SSSSS.parquet   one file per account shard and cycle
    charges/billing_cycle=YYYY-MM/RUN-part-SSSSS.parquet  invoice-ready lines of the accounts of a shard
    invoices/billing_cycle=YYYY-MM/RUN-part-SSSSS.parquet one summary row per account and billing cycle
    rejected/RUN-part-SSSSS.parquet                      sorted by (input_file, input_position)
    duplicates/RUN-part-SSSSS.parquet                    sorted by (source, record_id, input_file, input_position)
    control/totals.json                                  control totals (the run's scratch folder)
File contents depend only on shard numbers and data, so reruns and other runners write the same bytes.
"""

from __future__ import annotations

import dataclasses
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
from sinks.iceberg.catalog import join, list_files
from sinks.object_storage import ObjectStorage

OUTPUT_FOLDERS = ("rated", "charges", "invoices", "rejected", "duplicates", "control")


@dataclasses.dataclass(frozen=True)
class OutputDirs:
    """Where each output goes (``OUTPUT_FOLDERS``): a URI per data table (``file://``, ``s3://``,
    ``gs://``: the store's table data folders) and a folder or URI for ``control``; ``prefix`` is
    the run id every file name starts with. ``under(root, prefix)``: every output in a local
    folder of its name under ``root``."""
    folders: dict
    prefix: str
    storage: ObjectStorage = ObjectStorage()   # how the writers reach object storage (on every worker)

    @classmethod
    def under(cls, root: str | Path, prefix: str) -> "OutputDirs":
        root = Path(root).resolve()
        return cls({folder: str(root / folder) if folder == "control" else "file://" + str(root / folder)
                    for folder in OUTPUT_FOLDERS}, prefix)

    def path(self, folder: str, shard: int, partition: str | None = None) -> str:
        """URI of ``shard``'s file in ``folder`` (in its Hive-style ``partition`` folder, e.g. ``service_cycle=2026-01``)."""
        name = f"{self.prefix}-part-{shard:05d}.parquet"
        return join(self.folders[folder], *([partition] if partition else []), name)

    def files(self, folder: str) -> list[str]:
        """URIs of this run's Parquet files in ``folder`` (partition folders included), sorted."""
        return [uri for uri in list_files(self.folders[folder])
                if uri.rsplit("/", 1)[1].startswith(f"{self.prefix}-part-") and uri.endswith(".parquet")]


# Rated events are the biggest output: dictionary-encode only the columns with few distinct values,
# and keep statistics for the columns readers filter on (25% faster writes, same size).
RATED_DICTIONARY_COLUMNS = ["source", "service", "served_msisdn", "account_id", "plan_id", "currency",
                            "service_cycle", "zone", "band", "rate_id", "input_file"]
RATED_STATISTICS_COLUMNS = ["record_id", "start_time", "account_id", "service_cycle"]
# A shard's rated events are sorted by account (and each shard holds a range of account ids,
# rating.partition): row groups of this many rows let one account's reads skip the rest of a file.
RATED_ROW_GROUP_ROWS = 65_536
# A rejected record's start_time may be any 64-bit value (that can be why it was rejected): no
# statistics for it, which readers (pyiceberg among them) would turn into dates out of range.
REJECTED_STATISTICS_COLUMNS = ["reason", "record_id", "source", "input_file", "input_position"]


def write_by_cycle(dirs: OutputDirs, folder: str, shard: int, table: pa.Table, column: str, **options) -> None:
    """One file of ``shard`` per value of ``column`` (a cycle), in that value's partition folder,
    its rows in table order. A table already grouped by ``column`` (rated batches are, by cycle)
    is cut into slices; any other is filtered once per value."""
    runs = pc.run_end_encode(table.column(column).combine_chunks())
    values, ends = runs.values.to_pylist(), runs.run_ends.to_pylist()
    if len(set(values)) == len(values):
        starts = [0, *ends[:-1]]
        parts = sorted((value, table.slice(start, end - start)) for value, start, end in zip(values, starts, ends))
    else:
        parts = [(cycle, table.filter(pc.equal(table.column(column), cycle))) for cycle in sorted(set(values))]
    for cycle, part in parts:
        write_parquet(dirs.path(folder, shard, f"{column}={cycle}"), part, **options)


class _Writer(beam.DoFn):
    """Base of the DoFns that write into ``dirs``: the job's storage settings reach their worker."""

    def __init__(self, dirs: OutputDirs):
        self._dirs = dirs

    def setup(self):
        self._dirs.storage.activate()


class _WriteRated(_Writer):

    def process(self, element):
        shard, batch = element
        table = pa.Table.from_batches([batch])
        write_by_cycle(self._dirs, "rated", shard, table, "service_cycle",
                        dictionary=RATED_DICTIONARY_COLUMNS, statistics=RATED_STATISTICS_COLUMNS,
                        row_group_size=RATED_ROW_GROUP_ROWS)
        yield rated_counters(table)


def rated_counters(table: pa.Table) -> dict:
    """Control counters of rated events: how many, units per service, money, and per service cycle
    its events per service and rated micros. Exact sums (Python ints): an int64 sum could wrap and
    still look balanced."""
    frame = pl.from_arrow(table.select(["service_cycle", "service", "raw_units", "charge_micros"]))
    groups = frame.group_by(["service_cycle", "service"]).agg(
        exact_sum("raw_units"), exact_sum("charge_micros"), pl.len().alias("events"))
    cycles, units = {}, {"VOICE": 0, "SMS": 0, "DATA": 0}
    for row in groups.sort(["service_cycle", "service"]).iter_rows(named=True):
        entry = cycles.setdefault(row["service_cycle"], {"rated_micros": 0, "events": {}})
        entry["rated_micros"] += row["charge_micros"]
        entry["events"][row["service"]] = row["events"]
        units[row["service"]] = units.get(row["service"], 0) + row["raw_units"]   # declared types: their own units
    return {"rated": table.num_rows, "rated_seconds": units["VOICE"], "rated_messages": units["SMS"],
            "rated_bytes": units["DATA"], "charge_micros": sum(e["rated_micros"] for e in cycles.values()),
            "cycles": cycles}


def reason_counts(rejected: pa.Table) -> dict:
    """Rejected rows per reason code."""
    reasons, counts = np.unique(np.asarray(rejected.column("reason").to_pylist(), dtype=object), return_counts=True)
    return {str(r): int(c) for r, c in zip(reasons, counts)}


class _WriteCharges(_Writer):
    """(shard, charge lines) -> a ``charges`` file per billing cycle; per-cycle money, to check against the rated events."""

    def process(self, element):
        shard, lines = element
        write_by_cycle(self._dirs, "charges", shard, lines, "billing_cycle")
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


class _WriteInvoices(_Writer):
    """(shard, invoice summaries) -> an ``invoices`` file per billing cycle; invoice totals per cycle and currency."""

    def process(self, element):
        shard, summary = element
        write_by_cycle(self._dirs, "invoices", shard, summary, "billing_cycle")
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


class _WriteSortedShard(_Writer):
    """Concatenate a shard's batches, sort them, write one part file, count rows (or reasons)."""

    def __init__(self, dirs: OutputDirs, folder: str, sort_keys: list[str], counter: str,
                 statistics: bool | list[str] = True):
        super().__init__(dirs)
        self._statistics = statistics
        self._folder = folder
        self._sort_keys = sort_keys
        self._counter = counter

    def process(self, element):
        shard, batches = element
        table = pa.Table.from_batches(list(batches))
        table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in self._sort_keys]))
        write_parquet(self._dirs.path(self._folder, shard), table, statistics=self._statistics)
        if self._counter == "rejected":
            yield {"rejected": reason_counts(table)}
        else:
            yield {self._counter: table.num_rows}


class _WriteTotals(_Writer):

    def process(self, element: tuple[int, dict]):
        _, totals = element
        write_json(join(self._dirs.folders["control"], "totals.json"), totals)
        yield totals


class WriteOutputs(beam.PTransform):
    """Write rated events, charges, invoices, rejects, duplicates and control totals into ``dirs``.

    Input: a dict of PCollections with keys ``rated`` ((shard, batch)), ``charges`` and ``invoices``
    ((shard, table), from ``BillAccounts``), ``rejected`` (batches), ``duplicates`` ((shard, batch))
    and ``counts`` (counter dicts from decoding). ``shards``: how many reject files.
    """

    def __init__(self, dirs: OutputDirs, shards: int):
        super().__init__()
        self._dirs = dirs
        self._shards = shards

    def expand(self, pcolls):
        rated_counts = pcolls[RATED] | "WriteRated" >> beam.ParDo(_WriteRated(self._dirs))
        charge_counts = pcolls[CHARGES] | "WriteCharges" >> beam.ParDo(_WriteCharges(self._dirs))
        invoice_counts = pcolls[INVOICES] | "WriteInvoices" >> beam.ParDo(_WriteInvoices(self._dirs))
        reject_counts = (
            pcolls[REJECTED]
            | "KeyRejects" >> beam.ParDo(_SplitRejects(self._shards)).with_output_types(KeyedBatch)
            | "GroupRejects" >> beam.GroupByKey()
            | "WriteRejects" >> beam.ParDo(
                _WriteSortedShard(self._dirs, "rejected", ["input_file", "input_position"], "rejected",
                                  REJECTED_STATISTICS_COLUMNS))
        )
        duplicate_counts = (
            pcolls[DUPLICATES]
            | "GroupDuplicates" >> beam.GroupByKey()
            | "WriteDuplicates" >> beam.ParDo(_WriteSortedShard(
                self._dirs, "duplicates", ["source", "record_id", "input_file", "input_position"], "duplicates"))
        )
        return (
            (pcolls[COUNTS], rated_counts, charge_counts, invoice_counts, reject_counts, duplicate_counts)
            | "AllCounts" >> beam.Flatten()
            | "OneKey" >> beam.Map(lambda counters: (0, counters))   # not CombineGlobally's None key: see bill.py
            | "SumCounts" >> beam.CombinePerKey(SumCounters())
            | "WriteTotals" >> beam.ParDo(_WriteTotals(self._dirs))
        )
