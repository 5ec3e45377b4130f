"""The re-rate job: re-rate one billing cycle from scratch, compare, publish a new version of it.

    decode -> validate -> deduplicate -> rate (per account)        the batch job's core (RateUsage)
        -> keep the cycle's events -> bill and write them like a batch output (as if the cycle were open)
    then, Beam-free (rating.rerate), against the store's current version of the cycle:
        record-by-record diff -> adjustments (closed cycles) -> invoices -> publish rerates/C/vN

``RerateCycle`` is the composite transform; ``run_rerate`` runs it as a staged run
(``pipelines.staged_run``, as the batch job does), compares and publishes (or, with ``what_if_dir``,
only reports). Rules and store layout: docs/rerating.md.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import apache_beam as beam
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_schemas import charge_line_schema, rated_event_schema, rejected_schema
from pipelines.bill import CHARGES, INVOICES, BillAccounts
from pipelines.coders import KeyedBatch
from pipelines.decode import COUNTS
from pipelines.inputs import match_inputs, normal_path
from pipelines.options import RunConfig, auto_shards
from pipelines.outputs import WriteOutputs
from pipelines.rate import RATED
from pipelines.rate_usage import RateUsage
from pipelines.staged_run import effective_closed_through, staged_run
from rating.billing import finish_lines, summarise_invoices
from rating.cycles import cycle_bounds_of, month_index, month_label
from rating.engine import RatingEngine
from rating.rerate import (RATED_COLUMNS, RecordDiff, adjustment_lines, compare_records, impact_summary,
                           same_lines)
from sinks import store
from sinks.files import write_json, write_parquet

_KEPT = "kept"
_SCOPE = "_scope"   # staging only: keys of this run's rated events of other cycles


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
    """(shard, rated batch) -> the events of ``cycle``; keys of the others go to ``staging/_scope``."""

    def __init__(self, cycle: str, staging: str):
        self._cycle = cycle
        self._staging = staging

    def process(self, element):
        shard, batch = element
        inside = pc.equal(batch.column("service_cycle"), self._cycle)
        outside = batch.filter(pc.invert(inside)).select(["source", "record_id", "service_cycle"])
        if outside.num_rows:
            write_parquet(Path(self._staging, _SCOPE, f"part-{shard:05d}-{uuid.uuid4().hex[:8]}.parquet"), outside)
            per_cycle = pa.table(outside).group_by("service_cycle").aggregate([("record_id", "count")])
            yield beam.pvalue.TaggedOutput(COUNTS, {"out_of_scope": {"rated": {
                c: n for c, n in zip(per_cycle.column("service_cycle").to_pylist(),
                                     per_cycle.column("record_id_count").to_pylist())}}})
        kept = batch.filter(inside)
        if kept.num_rows:
            yield shard, kept


class RerateCycle(beam.PTransform):
    """Paths -> control totals of the run, writing the re-rated cycle under ``staging``.

    Every record of the inputs is decoded, validated, deduplicated and rated by the batch job's
    core (``RateUsage``: all events of an account together, in event-time order). Events of
    ``config.cycle`` are billed and written like a batch output (``rated/``, ``charges/`` and
    ``invoices/`` as if the cycle were open, ``rejected/`` with every reject of the run,
    ``duplicates/``, ``control/``); the keys of events of other cycles go to ``staging/_scope`` and
    their counts to the totals (``out_of_scope``).
    """

    def __init__(self, config: RerateConfig, staging: str):
        super().__init__()
        self._config = config
        self._staging = str(staging)

    def expand(self, paths):
        c = self._config
        shuffle_dir = c.shuffle_dir(self._staging)
        usage = paths | "RateUsage" >> RateUsage(reference_dir=c.rating_reference, shards=c.shards,
                                                 batch_size=c.batch_size, shuffle_dir=shuffle_dir)
        kept = usage[RATED] | "KeepCycle" >> beam.ParDo(_KeepCycle(c.cycle, self._staging)) \
            .with_output_types(KeyedBatch).with_outputs(COUNTS, main=_KEPT)
        bills = kept[_KEPT] | "Bill" >> BillAccounts(c.rating_reference, c.shards, None, shuffle_dir)
        counts = (usage[COUNTS], kept[COUNTS]) | "AllCounts" >> beam.Flatten()
        return {**usage, RATED: kept[_KEPT], COUNTS: counts, CHARGES: bills[CHARGES], INVOICES: bills[INVOICES]} \
            | "Write" >> WriteOutputs(self._staging, c.shards)


def _input_files(files: list[str]) -> set[str]:
    names: set[str] = set()
    for f in files:
        names.update(pc.unique(pq.read_table(f, columns=["input_file"]).column("input_file")).to_pylist())
    return names


def check_inputs_cover(previous: store.Version, paths: list[str]) -> None:
    """ValueError when the cycle's current version came from files the re-rate is not given.

    A re-rate compares record by record: a record it cannot see would look like one that left the
    cycle, and would be credited.
    """
    given = {normal_path(p) for p in paths}
    used = _input_files(previous.rated_files())
    if not previous.is_base:  # the base output's rejects are of every cycle
        used |= _input_files(previous.rejected_files())
    missing = sorted(f for f in used if normal_path(f) not in given)
    if missing:
        raise ValueError(f"the current version of {previous.cycle} (version {previous.number}) holds records of "
                         f"{len(missing)} file(s) that --input does not match, e.g. {missing[:3]}; pass every input "
                         "file of the cycle (records the re-rate cannot see would be credited)")


def _check_nothing_lost(diff: RecordDiff, cycle: str) -> None:
    """ValueError when records rated in the cycle before are nowhere in this run (not rated, not
    rejected, not in another cycle): publishing would credit them. ``check_inputs_cover`` catches
    the usual cause (a missing file) before the pipeline; this catches any other."""
    lost = diff.changes.filter((pl.col("status") == "LEFT_CYCLE") & (pl.col("previous") == "RATED")
                               & pl.col("other_cycle").is_null())
    if lost.height:
        sample = lost.select(["source", "record_id"]).head(3).rows()
        raise ValueError(f"{lost.height} record(s) rated in {cycle} before are in none of the inputs, e.g. {sample}; "
                         "nothing was published: pass every input file the cycle was rated from")


def _frame(files: list[str], columns: list[str]) -> pl.LazyFrame:
    if not files:
        schemas = {**{f.name: f for f in rejected_schema()}, **{f.name: f for f in rated_event_schema()}}
        return pl.from_arrow(pa.schema([schemas[c] for c in columns]).empty_table()).lazy()
    return pl.scan_parquet(files, hive_partitioning=False).select(columns)


def _rejects_now(staging: Path, cycle: str) -> pl.LazyFrame:
    table = store.read_table(store.parquet_files(staging / "rejected"), rejected_schema())
    table = table.append_column("in_scope", store.in_cycle_scope(table.column("start_time"), cycle))
    return pl.from_arrow(table).lazy()


def _compare(config: RerateConfig, out: Path, previous: store.Version, staging: Path) -> RecordDiff:
    staged = store.Version(config.cycle, 0, staging)
    other = store.other_cycles_rated_files(out, config.cycle)
    other_files = [f for files in other.values() for f in files]
    return compare_records(
        _frame(previous.rated_files(), RATED_COLUMNS),
        pl.from_arrow(store.current_rejected(out, config.cycle)).lazy(),
        _frame(staged.rated_files(), RATED_COLUMNS),
        _rejects_now(staging, config.cycle),
        prior_rejects=_frame(store.all_rejected_files(out), ["source", "record_id", "reason"]),
        other_rated=_frame(other_files, ["source", "record_id", "service_cycle"]),
        out_of_scope=_frame(store.parquet_files(staging / _SCOPE), ["source", "record_id", "service_cycle"]),
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


def _write_version(config, out: Path, staging: Path, diff: RecordDiff, *, closed: bool, billing_cycle: str,
                   number: int, engine: RatingEngine, digits: dict) -> tuple[bool, object]:
    """Turn the pipeline's staging output into version ``number`` of the cycle; (changed?, adjustments)."""
    cycle = config.cycle
    rerated_lines = store.read_table(store.parquet_files(staging / "charges"), charge_line_schema())
    billed = store.current_charges(out, service_cycle=cycle)
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
        return False, adjustments

    # rejected/: the cycle's rejects only; duplicates and scope keys are not part of a version.
    for folder in ("rejected", "duplicates", _SCOPE, "invoices"):
        shutil.rmtree(staging / folder, ignore_errors=True)
    if diff.rejected.height:
        rejects = diff.rejected.sort(["input_file", "input_position"]).to_arrow().cast(rejected_schema())
        write_parquet(staging / "rejected" / "part-00000.parquet", rejects)
    if closed:
        os.replace(staging / "charges", staging / "rerated_charges")
        write_parquet(staging / "charges" / "part-00000.parquet", version_lines)
        write_parquet(staging / "adjustments" / "lines.parquet", adjustments.lines)
        write_parquet(staging / "adjustments" / "records.parquet", adjustments.records.to_arrow())

    # invoices/: every invoice this version's lines land on, over all current lines of it.
    landing = adjustments.lines if closed else version_lines
    touched = sorted(set(pc.unique(landing.column("billing_cycle")).to_pylist()))
    summaries = []
    for billing in touched:
        others = store.current_charges(out, billing_cycle=billing)
        others = others.filter(pc.not_equal(others.column("service_cycle"), cycle))
        mine = version_lines.filter(pc.equal(version_lines.column("billing_cycle"), billing))
        lines = pa.concat_tables([others, mine])
        accounts = sorted(set(lines.column("account_id").to_pylist()))
        summaries.append(summarise_invoices(lines, cycle_bounds_of(engine.compiled, accounts, billing)))
    if summaries:
        write_parquet(staging / "invoices" / "part-00000.parquet", pa.concat_tables(summaries))

    write_parquet(staging / "diff" / "changes.parquet", diff.changes.to_arrow())
    return True, adjustments


