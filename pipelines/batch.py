"""The batch job: CDR files in, rated events, charges, rejects, duplicates and control totals out.

    decode -> validate -> deduplicate -> rate (per account) -> bill -> write

``RateUsageFiles`` is the job's composite transform: ``pipelines.rate_usage.RateUsage`` (shared with
the re-rate), then ``BillAccounts`` and ``WriteOutputs``. ``run_batch`` runs it against the store
(``pipelines.staged_run``) and appends the run to it in one commit; ``run`` is the Beam-style entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from pyiceberg.expressions import And, EqualTo, In

from cdr_schemas import charge_line_schema, invoice_summary_schema

from cdr_schemas.decoders import detect_format

from pipelines.bill import CHARGES, INVOICES, BillAccounts
from pipelines.inputs import match_inputs, normal_path, shown_reference
from pipelines.options import BatchConfig, auto_shards
from pipelines.outputs import OutputDirs, WriteOutputs, write_by_cycle
from pipelines.prior import PriorUsage, accounts_of_inputs, check_same_reference, open_cycles, prepare_prior
from pipelines.rate import RATED
from pipelines.rate_usage import RateUsage
from pipelines.staged_run import StagedRun, effective_closed_through, staged_run
from rating.billing import summarise_invoices
from rating.cycles import cycle_bounds_of
from rating.engine import RatingEngine, reference_fingerprint
from sinks.files import write_parquet
from sinks.iceberg import ConcurrentCommitError
from sinks.iceberg.catalog import delete_file
from sinks.object_storage import ObjectStorage

COMMIT_ATTEMPTS = 3
# An append replaces the rows of at most this many accounts by a row filter naming them; beyond it,
# it rates the touched cycles again for every account and replaces them whole (pyiceberg binds a
# filter's literals once per data file: thousands of account ids in it cost more than re-rating).
ACCOUNTS_REPLACED_ONE_BY_ONE = 1_000


class RateUsageFiles(beam.PTransform):
    """Paths -> control totals, writing every output into ``dirs`` (spilling under ``scratch``)."""

    def __init__(self, config: BatchConfig, dirs: OutputDirs, scratch: str, prior: PriorUsage | None = None):
        super().__init__()
        self._config = config
        self._dirs = dirs
        self._scratch = str(scratch)
        self._prior = prior

    def expand(self, paths):
        c = self._config
        shuffle_dir = c.shuffle_dir(self._scratch)
        storage = self._dirs.storage
        usage = paths | "RateUsage" >> RateUsage(reference_dir=c.reference_dir, shards=c.shards, batch_size=c.batch_size,
                                                 shuffle_dir=shuffle_dir, prior=self._prior, storage=storage)
        bills = usage[RATED] | "Bill" >> BillAccounts(c.reference_dir, c.shards, c.closed_through, shuffle_dir, storage)
        return {**usage, CHARGES: bills[CHARGES], INVOICES: bills[INVOICES]} \
            | "Write" >> WriteOutputs(self._dirs, c.shards)


def input_fingerprint(paths: list[str], reference_dir: str) -> dict:
    """What the run log records of a run's inputs: ``inputs``, SHA-256 of the input files' paths,
    sizes and modification times (the files are not read again), and ``reference``, SHA-256 of the
    reference data's file names and bytes."""
    digest = hashlib.sha256()
    for metadata in FileSystems.match(paths):
        for m in metadata.metadata_list:
            digest.update(f"{normal_path(m.path)}\0{m.size_in_bytes}\0{m.last_updated_in_seconds!r}\n".encode())
    return {"inputs": digest.hexdigest(), "reference": reference_fingerprint(reference_dir)}


def _cycle_of(path: str) -> str:
    """The partition value (cycle) of a data file written in a Hive-style partition folder."""
    return Path(path).parent.name.split("=", 1)[1]


def _cycles_of(paths: list[str]) -> list[str]:
    return sorted({_cycle_of(path) for path in paths})


def _events(totals: dict, cycle: str) -> int:
    return sum(totals["cycles"].get(cycle, {}).get("events", {}).values())


