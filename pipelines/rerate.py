"""The re-rate job: re-rate one billing cycle from scratch, compare, commit it as a new snapshot.

    decode -> validate -> deduplicate -> rate (per account)        the batch job's core (RateUsage)
        -> keep the cycle's events -> bill and write them like a batch output (as if the cycle were open)
    then, Beam-free (rating.rerate), against the cycle as the store holds it:
        record-by-record diff -> adjustments (closed cycles) -> invoices -> one commit

``RerateCycle`` is the composite transform; ``run_rerate`` runs it against the store
(``pipelines.staged_run``, as the batch job does), compares and commits (or, with ``what_if_dir``,
only reports). The commit overwrites the cycle in each table in one snapshot per table; the cycle as
it was stays readable by time travel (``--as-of``). Rules: docs/rerating.md.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import apache_beam as beam
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import And, EqualTo, In, NotEqualTo

from cdr_schemas import charge_line_schema, invoice_summary_schema, rated_event_schema, rejected_schema
from pipelines.bill import CHARGES, INVOICES, BillAccounts
from pipelines.coders import KeyedBatch
from pipelines.decode import COUNTS
from pipelines.inputs import match_inputs, normal_path, shown_reference
from pipelines.options import RunConfig, auto_shards
from pipelines.outputs import REJECTED_STATISTICS_COLUMNS, OutputDirs, WriteOutputs, write_by_cycle
from pipelines.prior import rejects_in_cycle
from pipelines.rate import RATED
from pipelines.rate_usage import RateUsage
from pipelines.tagged import Tagged
from pipelines.staged_run import StagedRun, effective_closed_through, local_path, staged_run
from rating.billing import finish_lines, summarise_invoices
from rating.cycles import cycle_bounds_of, in_cycle_scope, month_index, month_label
from rating.engine import RatingEngine, reference_fingerprint
from rating.rerate import (RATED_COLUMNS, RecordDiff, adjustment_lines, compare_records, impact_summary,
                           same_lines)
from sinks.files import write_json, write_parquet
from sinks.iceberg import IcebergStore
from sinks.iceberg import catalog as cat
from sinks.object_storage import ObjectStorage

_KEPT = "kept"
_SCOPE = "_scope"   # scratch only: keys of this run's rated events of other cycles
AUDIT = "audit"     # OUT/audit/RUN_ID/: each committed re-rate's record diff and adjustment records


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerateConfig(RunConfig):
    """What to re-rate: ``cycle`` (YYYY-MM) from the files of ``input_glob`` with ``reference_dir``
    against the output store ``output_dir``; ``what_if_dir``: rate with this candidate reference
    data instead and only report (the store is not written). The job flags (``shards``,
    ``batch_size``, ``closed_through``, ``shuffle``) are the batch job's, checked by ``RunConfig``."""
    cycle: str
    what_if_dir: str | None = None
    report_path: str | None = None
    top_records: int = 20

    def __post_init__(self):
        month_index(self.cycle)
        super().__post_init__()
        if self.top_records < 0:
            raise ValueError(f"--top must be >= 0, got {self.top_records}")

    @property
    def rating_reference(self) -> str:
        """The reference data records are rated with: the candidate in what-if mode."""
        return self.what_if_dir or self.reference_dir


class _KeepCycle(beam.DoFn):
    """(shard, rated batch) -> the events of ``cycle``; keys of the others go to ``shared/_scope`` (the run's shared scratch folder)."""

    def __init__(self, cycle: str, shared: str, storage: ObjectStorage):
        self._cycle = cycle
        self._shared = shared
        self._storage = storage

    def setup(self):
        self._storage.activate()

    def process(self, element):
        shard, batch = element
        inside = pc.equal(batch.column("service_cycle"), self._cycle)
        outside = batch.filter(pc.invert(inside)).select(["source", "record_id", "service_cycle"])
        if outside.num_rows:
            write_parquet(cat.join(self._shared, _SCOPE, f"part-{shard:05d}-{uuid.uuid4().hex[:8]}.parquet"), outside)
            per_cycle = pa.table(outside).group_by("service_cycle").aggregate([("record_id", "count")])
            yield COUNTS, {"out_of_scope": {"rated": {
                c: n for c, n in zip(per_cycle.column("service_cycle").to_pylist(),
                                     per_cycle.column("record_id_count").to_pylist())}}}
        kept = batch.filter(inside)
        if kept.num_rows:
            yield _KEPT, (shard, kept)


