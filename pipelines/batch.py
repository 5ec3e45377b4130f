"""The batch job: CDR files in, rated events, charges, rejects, duplicates and control totals out.

    decode -> validate -> deduplicate -> enrich + rate (per account) -> aggregate -> write

``RateUsageFiles`` is the composite transform (also used by tests); ``run`` builds the pipeline from
command-line flags, runs it, checks the control totals and publishes the output atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from cdr_schemas.decoders import detect_format

from pipelines.decode import COUNTS, REJECTED, USAGE, DecodeUsage
from pipelines.dedup import DUPLICATES, UNIQUE, DeduplicateUsage
from pipelines.inputs import InputFiles, match_inputs
from pipelines.options import SHUFFLE_FOLDER, BatchConfig, auto_shards
from pipelines.outputs import OUTPUT_FOLDERS, WriteOutputs
from pipelines.rate import RATED, RateByAccount
from rating.billing import month_index
from rating.engine import RatingEngine, reference_fingerprint
from sinks import store
from sinks.files import write_json
from sinks.publish import CLOSED_CYCLES, check_replaceable, publish, read_closed_through, staging_dir_for, store_lock


def effective_closed_through(output_dir: str, closed_through: str | None) -> str | None:
    """The later of ``--closed-through`` and the output store's closed-cycles file."""
    stored = read_closed_through(output_dir)
    candidates = [c for c in (stored, closed_through) if c is not None]
    return max(candidates, key=month_index) if candidates else None


class RateUsageFiles(beam.PTransform):
    """Paths -> control totals, writing every output under ``staging``."""

    def __init__(self, config: BatchConfig, staging: str):
        super().__init__()
        self._config = config
        self._staging = str(staging)

    def expand(self, paths):
        c = self._config
        shuffle_dir = c.shuffle_dir(self._staging)
        decoded = paths | "Decode" >> DecodeUsage(c.batch_size)
        deduped = decoded[USAGE] | "Deduplicate" >> DeduplicateUsage(c.shards, shuffle_dir)
        rated = deduped[UNIQUE] | "Rate" >> RateByAccount(c.reference_dir, c.shards, shuffle_dir)
        rejected = (decoded[REJECTED], rated[REJECTED]) | "AllRejects" >> beam.Flatten()
        return {
            "rated": rated[RATED], "rejected": rejected, "duplicates": deduped[DUPLICATES],
            "counts": decoded[COUNTS],
        } | "Write" >> WriteOutputs(self._staging, c.reference_dir, c.shards, c.closed_through, shuffle_dir)


def normal_path(path: str) -> str:
    """``path`` as recorded in a store: absolute on local disk, unchanged for ``gs://`` and the like."""
    return path if "://" in path else os.path.abspath(path)


def input_fingerprint(paths: list[str], reference_dir: str) -> dict:
    """What a store records to tell a re-run of its inputs from a different run: ``inputs``, SHA-256
    of the input files' paths, sizes and modification times (the files are not read again), and
    ``reference``, SHA-256 of the reference data's file names and bytes."""
    digest = hashlib.sha256()
    for metadata in FileSystems.match(paths):
        for m in metadata.metadata_list:
            digest.update(f"{normal_path(m.path)}\0{m.size_in_bytes}\0{m.last_updated_in_seconds!r}\n".encode())
    return {"inputs": digest.hexdigest(), "reference": reference_fingerprint(reference_dir)}


def run_batch(config: BatchConfig, pipeline_args: list[str] | None = None) -> dict:
    """Run the batch job and publish its outputs; returns the control totals plus timing.

    Reference data is loaded (and fully validated) before the pipeline is built, so bad reference
    data fails here with every issue listed. Outputs are published even when the totals do not
    balance, so the imbalance can be investigated; the caller decides the exit status.

    From its first look at ``--output`` to publication the run holds the store's lock (a second
    writer fails at once). It first removes what interrupted runs left beside the store (``tidied``
    in the result), then refuses to replace a store rated from other inputs or reference data
    unless ``config.replace_output`` (``sinks.publish.check_replaceable``).
    """
    RatingEngine.load(config.reference_dir)  # bad reference data fails before any worker starts (and is kept)
    inputs = match_inputs(config.input_glob)
    paths = list(inputs.paths)
    for path in paths:
        detect_format(path)  # an unknown extension fails here, before the pipeline, naming the file
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    with store_lock(config.output_dir, f"batch run {run_id}"):
        tidied = store.remove_leftovers(config.output_dir)
        if (Path(config.output_dir) / store.CURRENT).exists() and not config.replace_output:
            raise ValueError(f"{config.output_dir} holds re-rated cycle versions (CURRENT.json, rerates/) that a new "
                             f"batch run would discard, with their adjustments; write to another --output, re-rate "
                             f"with usage-rating rerate, or pass --replace-output to discard them")
        fingerprint = input_fingerprint(paths, config.reference_dir)
        check_replaceable(config.output_dir, fingerprint, replace=config.replace_output)
        closed_through = effective_closed_through(config.output_dir, config.closed_through)
        config = dataclasses.replace(config, closed_through=closed_through,
                                     shards=config.shards if config.shards is not None else auto_shards(paths))
        result = _rate_and_publish(config, inputs, run_id, fingerprint, pipeline_args)
    return {**result, "tidied": tidied}


def _rate_and_publish(config: BatchConfig, inputs: InputFiles, run_id: str, fingerprint: dict,
                      pipeline_args: list[str] | None) -> dict:
    """``run_batch`` once the store is locked and checked: build the outputs in staging, publish them."""
    paths = list(inputs.paths)
    closed_through = config.closed_through
    staging = staging_dir_for(config.output_dir, run_id)
    for folder in OUTPUT_FOLDERS:
        (staging / folder).mkdir(parents=True, exist_ok=True)
    options = PipelineOptions(pipeline_args or [])
    started = time.monotonic()
    try:
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | "Inputs" >> beam.Create(paths) | "RateUsageFiles" >> RateUsageFiles(config, str(staging))
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if "InputFileError" in str(error):  # Beam wraps worker errors; keep the file's own message
            message = str(error).split("InputFileError: ", 1)[1].split(" [while running", 1)[0]
            raise ValueError(message) from error
        raise
    elapsed = time.monotonic() - started
    shutil.rmtree(staging / SHUFFLE_FOLDER, ignore_errors=True)
    totals = json.loads((staging / "control" / "totals.json").read_text())
    totals["skipped_inputs"] = inputs.skipped_json()
    write_json(staging / "control" / "totals.json", totals)
    if closed_through is not None:
        write_json(staging / CLOSED_CYCLES, {"closed_through": closed_through})
    publish(staging, config.output_dir, {
        "run_id": run_id, "inputs": paths, "reference": str(Path(config.reference_dir).resolve()),
        "shards": config.shards, "closed_through": closed_through, "balanced": totals["balanced"],
        "elapsed_s": round(elapsed, 3), "fingerprint": fingerprint,
    })
    return {**totals, "elapsed_s": elapsed, "run_id": run_id, "input_files": len(paths), "shards": config.shards}


def run(argv: list[str] | None = None) -> dict:
    """Beam-style entry point: ``python -m pipelines.batch --input ... --reference ... --output ...``."""
    options = PipelineOptions(argv)
    return run_batch(BatchConfig.from_options(options), argv)


if __name__ == "__main__":
    import sys
    sys.exit(0 if run(sys.argv[1:])["balanced"] else 3)