def appended(run: StagedRun, prior: PriorUsage, totals: dict, paths: list[str], reference_dir: str) -> tuple[dict, dict]:
    """What the run commits: (files per table, overwrite filter per table), and ``totals`` trimmed
    to the cycles it commits. ValueError (nothing committed) for usage of a cycle the store holds
    but this run may not change (a closed one) or for stored events that no longer rate.

    The run rated its new records together with the store's events of the same accounts in its
    open cycles (``prior``); it commits the cycles it changed (those with new rated events). In a
    cycle the store holds, the accounts it rated replace theirs: events, charge lines, invoices
    (recomputed over all of the invoice's lines). Re-rated cycles without new events are left as the
    store holds them (their files are dropped).
    """
    store = run.store
    held = store.partition_values("rated")
    rated = _cycles_of(run.dirs.files("rated"))
    closed = sorted(set(rated) & held - set(prior.cycles))
    if closed:
        raise ValueError(
            f"{store.output} holds service cycle(s) {', '.join(closed)}, closed (their invoices are issued), and these "
            f"inputs have usage of them: add late usage to a closed cycle by re-rating it, which bills the change "
            f"with adjustments: usage-rating rerate --cycle {closed[0]} --input '<every file of the cycle>' "
            f"--reference ... --output {store.output}. Nothing was committed")
    given = {normal_path(p) for p in paths}
    for path in run.dirs.files("rejected"):
        lost = [f for f in pc.unique(pq.read_table(path, columns=["input_file"]).column("input_file")).to_pylist()
                if normal_path(f) not in given]
        if lost:
            raise ValueError(f"events {store.output} rated from {lost[0]} no longer rate with this reference data "
                             f"(rejected now): re-rate their cycle. Nothing was committed")
    billed_held = store.partition_values("charges")
    if not set(rated) & held and not set(_cycles_of(run.dirs.files("charges"))) & billed_held:
        return run.written(), {}   # new cycles only, on new invoices: every file is committed as it is
    changed = [c for c in rated if _events(totals, c) != prior.records.get(c, 0)]
    for path in run.dirs.files("rated"):
        if _cycle_of(path) not in changed:   # re-rated as the store holds it: keep the store's
            delete_file(path)
    replaced = sorted(set(changed) & held)
    # In a held cycle the run bills every account of the reference (plan fees), but replaces only the
    # accounts it rated again (all of them when ``prior.accounts`` is None).
    replaced_rows = pc.field("service_cycle").isin(pa.array(replaced, pa.string()))
    ours = In("service_cycle", replaced) if replaced else None
    if prior.accounts is not None and replaced:
        replaced_rows = replaced_rows & pc.field("account_id").isin(pa.array(prior.accounts, pa.string()))
        ours = And(ours, In("account_id", list(prior.accounts)))
    keep = pc.field("service_cycle").isin(pa.array(sorted(set(changed) - held), pa.string())) | replaced_rows
    billing = _keep_lines(run, keep)
    for cycle in set(totals["cycles"]) - set(changed) - billing:
        del totals["cycles"][cycle]
    overwrite = {"rated": ours, "charges": ours} if replaced else {}
    invoiced = sorted(billing & store.partition_values("invoices"))
    if invoiced:
        _recompute_invoices(run, invoiced, replaced_rows if replaced else None, reference_dir)
        overwrite["invoices"] = In("billing_cycle", invoiced)
    return run.written(), overwrite


def _keep_lines(run: StagedRun, keep: pc.Expression) -> set[str]:
    """Keep the run's charge lines that ``keep`` selects (rewriting its charge files); returns the
    billing cycles they are on. Invoice files of other billing cycles are dropped."""
    billing = set()
    for path in run.dirs.files("charges"):
        lines = pq.read_table(path)
        kept = lines.filter(keep)
        if kept.num_rows == 0:
            delete_file(path)
            continue
        billing.add(_cycle_of(path))
        if kept.num_rows != lines.num_rows:
            write_parquet(path, kept)
    for path in run.dirs.files("invoices"):
        if _cycle_of(path) not in billing:
            delete_file(path)
    return billing


def _recompute_invoices(run: StagedRun, billing: list[str], replaced: pc.Expression | None,
                        reference_dir: str) -> None:
    """Invoices of ``billing`` cycles the store already has: summarise each over all of its lines as
    they will stand, the store's (but those the run replaces, ``replaced``) and the run's."""
    store = run.store
    engine = RatingEngine.load(reference_dir)
    for cycle in billing:
        others = store.read("charges", row_filter=EqualTo("billing_cycle", cycle))
        if replaced is not None:
            others = others.filter(~replaced)
        mine = [pq.read_table(path).cast(charge_line_schema()) for path in run.dirs.files("charges")
                if _cycle_of(path) == cycle]
        lines = pa.concat_tables([others, *mine])
        accounts = sorted(set(lines.column("account_id").to_pylist()))
        summaries = summarise_invoices(lines, cycle_bounds_of(engine.compiled, accounts, cycle))
        for path in run.dirs.files("invoices"):
            if _cycle_of(path) == cycle:
                delete_file(path)
        write_by_cycle(run.dirs, "invoices", 0, summaries.cast(invoice_summary_schema()), "billing_cycle")