class RerateCycle(beam.PTransform):
    """Paths -> control totals of the run, writing the re-rated cycle into ``dirs``.

    Every record of the inputs is decoded, validated, deduplicated and rated by the batch job's
    core (``RateUsage``: all events of an account together, in event-time order). Events of
    ``config.cycle`` are billed and written like a batch output (rated events, charges and
    invoices as if the cycle were open, every reject of the run, duplicates, control totals); the
    keys of events of other cycles go to ``shared/_scope`` and their counts to the totals
    (``out_of_scope``).
    """

    def __init__(self, config: RerateConfig, dirs: OutputDirs, scratch: str, shared: str):
        super().__init__()
        self._config = config
        self._dirs = dirs
        self._scratch = str(scratch)
        self._shared = shared

    def expand(self, paths):
        c = self._config
        shuffle_dir = c.shuffle_dir(self._scratch)
        storage = self._dirs.storage
        usage = paths | "RateUsage" >> RateUsage(reference_dir=c.rating_reference, shards=c.shards,
                                                 batch_size=c.batch_size, shuffle_dir=shuffle_dir, storage=storage)
        kept = usage[RATED] | "KeepCycle" >> Tagged(beam.ParDo(_KeepCycle(c.cycle, self._shared, storage)),
                                                    {_KEPT: KeyedBatch, COUNTS: dict})
        bills = kept[_KEPT] | "Bill" >> BillAccounts(c.rating_reference, c.shards, None, shuffle_dir, storage)
        counts = (usage[COUNTS], kept[COUNTS]) | "AllCounts" >> beam.Flatten()
        return {**usage, RATED: kept[_KEPT], COUNTS: counts, CHARGES: bills[CHARGES], INVOICES: bills[INVOICES]} \
            | "Write" >> WriteOutputs(self._dirs, c.shards)


def check_inputs_cover(store: IcebergStore, cycle: str, paths: list[str]) -> None:
    """ValueError when the cycle's rated events or rejects in the store came from files the re-rate
    is not given.

    A re-rate compares record by record: a record it cannot see would look like one that left the
    cycle, and would be credited.
    """
    given = {normal_path(p) for p in paths}
    used: set[str] = set()
    for table, where in (("rated", EqualTo("service_cycle", cycle)), ("rejected", rejects_in_cycle(cycle))):
        used.update(pc.unique(store.read(table, row_filter=where, selected_fields=["input_file"])
                              .column("input_file")).to_pylist())
    missing = sorted(f for f in used if f is not None and normal_path(f) not in given)
    if missing:
        raise ValueError(f"the store's {cycle} holds records of {len(missing)} file(s) that --input does not match, "
                         f"e.g. {missing[:3]}; pass every input file of the cycle (records the re-rate cannot see "
                         f"would be credited)")


def _check_nothing_lost(diff: RecordDiff, cycle: str) -> None:
    """ValueError when records rated in the cycle before are nowhere in this run (not rated, not
    rejected, not in another cycle): committing would credit them. ``check_inputs_cover`` catches
    the usual cause (a missing file) before the pipeline; this catches any other."""
    lost = diff.changes.filter((pl.col("status") == "LEFT_CYCLE") & (pl.col("previous") == "RATED")
                               & pl.col("other_cycle").is_null())
    if lost.height:
        sample = lost.select(["source", "record_id"]).head(3).rows()
        raise ValueError(f"{lost.height} record(s) rated in {cycle} before are in none of the inputs, e.g. {sample}; "
                         "nothing was committed: pass every input file the cycle was rated from")


def _frame(files: list[str], columns: list[str]) -> pl.LazyFrame:
    """``columns`` of Parquet files (local paths or URIs) as one frame."""
    schemas = {**{f.name: f for f in rejected_schema()}, **{f.name: f for f in rated_event_schema()}}
    schema = pa.schema([schemas[c] for c in columns])
    tables = [pq.read_table(f, columns=columns).cast(schema) for f in files]
    return pl.from_arrow(pa.concat_tables(tables) if tables else schema.empty_table()).lazy()