def _what_if_staging(run_id: str) -> Path:
    """A what-if's staging folder: temporary, outside the store (which it does not write)."""
    return Path(tempfile.mkdtemp(prefix="usage-rating-what-if-"))


def run_rerate(config: RerateConfig, pipeline_args: list[str] | None = None) -> dict:
    """Re-rate ``config.cycle`` and publish a new version of it (or, what-if, only report).

    Returns a dict: ``version`` (the published number, None when nothing changed or what-if),
    ``path``, ``totals`` (control totals), ``summary`` (revenue impact, ``impact_summary``) and
    ``timings`` (seconds: pipeline, compare, publish, total). Bad configuration raises ValueError
    before the pipeline starts. A run that fails leaves the store untouched.
    """
    started = time.monotonic()
    cycle = config.cycle
    out = store.require_store(config.output_dir).resolve()
    RatingEngine.load(config.reference_dir)  # bad reference data fails before any worker starts
    if config.what_if_dir:
        RatingEngine.load(config.what_if_dir)
    inputs = match_inputs(config.input_glob)
    paths = list(inputs.paths)
    if config.shards is None:
        config = dataclasses.replace(config, shards=auto_shards(paths))
    what_if = config.what_if_dir is not None
    staging_for = _what_if_staging if what_if else functools.partial(store.version_staging_dir, out, cycle)
    timings: dict[str, float] = {}
    # Batch runs, re-rates and close-cycle of the store wait for each other (the store's lock); a
    # what-if does not write the store, and takes no lock.
    with staged_run(str(out), f"rerate {cycle}", staging_for, lock=not what_if) as staged:
        staging = staged.staging
        closed_through = effective_closed_through(str(out), config.closed_through)
        closed = closed_through is not None and month_index(cycle) <= month_index(closed_through)
        billing_cycle = month_label(month_index(closed_through) + 1) if closed else cycle
        previous = store.current_version(out, cycle)
        check_inputs_cover(previous, paths)
        run, timings["pipeline_s"] = staged.run_pipeline(RerateCycle(config, str(staging)), "RerateCycle", inputs,
                                                         pipeline_args)

        t0 = time.monotonic()
        diff = _compare(config, out, previous, staging)
        _check_nothing_lost(diff, cycle)
        summary = impact_summary(diff, top=config.top_records)
        timings["compare_s"] = time.monotonic() - t0

        t0 = time.monotonic()
        result = {"cycle": cycle, "what_if": what_if, "closed": closed, "previous_version": previous.number,
                  "version": None, "path": None, "run_id": staged.run_id, "input_files": len(paths),
                  "reference": str(Path(config.rating_reference).resolve())}
        if what_if:
            totals = _control_totals(config, run, diff, closed=closed)
        else:
            engine = RatingEngine.load(config.rating_reference)
            operator = engine.compiled.reference.operator
            digits = {code: c.minor_unit_digits for code, c in operator.currencies.items()}
            number = store.next_version_number(out, cycle)
            changed, adjustments = _write_version(config, out, staging, diff, closed=closed,
                                                  billing_cycle=billing_cycle, number=number, engine=engine,
                                                  digits=digits)
            totals = _control_totals(config, run, diff, closed=closed, adjustments=adjustments)
            if changed:
                totals.update(version=number, previous_version=previous.number,
                              adjustments_billing_cycle=billing_cycle if closed else None)
                write_json(staging / "control" / "totals.json", totals)
                write_json(staging / "diff" / "summary.json", summary)
                manifest = {"run_id": staged.run_id, "inputs": paths, "reference": result["reference"],
                            "previous_version": previous.number, "closed_through": closed_through,
                            "balanced": totals["balanced"], "shards": config.shards}
                version = staged.publish(lambda folder: store.publish_version(out, cycle, folder, number=number,
                                                                              manifest=manifest))
                result.update(version=version.number, path=str(version.path))
        timings["publish_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - started
    result.update(totals=totals, summary=summary, timings=timings, balanced=totals["balanced"], tidied=staged.tidied)
    if config.report_path:
        write_json(config.report_path, {k: result[k] for k in ("cycle", "what_if", "closed", "previous_version",
                                                               "version", "reference", "balanced")}
                   | {"summary": summary, "control": totals})
    return result
