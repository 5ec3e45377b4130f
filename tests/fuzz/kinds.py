"""The fuzz kinds by name, and ``build_case``: one case from a kind and a seed.

``build_case(kind, seed, pool)`` is deterministic: the same kind, seed and operator give the same
bytes, so a failing case is replayed from the pair printed with it (``perf/fuzz.py --replay``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from tests.fuzz import file_kinds, record_kinds, structure
from tests.fuzz.cases import Case, Pool


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    build: Callable[..., Case]   # (kind, seed, rng, pool, n) -> Case
    sizes: tuple[int, int]       # records written per case: low, high (inclusive)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("jsonl_values", record_kinds.jsonl_values, (20, 400)),
    Kind("avro_values", record_kinds.avro_values, (20, 400)),
    Kind("avro_millis_values", record_kinds.avro_millis_values, (20, 400)),
    Kind("parquet_values", record_kinds.parquet_values, (20, 400)),
    Kind("pubsub_json_values", record_kinds.pubsub_json_values, (5, 120)),
    Kind("pubsub_datum_values", record_kinds.pubsub_datum_values, (5, 120)),
    *(Kind(name, file_kinds.avro_damaged(name), (30, 1200)) for name in (*structure.AVRO, "avro_datum")),
    Kind("parquet_corrupt", file_kinds.parquet_corrupt, (30, 1200)),
    Kind("parquet_schema", file_kinds.parquet_schema, (30, 600)),
    *(Kind(name, file_kinds.jsonl_damaged(name), (30, 800)) for name in ("jsonl_truncate", "jsonl_bytes",
                                                                         "jsonl_gzip")),
    Kind("pubsub_container", file_kinds.pubsub_container, (20, 600)),
    Kind("pubsub_attributes", file_kinds.pubsub_attributes, (5, 60)),
)}


def case_seed(run_seed: int, index: int) -> int:
    """The seed of case ``index`` of a run with ``run_seed`` (the number printed for replay)."""
    return int(np.random.default_rng([run_seed, index]).integers(2**31))


def build_case(kind: str, seed: int, pool: Pool, records: int | None = None) -> Case:
    """Case ``seed`` of ``kind``; ``records`` written when given, else a size drawn from the kind's range."""
    if kind not in KINDS:
        raise ValueError(f"unknown fuzz kind {kind!r}; expected one of {', '.join(KINDS)}")
    spec = KINDS[kind]
    rng = np.random.default_rng(seed)
    n = records if records is not None else int(rng.integers(spec.sizes[0], spec.sizes[1] + 1))
    return spec.build(kind, seed, rng, pool, n)