def _rejects_now(files: list[str], cycle: str) -> pl.LazyFrame:
    table = pa.concat_tables([pq.read_table(f) for f in files]).cast(rejected_schema()) if files \
        else rejected_schema().empty_table()
    table = table.append_column("in_scope", in_cycle_scope(table.column("start_time"), cycle))
    return pl.from_arrow(table).lazy()


def _compare(config: RerateConfig, run: StagedRun) -> RecordDiff:
    store, cycle = run.store, config.cycle
    previous = store.read("rated", row_filter=EqualTo("service_cycle", cycle), selected_fields=RATED_COLUMNS)
    return compare_records(
        pl.from_arrow(previous).lazy(),
        pl.from_arrow(store.read("rejected", row_filter=rejects_in_cycle(cycle))).lazy(),
        _frame(run.dirs.files("rated"), RATED_COLUMNS),
        _rejects_now(run.dirs.files("rejected"), cycle),
        prior_rejects=pl.from_arrow(store.read("rejected", selected_fields=["source", "record_id", "reason"])).lazy(),
        other_rated=pl.from_arrow(store.read("rated", row_filter=NotEqualTo("service_cycle", cycle),
                                             selected_fields=["source", "record_id", "service_cycle"])).lazy(),
        out_of_scope=_frame(cat.list_files(cat.join(run.shared, _SCOPE)),
                            ["source", "record_id", "service_cycle"]),
    )


def _control_totals(config, run: dict, diff: RecordDiff, *, closed: bool, adjustments=None) -> dict:
    """The re-rate's control totals: records in = in the cycle + other cycles + duplicates, and money."""
    in_cycle_rejects = dict(sorted(diff.rejected.group_by("reason").len().iter_rows())) if diff.rejected.height else {}
    in_cycle_rejected = sum(in_cycle_rejects.values())
    out_of_scope_rated = dict(sorted(run.get("out_of_scope", {}).get("rated", {}).items()))
    rejected_all = run["rejected_total"]
    records_balanced = run["records_in"] == (run["rated"] + sum(out_of_scope_rated.values()) + rejected_all
                                             + run["duplicates"])
    cycle_money = run["cycles"].get(config.cycle, {"rated_micros": 0, "usage_line_micros": 0, "money_balanced": True})
    rated_micros = sum(diff.rerated_micros.values())
    money_balanced = bool(cycle_money["money_balanced"]) and cycle_money["rated_micros"] == rated_micros
    totals = {
        "cycle": config.cycle, "closed": closed,
        "records_in": run["records_in"], "duplicates": run["duplicates"],
        "in_cycle": {"rated": run["rated"], "rejected": in_cycle_rejects, "rejected_total": in_cycle_rejected,
                     "unkeyed_rejects": diff.unkeyed_rejects},
        "out_of_scope": {"rated": out_of_scope_rated, "rejected": rejected_all - in_cycle_rejected},
        "records_balanced": records_balanced,
        "records": dict(diff.counts), "recycled": dict(diff.recycled),
        "money": {c: {"previous_micros": diff.previous_micros.get(c, 0),
                      "rerated_micros": diff.rerated_micros.get(c, 0), "delta_micros": d}
                  for c, d in diff.delta_micros.items()},
        "cycle_money": cycle_money,
        "skipped_inputs": run["skipped_inputs"],
    }
    if adjustments is not None:
        lines = pl.from_arrow(adjustments.lines)
        by_currency = {}
        adjustment = pl.col("line_type") == "ADJUSTMENT"
        for row in lines.group_by("currency").agg(
                pl.col("amount_micros").filter(adjustment).sum(), pl.col("amount_minor").filter(adjustment).sum(),
                pl.col("tax_minor").filter(adjustment).sum(), pl.len().alias("lines")).sort("currency").iter_rows(
                named=True):
            by_currency[row["currency"]] = {k: int(v) for k, v in row.items() if k != "currency"}
        totals["adjustments"] = {"lines": adjustments.lines.num_rows, "by_currency": by_currency,
                                 "records": adjustments.records.height, "balanced": adjustments.balanced}
        money_balanced = money_balanced and adjustments.balanced
    totals["money_balanced"] = money_balanced
    totals["balanced"] = records_balanced and money_balanced
    return totals


