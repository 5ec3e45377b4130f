"""How a job over CDR files runs against the output store: the batch job and the re-rate both run so.

    with staged_run(output, "batch run", staging_for) as run:     # run id; the store's lock; tidy up
        ...checks under the lock...
        totals, pipeline_s = run.run_pipeline(transform, "Label", inputs, pipeline_args)
        run.publish(lambda staging: publish(staging, output, manifest))

The pipeline writes every output into the run's staging folder; nothing reaches the store until the
job publishes the folder (``sinks.publish.publish`` for a batch run, ``sinks.store.publish_version``
for a re-rated cycle). A run that fails, or ends without publishing, leaves no staging folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from cdr_schemas.decoders import InputFileError
from pipelines.inputs import InputFiles
from pipelines.options import SHUFFLE_FOLDER
from pipelines.outputs import OUTPUT_FOLDERS
from pipelines.worker_errors import worker_error_message
from rating.cycles import month_index
from sinks import store
from sinks.publish import read_closed_through, store_lock

Published = TypeVar("Published")


def new_run_id() -> str:
    """A run's id: its UTC start time and 8 random hex digits, e.g. 20260201T020000Z-1a2b3c4d."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def effective_closed_through(output_dir: str, closed_through: str | None) -> str | None:
    """The later of ``--closed-through`` and the output store's closed-cycles file."""
    stored = read_closed_through(output_dir)
    candidates = [c for c in (stored, closed_through) if c is not None]
    return max(candidates, key=month_index) if candidates else None


@dataclasses.dataclass
class StagedRun:
    """One run (``staged_run`` makes it): its id, its staging folder, what was tidied before it."""
    run_id: str
    staging: Path        # where the pipeline writes the run's outputs
    tidied: list[str]    # what interrupted runs had left beside the store, removed (sentences)
    _published: bool = dataclasses.field(default=False, init=False, repr=False)

    def run_pipeline(self, transform: beam.PTransform, label: str, inputs: InputFiles,
                     pipeline_args: list[str] | None) -> tuple[dict, float]:
        """Run ``paths | label >> transform`` on Beam, ``transform`` writing into ``staging``; returns
        the control totals it wrote (plus ``skipped_inputs``) and the pipeline's seconds.

        A file that cannot be read at all fails the run with a ValueError carrying the file's own
        message (Beam wraps the worker's error). The shuffle's spill files are removed.
        """
        for folder in OUTPUT_FOLDERS:
            (self.staging / folder).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            with beam.Pipeline(options=PipelineOptions(pipeline_args or [])) as pipeline:
                _ = pipeline | "Inputs" >> beam.Create(list(inputs.paths)) | label >> transform
        except BaseException as error:
            message = worker_error_message(error, InputFileError)  # Beam wraps it; keep the file's own message
            if message is not None:
                raise ValueError(message) from error
            raise
        elapsed_s = time.monotonic() - started
        shutil.rmtree(self.staging / SHUFFLE_FOLDER, ignore_errors=True)
        totals = json.loads((self.staging / "control" / "totals.json").read_text())
        totals["skipped_inputs"] = inputs.skipped_json()
        return totals, elapsed_s

    def publish(self, publisher: Callable[[Path], Published]) -> Published:
        """Hand the staging folder to ``publisher`` (which moves it into the store); from then on the
        publisher owns it: a publication that commits and is interrupted is finished from it."""
        self._published = True
        return publisher(self.staging)


@contextlib.contextmanager
def staged_run(output_dir: str, what: str, staging_for: Callable[[str], Path], *,
               lock: bool = True) -> Iterator[StagedRun]:
    """A new run of ``what`` (e.g. "batch run", "rerate 2026-01") against the store at ``output_dir``.

    With ``lock`` (every run that writes the store) the block holds the store's lock
    (``sinks.publish.store_lock``: a second writer fails at once, naming this run) and first
    removes what interrupted runs left (``StagedRun.tidied``). ``staging_for(run_id)``: the run's
    staging folder. It is removed when the block ends without handing it to ``StagedRun.publish``.
    """
    run_id = new_run_id()
    with store_lock(output_dir, f"{what} {run_id}") if lock else contextlib.nullcontext():
        tidied = store.remove_leftovers(output_dir) if lock else []
        run = StagedRun(run_id, Path(staging_for(run_id)), tidied)
        try:
            yield run
        finally:
            if not run._published and run.staging.exists():
                store.discard(run.staging)