def run_batch(config: BatchConfig, pipeline_args: list[str] | None = None) -> dict:
    """Run the batch job and append its outputs to the store; returns the control totals plus timing.

    Reference data is loaded (and fully validated) before the pipeline is built, so bad reference
    data fails here with every issue listed. Outputs are committed even when the totals do not
    balance, so the imbalance can be investigated; the caller decides the exit status.

    The store is created at ``--output`` when there is none. From its first look at the store to
    the commit the run holds the store's lock (a second writer fails at once); it first rolls back
    and removes what interrupted runs left (``tidied`` in the result). It continues the store's open
    cycles (``pipelines.prior``: records the store rated are duplicates, a cycle it adds to is rated
    again with the new records) and commits what changed (``appended``). With a shared catalog,
    when another writer commits first (``ConcurrentCommitError``), the run is made again from the
    start, ``COMMIT_ATTEMPTS`` times at most (``attempts`` in the result).
    """
    storage, pipeline_args = ObjectStorage.for_job(pipeline_args)   # here; on every worker: OutputDirs.storage
    RatingEngine.load(config.reference_dir)  # bad reference data fails before any worker starts (and is kept)
    inputs = match_inputs(config.input_glob)
    paths = list(inputs.paths)
    for path in paths:
        detect_format(path)  # an unknown extension fails here, before the pipeline, naming the file
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return {**_run_once(config, inputs, pipeline_args, storage), "attempts": attempt}
        except ConcurrentCommitError:
            # Another writer of a shared catalog committed first: nothing of this run was committed,
            # and what it read (held cycles, duplicates, allowances) may have changed: run it again.
            if attempt == COMMIT_ATTEMPTS:
                raise


def _run_once(config: BatchConfig, inputs, pipeline_args: list[str] | None, storage: ObjectStorage) -> dict:
    paths = list(inputs.paths)
    with staged_run(config.output_dir, config.catalog_uri, "batch run", create=True, storage=storage) as run:
        fingerprint = input_fingerprint(paths, config.reference_dir)
        closed_through = effective_closed_through(run.store, config.closed_through)
        config = dataclasses.replace(config, closed_through=closed_through,
                                     shards=config.shards if config.shards is not None else auto_shards(paths)) \
            .with_shuffle_for(pipeline_args)
        started = time.monotonic()
        cycles = open_cycles(run.store, closed_through)
        check_same_reference(run.store, cycles, fingerprint["reference"])
        accounts = accounts_of_inputs(RatingEngine.load(config.reference_dir), paths) if cycles else set()
        if len(accounts) > ACCOUNTS_REPLACED_ONE_BY_ONE:
            accounts = None   # so many: replace their cycles whole (one partition each, no row filter)
        prior = prepare_prior(run.store, cycles, accounts, run.scratch).shared_at(run.shared)
        timings = {"prior_s": time.monotonic() - started}
        totals, timings["pipeline_s"] = run.run_pipeline(RateUsageFiles(config, run.dirs, str(run.scratch), prior),
                                                         "RateUsageFiles", inputs, pipeline_args)
        started = time.monotonic()
        files, overwrite = appended(run, prior, totals, paths, config.reference_dir)
        timings["select_s"] = time.monotonic() - started
        started = time.monotonic()
        totals["run"] = {"inputs": paths, "reference": shown_reference(config.reference_dir),
                         "shards": config.shards, "closed_through": closed_through, "fingerprint": fingerprint,
                         "elapsed_s": round(timings["pipeline_s"], 3)}
        committed = run.commit("batch", files, totals, overwrite=overwrite)
        timings["commit_s"] = time.monotonic() - started
    elapsed = sum(timings.values())
    return {**totals, "elapsed_s": elapsed, "timings": timings, "run_id": run.run_id,
            "run_number": committed.run.run_number,
            "input_files": len(paths), "shards": config.shards, "tidied": run.tidied,
            "billing_cycles": _cycles_of(files["charges"])}


def run(argv: list[str] | None = None) -> dict:
    """Beam-style entry point: ``python -m pipelines.batch --input ... --reference ... --output ...``."""
    options = PipelineOptions(argv)
    return run_batch(BatchConfig.from_options(options), argv)


if __name__ == "__main__":
    import sys
    sys.exit(0 if run(sys.argv[1:])["balanced"] else 3)
