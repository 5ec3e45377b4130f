"""Options of ``usage-rating generate``, checked once."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

FORMATS = ("avro", "parquet", "jsonl")
SCHEMA_VERSIONS = ("v1", "v2", "v3")   # v3: some texts are MMS and some data sessions API-call records
AVRO_CODECS = ("null", "deflate")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    out_dir: Path
    subscribers: int = 20_000
    records: int = 1_000_000
    days: int = 30
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 1
    fmt: str = "avro"
    files: int = 8
    duplicate_rate: float = 0.001
    malformed_rate: float = 0.0005
    # Options of GeneratorConfig only (no CLI flag): see docs/generator.md.
    schema_version: str = "v1"          # usage schema the CDR files are written with (v3: with MMS and API_CALLS)
    avro_codec: str = "deflate"         # Avro block codec: "deflate" (level 1) or "null"
    chunk_records: int = 250_000        # records generated and written per step (bounds memory)

    def __post_init__(self):
        if self.subscribers < 10:
            raise ValueError(f"--subscribers must be at least 10, got {self.subscribers}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.records < 0:
            raise ValueError(f"--records must be >= 0, got {self.records}")
        if self.days < 1:
            raise ValueError(f"--days must be at least 1, got {self.days}")
        if self.fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.files < 1:
            raise ValueError(f"--files must be at least 1, got {self.files}")
        for name in ("duplicate_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 0.5), got {value}")
        if 2 * self.duplicate_rate + self.malformed_rate > 0.9:
            raise ValueError(f"--duplicate-rate {self.duplicate_rate} with --malformed-rate {self.malformed_rate} "
                             "leaves too few valid records to duplicate (each duplicate needs its own valid "
                             "original): keep 2 * duplicate_rate + malformed_rate <= 0.9")
        if self.schema_version not in SCHEMA_VERSIONS:
            raise ValueError(f"schema_version must be one of {', '.join(SCHEMA_VERSIONS)}, got {self.schema_version!r}")
        if self.avro_codec not in AVRO_CODECS:
            raise ValueError(f"avro_codec must be one of {', '.join(AVRO_CODECS)}, got {self.avro_codec!r}")
        if self.chunk_records < 1000:
            raise ValueError(f"chunk_records must be at least 1000, got {self.chunk_records}")
