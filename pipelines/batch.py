"""The batch job: CDR files in, rated events, charges, rejects, duplicates and control totals out.

    decode -> validate -> deduplicate -> rate (per account) -> bill -> write

``RateUsageFiles`` is the job's composite transform: ``pipelines.rate_usage.RateUsage`` (shared with
the re-rate), then ``BillAccounts`` and ``WriteOutputs``. ``run_batch`` runs it as a staged run
(``pipelines.staged_run``) and publishes the output atomically; ``run`` is the Beam-style entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from cdr_schemas.decoders import detect_format

from pipelines.bill import CHARGES, INVOICES, BillAccounts
from pipelines.inputs import match_inputs, normal_path
from pipelines.options import BatchConfig, auto_shards
from pipelines.outputs import WriteOutputs
from pipelines.rate import RATED
from pipelines.rate_usage import RateUsage
from pipelines.staged_run import effective_closed_through, staged_run
from rating.engine import RatingEngine, reference_fingerprint
from sinks import store
from sinks.files import write_json
from sinks.publish import CLOSED_CYCLES, check_replaceable, publish, staging_dir_for


class RateUsageFiles(beam.PTransform):
    """Paths -> control totals, writing every output under ``staging``."""

    def __init__(self, config: BatchConfig, staging: str):
        super().__init__()
        self._config = config
        self._staging = str(staging)

    def expand(self, paths):
        c = self._config
        shuffle_dir = c.shuffle_dir(self._staging)
        usage = paths | "RateUsage" >> RateUsage(reference_dir=c.reference_dir, shards=c.shards,
                                                 batch_size=c.batch_size, shuffle_dir=shuffle_dir)
        bills = usage[RATED] | "Bill" >> BillAccounts(c.reference_dir, c.shards, c.closed_through, shuffle_dir)
        return {**usage, CHARGES: bills[CHARGES], INVOICES: bills[INVOICES]} \
            | "Write" >> WriteOutputs(self._staging, c.shards)


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
    output = config.output_dir
    with staged_run(output, "batch run", lambda run_id: staging_dir_for(output, run_id)) as staged:
        if (Path(output) / store.CURRENT).exists() and not config.replace_output:
            raise ValueError(f"{output} holds re-rated cycle versions (CURRENT.json, rerates/) that a new "
                             f"batch run would discard, with their adjustments; write to another --output, re-rate "
                             f"with usage-rating rerate, or pass --replace-output to discard them")
        fingerprint = input_fingerprint(paths, config.reference_dir)
        check_replaceable(output, fingerprint, replace=config.replace_output)
        closed_through = effective_closed_through(output, config.closed_through)
        config = dataclasses.replace(config, closed_through=closed_through,
                                     shards=config.shards if config.shards is not None else auto_shards(paths))
        totals, elapsed = staged.run_pipeline(RateUsageFiles(config, str(staged.staging)), "RateUsageFiles",
                                              inputs, pipeline_args)
        write_json(staged.staging / "control" / "totals.json", totals)
        if closed_through is not None:
            write_json(staged.staging / CLOSED_CYCLES, {"closed_through": closed_through})
        staged.publish(lambda staging: publish(staging, output, {
            "run_id": staged.run_id, "inputs": paths, "reference": str(Path(config.reference_dir).resolve()),
            "shards": config.shards, "closed_through": closed_through, "balanced": totals["balanced"],
            "elapsed_s": round(elapsed, 3), "fingerprint": fingerprint,
        }))
    return {**totals, "elapsed_s": elapsed, "run_id": staged.run_id, "input_files": len(paths), "shards": config.shards,
            "tidied": staged.tidied}


def run(argv: list[str] | None = None) -> dict:
    """Beam-style entry point: ``python -m pipelines.batch --input ... --reference ... --output ...``."""
    options = PipelineOptions(argv)
    return run_batch(BatchConfig.from_options(options), argv)


if __name__ == "__main__":
    import sys
    sys.exit(0 if run(sys.argv[1:])["balanced"] else 3)
