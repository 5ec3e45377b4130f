"""Command-line options of the batch job: a PipelineOptions subclass and the frozen config it yields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from cdr_schemas.decoders import detect_format

from pipelines.cli.args import add_batch_flags
from pipelines.shuffle import SHUFFLE_MODES
from rating.cycles import month_index

SHUFFLE_FOLDER = "_shuffle"   # under the run's scratch folder; deleted when the run ends


class BatchOptions(PipelineOptions):
    """The batch job's flags for ``python -m pipelines.batch`` (Beam's own way to launch a job): the
    same declarations as ``usage-rating batch`` (``pipelines.cli.args.add_batch_flags``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_batch_flags(parser, required=False)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every rating job over CDR files is given (the batch job's ``BatchConfig``, the re-rate's
    ``RerateConfig``), checked once here: ValueError naming the flag, before anything runs."""
    input_glob: str
    reference_dir: str
    output_dir: str
    shards: int | None = None          # None: auto_shards() of the inputs
    batch_size: int = 65_536
    closed_through: str | None = None
    shuffle: str | None = None         # None: chosen by the runner (resolve_shuffle)
    catalog_uri: str | None = None     # the store's catalog when not the embedded OUT/catalog.db

    def __post_init__(self):
        if self.closed_through is not None:
            month_index(self.closed_through)
        check_shards(self.shards)
        if not 1 <= self.batch_size <= 10_000_000:
            raise ValueError(f"--batch-size must be between 1 and 10000000, got {self.batch_size}")
        if self.shuffle is not None and self.shuffle not in SHUFFLE_MODES:
            raise ValueError(f"--shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {self.shuffle!r}")

    def shuffle_dir(self, staging) -> str | None:
        """Where this run spills its shuffles: under ``staging``, or None for the runner's shuffle."""
        if self.shuffle is None:
            raise ValueError("shuffle_dir: resolve the shuffle first (resolve_shuffle)")
        return str(Path(staging, SHUFFLE_FOLDER)) if self.shuffle == "files" else None

    def with_shuffle_for(self, pipeline_args: list[str] | None):
        """This config with ``shuffle`` chosen for the runner of ``pipeline_args`` (``resolve_shuffle``)."""
        return dataclasses.replace(self, shuffle=resolve_shuffle(self.shuffle, pipeline_args))


LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")


def runs_on_this_machine(pipeline_args: list[str] | None) -> bool:
    """Whether every worker of the runner ``pipeline_args`` names runs on this machine, sharing its
    disk: the DirectRunner (the default), and the PortableRunner with its job server embedded and
    its workers in this process (``--environment_type=LOOPBACK``)."""
    options = PipelineOptions(pipeline_args or [])
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner.split(".")[-1] in LOCAL_RUNNERS:
        return True
    portable = options.view_as(PortableOptions)
    return runner.split(".")[-1] == "PortableRunner" and portable.job_endpoint == "embed" and \
        (portable.environment_type or "").upper() == "LOOPBACK"


def resolve_shuffle(shuffle: str | None, pipeline_args: list[str] | None) -> str:
    """``--shuffle`` for a run: ``files`` by default on a runner whose workers run on this machine
    (bounded memory on the DirectRunner), ``beam`` on any other; ``files`` given for another runner
    is refused, since its workers cannot read spill files of this machine's scratch folder."""
    local = runs_on_this_machine(pipeline_args)
    if shuffle is None:
        return "files" if local else "beam"
    if shuffle == "files" and not local:
        raise ValueError("--shuffle files spills shard data into the run's scratch folder on this machine, which "
                         "the workers of this runner cannot read: use --shuffle beam (the default for this runner), "
                         "the runner's own shuffle")
    return shuffle


@dataclasses.dataclass(frozen=True)
class BatchConfig(RunConfig):
    """The batch job's configuration: ``RunConfig``'s fields, from the command line or Beam options."""

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "BatchConfig":
        o = options.view_as(BatchOptions)
        missing = [f"--{name}" for name in ("input", "reference", "output") if getattr(o, name) is None]
        if missing:
            raise ValueError(f"missing required option(s): {', '.join(missing)}")
        return cls(input_glob=o.input, reference_dir=o.reference, output_dir=o.output,
                   shards=o.shards, batch_size=o.batch_size, closed_through=o.closed_through, shuffle=o.shuffle,
                   catalog_uri=o.catalog_uri)


MAX_SHARDS = 4096
MIN_AUTO_SHARDS = 16
RECORDS_PER_SHARD = 250_000
# Rough encoded size of one usage record, to estimate record counts from file sizes.
BYTES_PER_RECORD = {"avro": 45, "parquet": 30, "jsonl": 300}


def parse_shards(text: str) -> int | None:
    """``--shards`` value: a positive integer, or 'auto' (None)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--shards must be a number or 'auto', got {text!r}") from None


def check_shards(shards: int | None) -> None:
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"--shards must be between 1 and {MAX_SHARDS}, got {shards}")


def auto_shards(paths: list[str]) -> int:
    """Shards for these input files: a power of two with about ``RECORDS_PER_SHARD`` records each.

    A shard's events are what a worker holds in memory while rating and billing them, so the
    shard count grows with the input and memory does not. Record counts are estimated from file
    sizes (``estimate_records``); the result depends only on the inputs, so reruns name their
    files the same.
    """
    records = estimate_records(paths)
    shards = MIN_AUTO_SHARDS
    while records > shards * RECORDS_PER_SHARD and shards < MAX_SHARDS:
        shards *= 2
    return shards


def estimate_records(paths: list[str]) -> int:
    """Records in these input files, estimated from their sizes (``BYTES_PER_RECORD``)."""
    records = 0
    for metadata in FileSystems.match(paths):
        for m in metadata.metadata_list:
            records += m.size_in_bytes // BYTES_PER_RECORD[detect_format(m.path)]
    return records


# Disk a record takes in a run's staging folder at its fullest (just before publication), measured
# on 100,000 generated records in each input format: ~565 bytes of spill files with --shuffle files,
# ~40 bytes of outputs (rated events, charges, invoices, rejects: they become the store).
STAGING_BYTES_PER_RECORD = {"files": 640, "beam": 40}


def staging_bytes_estimate(paths: list[str], shuffle: str) -> tuple[int, int]:
    """``(records, bytes)``: the estimated records of these inputs and the staging disk they need."""
    records = estimate_records(paths)
    return records, records * STAGING_BYTES_PER_RECORD[shuffle]
