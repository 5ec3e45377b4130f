"""Command-line options of the batch job: a PipelineOptions subclass and the frozen config it yields."""

from __future__ import annotations

import dataclasses

from apache_beam.options.pipeline_options import PipelineOptions

from rating.billing import month_index


class BatchOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="Glob of CDR files (.avro, .parquet, .jsonl).")
        parser.add_argument("--reference", help="Reference-data directory.")
        parser.add_argument("--output", help="Output directory (published atomically).")
        parser.add_argument("--shards", type=int, default=16,
                            help="Shards for deduplication and per-account rating; fixes output file names.")
        parser.add_argument("--batch_size", type=int, default=65_536, help="Rows per Arrow batch when decoding.")
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

    def __post_init__(self):
        if self.closed_through is not None:
            month_index(self.closed_through)
        if not 1 <= self.shards <= 4096:
            raise ValueError(f"--shards must be between 1 and 4096, got {self.shards}")
        if not 1 <= self.batch_size <= 10_000_000:
            raise ValueError(f"--batch_size must be between 1 and 10000000, got {self.batch_size}")

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "BatchConfig":
        o = options.view_as(BatchOptions)
        missing = [f"--{name}" for name in ("input", "reference", "output") if getattr(o, name) is None]
        if missing:
            raise ValueError(f"missing required option(s): {', '.join(missing)}")
        return cls(input_glob=o.input, reference_dir=o.reference, output_dir=o.output,
                   shards=o.shards, batch_size=o.batch_size, closed_through=o.closed_through)