def _read(files: list[str], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([pq.read_table(f).cast(schema) for f in files]) if files else schema.empty_table()


def _version_files(config, run: StagedRun, diff: RecordDiff, *, closed: bool, billing_cycle: str, number: int,
                   engine: RatingEngine, digits: dict) -> tuple[dict | None, dict, object]:
    """Turn the pipeline's files into the cycle's new version: (files per table, or None when
    nothing changed; the overwrite filter per table; the adjustments of a closed cycle)."""
    cycle, store = config.cycle, run.store
    rerated_lines = _read(run.dirs.files("charges"), charge_line_schema())
    billed = store.read("charges", row_filter=EqualTo("service_cycle", cycle))
    adjustments = None
    if closed:
        adjustments = adjustment_lines(billed, rerated_lines, diff.changes, cycle=cycle, billing_cycle=billing_cycle,
                                       version=number, digits=digits)
        changed = diff.has_changes or adjustments.lines.num_rows > 0
        version_lines = finish_lines(pl.concat([pl.from_arrow(billed), pl.from_arrow(adjustments.lines)]))
    else:
        changed = diff.has_changes or not same_lines(billed, rerated_lines)
        version_lines = finish_lines(pl.from_arrow(rerated_lines))
    if not changed:
        return None, {}, adjustments

    # The pipeline's rejects (every cycle's), duplicates and invoices are not part of the version;
    # a closed cycle's billed lines stay as they are, its adjustments are added.
    replaced = ("rejected", "duplicates", "invoices") + (("charges",) if closed else ())
    for table in replaced:
        for path in run.dirs.files(table):
            cat.delete_file(path)
    if diff.rejected.height:
        rejects = diff.rejected.sort(["input_file", "input_position"]).to_arrow().cast(rejected_schema())
        write_parquet(run.dirs.path("rejected", 0), rejects, statistics=REJECTED_STATISTICS_COLUMNS)
    if closed:
        write_by_cycle(run.dirs, "charges", 0, adjustments.lines, "billing_cycle")

    # invoices: every invoice this version's lines land on, over all of its lines.
    landing = adjustments.lines if closed else version_lines
    touched = sorted(set(pc.unique(landing.column("billing_cycle")).to_pylist()))
    for billing in touched:
        others = store.read("charges", row_filter=And(EqualTo("billing_cycle", billing),
                                                      NotEqualTo("service_cycle", cycle)))
        mine = version_lines.filter(pc.equal(version_lines.column("billing_cycle"), billing))
        lines = pa.concat_tables([others, mine])
        accounts = sorted(set(lines.column("account_id").to_pylist()))
        summaries = summarise_invoices(lines, cycle_bounds_of(engine.compiled, accounts, billing))
        write_by_cycle(run.dirs, "invoices", 0, summaries.cast(invoice_summary_schema()), "billing_cycle")

    overwrite = {"rated": EqualTo("service_cycle", cycle), "rejected": rejects_in_cycle(cycle)}
    if touched:
        overwrite["invoices"] = In("billing_cycle", touched)
    if not closed:
        overwrite["charges"] = EqualTo("service_cycle", cycle)
    return run.written(), overwrite, adjustments


def _write_audit(store: IcebergStore, run_id: str, diff: RecordDiff, summary: dict, adjustments) -> str:
    """Keep the re-rate's record diff, adjustment records and impact summary in ``OUT/audit/RUN_ID``
    (returned as a local path for a local store, else as a URI)."""
    folder = cat.join(store.uri, AUDIT, run_id)
    write_parquet(cat.join(folder, "changes.parquet"), diff.changes.to_arrow())
    if adjustments is not None:
        write_parquet(cat.join(folder, "adjustment_records.parquet"), adjustments.records.to_arrow())
    write_json(cat.join(folder, "summary.json"), summary)
    return local_path(folder) or folder


def run_rerate(config: RerateConfig, pipeline_args: list[str] | None = None) -> dict:
    """Re-rate ``config.cycle`` and commit it as a new version (or, what-if, only report).

    Returns a dict: ``version`` (the committed run's number in the run log, None when nothing
    changed or what-if), ``run_id``, ``audit`` (the folder of its record diff), ``totals`` (control
    totals), ``summary`` (revenue impact, ``impact_summary``) and ``timings`` (seconds: pipeline,
    compare, publish, total). Bad configuration raises ValueError before the pipeline starts. A run
    that fails leaves the store untouched.
    """
    started = time.monotonic()
    cycle = config.cycle
    storage, pipeline_args = ObjectStorage.for_job(pipeline_args)   # here; on every worker: OutputDirs.storage
    RatingEngine.load(config.reference_dir)  # bad reference data fails before any worker starts
    if config.what_if_dir:
        RatingEngine.load(config.what_if_dir)
    inputs = match_inputs(config.input_glob)
    paths = list(inputs.paths)
    if config.shards is None:
        config = dataclasses.replace(config, shards=auto_shards(paths))
    config = config.with_shuffle_for(pipeline_args)
    what_if = config.what_if_dir is not None
    timings: dict[str, float] = {}
    # Batch runs, re-rates and close-cycle of the store wait for each other (the store's lock); a
    # what-if does not write the store, and takes no lock.
    with staged_run(config.output_dir, config.catalog_uri, f"rerate {cycle}", create=False,
                    write=not what_if, storage=storage) as run:
        store = run.store
        closed_through = effective_closed_through(store, config.closed_through)
        closed = closed_through is not None and month_index(cycle) <= month_index(closed_through)
        billing_cycle = month_label(month_index(closed_through) + 1) if closed else cycle
        previous = store.runs()[-1]
        check_inputs_cover(store, cycle, paths)
        totals_run, timings["pipeline_s"] = run.run_pipeline(RerateCycle(config, run.dirs, str(run.scratch), run.shared),
                                                             "RerateCycle", inputs, pipeline_args)

        t0 = time.monotonic()
        diff = _compare(config, run)
        _check_nothing_lost(diff, cycle)
        summary = impact_summary(diff, top=config.top_records)
        timings["compare_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        result = {"cycle": cycle, "what_if": what_if, "closed": closed, "previous_version": previous.run_number,
                  "version": None, "audit": None, "run_id": run.run_id, "input_files": len(paths),
                  "reference": shown_reference(config.rating_reference)}
        if what_if:
            totals = _control_totals(config, totals_run, diff, closed=closed)
        else:
            engine = RatingEngine.load(config.rating_reference)
            operator = engine.compiled.reference.operator
            digits = {code: c.minor_unit_digits for code, c in operator.currencies.items()}
            number = previous.run_number + 1
            files, overwrite, adjustments = _version_files(config, run, diff, closed=closed,
                                                           billing_cycle=billing_cycle, number=number,
                                                           engine=engine, digits=digits)
            totals = _control_totals(config, totals_run, diff, closed=closed, adjustments=adjustments)
            if files is not None:
                audit = _write_audit(store, run.run_id, diff, summary, adjustments)
                totals.update(version=number, previous_version=previous.run_number,
                              adjustments_billing_cycle=billing_cycle if closed else None, audit=audit,
                              run={"inputs": paths, "reference": result["reference"],
                                   "fingerprint": {"reference": reference_fingerprint(config.rating_reference)},
                                   "closed_through": closed_through, "shards": config.shards})
                committed = run.commit("rerate", files, totals, overwrite=overwrite)
                result.update(version=committed.run.run_number, audit=audit)
        timings["publish_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - started
    result.update(totals=totals, summary=summary, timings=timings, balanced=totals["balanced"], tidied=run.tidied)
    if config.report_path:
        write_json(config.report_path, {k: result[k] for k in ("cycle", "what_if", "closed", "previous_version",
                                                               "version", "reference", "balanced")}
                   | {"summary": summary, "control": totals})
    return result
