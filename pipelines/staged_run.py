"""How a job over CDR files runs against the output store (Iceberg tables, ``sinks.iceberg``).

    with staged_run(output, catalog_uri, "batch run", create=True) as run:  # run id; lock; tidy up
        ...checks under the lock...
        totals, pipeline_s = run.run_pipeline(transform, "Label", inputs, pipeline_args)
        run.commit("batch", run.written(), totals)

The pipeline's workers write every data file straight into its table's data folder, each file named
after the run (``OutputDirs``). The run has two scratch folders: ``scratch`` on this machine (shuffle
spills of a local runner, files only this process reads) and ``shared``, which every worker reaches
(control totals, the store's usage a run continues, a re-rate's out-of-scope keys): the same folder
for a store on local disk, a folder beside the store's tables for a store on object storage.
Nothing is visible until ``commit`` registers the files, one transaction per table and the run log
last (``IcebergStore.commit_run``). A run that fails, or ends without committing, removes its files;
files a killed run left are removed by the next run (``IcebergStore.orphan_files``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Iterator, Mapping

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from cdr_schemas.decoders import InputFileError
from pipelines.inputs import InputFiles
from pipelines.options import SHUFFLE_FOLDER
from pipelines.outputs import OutputDirs
from pipelines.worker_errors import quiet_worker_errors, worker_error_message
from rating.cycles import month_index
from sinks.files import read_bytes
from sinks.iceberg import DATA_TABLES, CommitResult, IcebergStore
from sinks.iceberg import catalog as cat
from sinks.lock import is_local, store_lock
from sinks.object_storage import ObjectStorage

SCRATCH_PREFIX = "scratch-"   # a run's scratch folder: OUT/.scratch-RUNID beside the store's tables


def new_run_id() -> str:
    """A run's id: its UTC start time and 8 random hex digits, e.g. 20260201T020000Z-1a2b3c4d."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def effective_closed_through(store: IcebergStore, closed_through: str | None) -> str | None:
    """The later of ``--closed-through`` and the cycles the store records as closed."""
    candidates = [c for c in (store.closed_through(), closed_through) if c is not None]
    return max(candidates, key=month_index) if candidates else None


def local_path(uri: str) -> str | None:
    """The local path of a ``file://`` URI; None for object storage."""
    parsed = urllib.parse.urlparse(uri)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else None


def scratch_dir_for(output: str, run_id: str) -> Path:
    """A run's scratch folder on this machine: hidden, inside a local ``output``; a temporary
    folder of this machine for a store on object storage."""
    local = local_path(cat.output_uri(output))
    if local is None:
        return Path(tempfile.gettempdir()) / f"usage-rating-{SCRATCH_PREFIX}{run_id}"
    return Path(local) / f".{SCRATCH_PREFIX}{run_id}"


def shared_dir_for(output: str, scratch: Path, run_id: str) -> str:
    """The URI of a run's scratch folder that every worker reaches: ``scratch`` itself for a local
    ``output`` (workers of a cluster mount it at the same path); for a store on object storage, the
    hidden folder ``OUT/.scratch-RUNID`` beside its tables."""
    uri = cat.output_uri(output)
    return "file://" + str(scratch.resolve()) if local_path(uri) is not None else \
        cat.join(uri, f".{SCRATCH_PREFIX}{run_id}")


@dataclasses.dataclass
class StagedRun:
    """One run (``staged_run`` makes it): its id, the store, where its files go, what was tidied."""
    run_id: str
    store: IcebergStore
    scratch: Path        # on this machine: shuffle spills, files the submitter makes; removed when the run ends
    shared: str          # a folder or URI every worker reaches (``shared_dir_for``); removed when the run ends
    dirs: OutputDirs     # where the pipeline writes each output
    tidied: list[str]    # what recovery and the orphan clean-up did before this run (sentences)
    exclusive: bool = False   # the lock keeps every other writer out: embedded catalog in a local folder
    based_on: str | None = None   # the run log's head when the run began reading the store
    committed: CommitResult | None = dataclasses.field(default=None, init=False)
    _taken: set = dataclasses.field(default_factory=set, init=False, repr=False)
    _removing: list = dataclasses.field(default_factory=list, init=False, repr=False)

    def run_pipeline(self, transform: beam.PTransform, label: str, inputs: InputFiles,
                     pipeline_args: list[str] | None) -> tuple[dict, float]:
        """Run ``paths | label >> transform`` on Beam, ``transform`` writing into ``dirs``; returns
        the control totals it wrote (plus ``skipped_inputs``) and the pipeline's seconds.

        A file that cannot be read at all fails the run with a ValueError carrying the file's own
        message (Beam wraps the worker's error). The shuffle's spill files are removed in the
        background, while the run commits (``staged_run`` waits for it before it returns).
        """
        started = time.monotonic()
        try:
            with quiet_worker_errors(InputFileError), beam.Pipeline(options=PipelineOptions(pipeline_args or [])) \
                    as pipeline:
                _ = pipeline | "Inputs" >> beam.Create(list(inputs.paths)) | label >> transform
        except BaseException as error:
            message = worker_error_message(error, InputFileError)  # Beam wraps it; keep the file's own message
            if message is not None:
                raise ValueError(message) from error
            raise
        elapsed_s = time.monotonic() - started
        self._remove_in_background(self.scratch / SHUFFLE_FOLDER)
        written = cat.join(self.dirs.folders["control"], "totals.json")
        try:
            totals = json.loads(read_bytes(written))
        except FileNotFoundError:
            # Workers on other machines wrote it on their own disks: the run cannot see its outputs.
            raise ValueError(f"the pipeline ran but its control totals are not at {written}: its workers "
                             f"wrote where this machine cannot read. With a runner whose workers run on other "
                             f"machines, put --output on object storage (s3://, gs://, with --catalog-uri) or on "
                             f"a filesystem mounted at the same path on every worker; nothing was committed") from None
        totals["skipped_inputs"] = inputs.skipped_json()
        return totals, elapsed_s

    def _remove_in_background(self, folder: Path) -> None:
        """Remove ``folder`` in a thread. Unlinking GBs of spill files is the kernel freeing their
        pages (1.4 s at 10M records, measured), time the commit can use; ``wait_for_removals``
        joins it."""
        if not folder.exists():
            return
        doomed = folder.with_name(f"{folder.name}.removing-{uuid.uuid4().hex[:8]}")
        folder.rename(doomed)   # the name is free again at once for a later pipeline of this run
        thread = threading.Thread(target=shutil.rmtree, args=(doomed,), kwargs={"ignore_errors": True},
                                  name="remove-spills", daemon=True)
        thread.start()
        self._removing.append(thread)

    def wait_for_removals(self) -> None:
        """Wait until the folders removed in the background are gone."""
        for thread in self._removing:
            thread.join()
        self._removing.clear()

    def written(self) -> dict[str, list[str]]:
        """The data files this run wrote, per table, as URIs."""
        return {table: self.dirs.files(table) for table in DATA_TABLES}

    def commit(self, kind: str, files: Mapping[str, list[str]], totals: dict,
               overwrite: Mapping | None = None) -> CommitResult:
        """Commit the run: its ``files`` and ``overwrite`` filters per table, then its run-log row."""
        self.committed = self.store.commit_run(self.run_id, kind, files, totals, overwrite=overwrite,
                                               exclusive=self.exclusive, based_on=self.based_on)
        self._taken = {path for paths in files.values() for path in paths}
        return self.committed

    def discard_files(self) -> None:
        """Remove every data file of this run (before a commit, or what a commit did not take)."""
        for table in DATA_TABLES:
            for uri in self.dirs.files(table):
                if uri not in self._taken:
                    cat.delete_file(uri)


