"""Command-line options of the batch job: a PipelineOptions subclass and the frozen config it yields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.shuffle import SHUFFLE_MODES
from rating.billing import month_index

SHUFFLE_FOLDER = "_shuffle"   # under the staging directory; deleted before publishing


class BatchOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="Glob of CDR files (.avro, .parquet, .jsonl).")
        parser.add_argument("--reference", help="Reference-data directory.")
        parser.add_argument("--output", help="Output directory (published atomically).")
        parser.add_argument("--shards", type=int, default=16,
                            help="Shards for deduplication and per-account rating; fixes output file names.")
        parser.add_argument("--batch_size", type=int, default=65_536, help="Rows per Arrow batch when decoding.")
        parser.add_argument("--shuffle", default="files", choices=SHUFFLE_MODES,
                            help="How shard data moves between stages: 'files' spills it to Arrow files under the "
                                 "staging directory (bounded memory on the DirectRunner), 'beam' sends it through "
                                 "the runner's shuffle (Dataflow, Flink, Spark).")
        parser.add_argument("--closed_through", default=None,
                            help="Cycles up to this YYYY-MM are closed: their late usage goes on the next invoice.")


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    input_glob: str
    reference_dir: str
    output_dir: str
    shards: int = 16
    batch_size: int = 65_536
    closed_through: str | None = None
    shuffle: str = "files"

    def __post_init__(self):
        if self.closed_through is not None:
            month_index(self.closed_through)
        if not 1 <= self.shards <= 4096:
            raise ValueError(f"--shards must be between 1 and 4096, got {self.shards}")
        if not 1 <= self.batch_size <= 10_000_000:
            raise ValueError(f"--batch_size must be between 1 and 10000000, got {self.batch_size}")
        if self.shuffle not in SHUFFLE_MODES:
            raise ValueError(f"--shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {self.shuffle!r}")

    def shuffle_dir(self, staging) -> str | None:
        """Where this run spills its shuffles: under ``staging``, or None for the runner's shuffle."""
        return str(Path(staging, SHUFFLE_FOLDER)) if self.shuffle == "files" else None

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "BatchConfig":
        o = options.view_as(BatchOptions)
        missing = [f"--{name}" for name in ("input", "reference", "output") if getattr(o, name) is None]
        if missing:
            raise ValueError(f"missing required option(s): {', '.join(missing)}")
        return cls(input_glob=o.input, reference_dir=o.reference, output_dir=o.output,
                   shards=o.shards, batch_size=o.batch_size, closed_through=o.closed_through, shuffle=o.shuffle)
