"""Write a run's outputs into its staging directory, and count what was written.

Layout (see docs/outputs.md):
    rated/service_cycle=YYYY-MM/part-SSSSS.parquet   one file per account shard and cycle
    charges/charges.parquet                          invoice-ready lines, sorted
    rejected/part-SSSSS.parquet                      sorted by (input_file, input_position)
    duplicates/part-SSSSS.parquet                    sorted by (source, record_id, input_file, input_position)
    control/totals.json                              control totals
File names depend only on shard numbers and data, so reruns and other runners write the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.coders import KeyedBatch
from pipelines.counters import SumCounters
from rating.charges import usage_lines
from rating.partition import hash_columns, shard_of_hash, split_by_shard
from rating.reference import load_reference
from sinks.files import write_json, write_parquet

OUTPUT_FOLDERS = ("rated", "charges", "rejected", "duplicates", "control")


def _part(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


class _WriteRated(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, element):
        shard, batch = element
        table = pa.Table.from_batches([batch])
        for cycle in sorted(set(table.column("service_cycle").to_pylist())):
            part = table.filter(pc.equal(table.column("service_cycle"), cycle))
            write_parquet(Path(self._staging, "rated", f"service_cycle={cycle}", _part(shard)), part)
        service = table.column("service")
        raw = table.column("raw_units")

        def units(name):
            return int(pc.sum(raw.filter(pc.equal(service, name))).as_py() or 0)

        yield {"rated": table.num_rows, "rated_seconds": units("VOICE"), "rated_messages": units("SMS"),
               "rated_bytes": units("DATA"), "charge_micros": int(pc.sum(table.column("charge_micros")).as_py() or 0)}


class _ChargeLines(beam.DoFn):
    def __init__(self, reference_dir: str):
        self._reference_dir = reference_dir

    def setup(self):
        operator = load_reference(self._reference_dir).operator
        self._minor_digits = {c.code: c.minor_unit_digits for c in operator.currencies.values()}
        self._rounding = operator.invoice_rounding

    def process(self, element):
        _, batch = element
        yield usage_lines(batch, self._minor_digits, self._rounding)


class _WriteCharges(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, tables):
        from cdr_schemas import charge_line_schema
        table = pa.concat_tables(tables) if tables else charge_line_schema().empty_table()
        keys = ["account_id", "billing_cycle", "line_type", "service", "zone", "band"]
        table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))
        write_parquet(Path(self._staging, "charges", "charges.parquet"), table)
        yield {}


class _SplitRejects(beam.DoFn):
    def __init__(self, shards: int):
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        shards = shard_of_hash(hash_columns(batch, ["input_file"]), self._shards)
        yield from split_by_shard(batch, shards, self._shards)


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
    """Write rated events, charges, rejects, duplicates and control totals into ``staging``.

    Input: a dict of PCollections with keys ``rated`` ((shard, batch)), ``rejected`` (batches),
    ``duplicates`` ((shard, batch)) and ``counts`` (counter dicts from decoding).
    """

    def __init__(self, staging: str, reference_dir: str, shards: int):
        super().__init__()
        self._staging = str(staging)
        self._reference_dir = reference_dir
        self._shards = shards

    def expand(self, pcolls):
        rated_counts = pcolls["rated"] | "WriteRated" >> beam.ParDo(_WriteRated(self._staging))
        charge_counts = (
            pcolls["rated"]
            | "ChargeLines" >> beam.ParDo(_ChargeLines(self._reference_dir))
            | "CollectCharges" >> beam.combiners.ToList()
            | "WriteCharges" >> beam.ParDo(_WriteCharges(self._staging))
        )
        reject_counts = (
            pcolls["rejected"]
            | "KeyRejects" >> beam.ParDo(_SplitRejects(self._shards)).with_output_types(KeyedBatch)
            | "GroupRejects" >> beam.GroupByKey()
            | "WriteRejects" >> beam.ParDo(
                _WriteSortedShard(self._staging, "rejected", ["input_file", "input_position"], "rejected"))
        )
        duplicate_counts = (
            pcolls["duplicates"]
            | "GroupDuplicates" >> beam.GroupByKey()
            | "WriteDuplicates" >> beam.ParDo(_WriteSortedShard(
                self._staging, "duplicates", ["source", "record_id", "input_file", "input_position"], "duplicates"))
        )
        return (
            (pcolls["counts"], rated_counts, charge_counts, reject_counts, duplicate_counts)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounters())
            | "WriteTotals" >> beam.ParDo(_WriteTotals(self._staging))
        )