@contextlib.contextmanager
def staged_run(output: str, catalog_uri: str | None, what: str, *, create: bool,
               write: bool = True, storage: ObjectStorage = ObjectStorage()) -> Iterator[StagedRun]:
    """A new run of ``what`` (e.g. "batch run", "rerate 2026-01") against the store at ``output``.

    ``create``: create the store when there is none (a batch run). ``storage``: how the run's
    workers reach object storage (``OutputDirs.storage``). With ``write`` (every run that
    commits) the block holds the store's lock (``sinks.lock.store_lock``: a second writer fails at
    once, naming this run), rolls back what a crashed run half-committed and deletes the data files
    no snapshot references (``StagedRun.tidied``). Without ``write`` (a what-if) the run writes its
    files into a temporary folder. The run's uncommitted files and its scratch folder are removed
    when the block ends; so is a store this run created in a new folder, if the run commits nothing.
    """
    run_id = new_run_id()
    with store_lock(output, f"{what} {run_id}") if write else contextlib.nullcontext():
        new_folder = create and catalog_uri is None and is_local(output) and \
            cat.is_empty_or_missing(cat.output_uri(output))
        store = IcebergStore.open(output, catalog_uri, create=create)
        exclusive = write and catalog_uri is None and is_local(output)
        tidied = tidy(store, exclusive) if write else []
        if write:
            scratch = scratch_dir_for(output, run_id)
            shared = shared_dir_for(output, scratch, run_id)
            folders = {table: store.data_root(table) for table in DATA_TABLES}
        else:
            scratch = Path(tempfile.mkdtemp(prefix="usage-rating-what-if-"))
            shared = "file://" + str(scratch.resolve())
            folders = {table: "file://" + str(scratch.resolve() / table) for table in DATA_TABLES}
        dirs = OutputDirs({**folders, "control": cat.join(shared, "control")}, run_id, storage)
        # What the run reads of the store from here on is as of this run; a commit made by another
        # writer before this run commits fails it (``ConcurrentCommitError``): it must read again.
        run = StagedRun(run_id, store, scratch, shared, dirs, tidied, exclusive, store.runs()[-1].run_id)
        try:
            yield run
        finally:
            if write:
                run.discard_files()
            run.wait_for_removals()
            shutil.rmtree(scratch, ignore_errors=True)
            if local_path(shared) is None:
                cat.delete_dir(shared)
            if new_folder and run.committed is None:   # a first run that failed leaves no empty store behind
                shutil.rmtree(local_path(store.uri), ignore_errors=True)


def tidy(store: IcebergStore, exclusive: bool) -> list[str]:
    """Roll back a crashed run's half commit, delete orphaned data files and old scratch folders."""
    said = [f"rolled {r.table} back from snapshot {r.from_snapshot_id} to {r.to_snapshot_id} (an interrupted "
            f"run's commit)" for r in store.recover(force=exclusive)]
    # Files no snapshot references are a killed run's, or a live writer's not yet committed: delete
    # them only while the lock keeps every writer out (otherwise ``maintain`` does, after its retention).
    removed = [path for paths in store.orphan_files().values() for path in paths] if exclusive else []
    for path in removed:
        cat.delete_file(path)
    if removed:
        said.append(f"removed {len(removed)} data file(s) of interrupted runs")
    if local_path(store.uri) is not None:
        for scratch in sorted(Path(local_path(store.uri)).glob(f".{SCRATCH_PREFIX}*")):
            shutil.rmtree(scratch, ignore_errors=True)
            said.append(f"removed {scratch.name}, left by an interrupted run")
    return said

