"""``generate(config)``: a reference-data directory, CDR files and a manifest of what was injected.

Layout under ``config.out_dir``::

    reference/          the operator's reference data (docs/reference-data.md)
    cdrs/cdrs-0000.avro ...   ``config.files`` time slices of the period, records time-sorted
    manifest.json       counts of everything written and injected (docs/generator.md)

Determinism: the reference data comes from ``SeedSequence(seed, spawn_key=(0,))`` and chunk ``i``
from ``SeedSequence(seed, spawn_key=(1, i))``; chunks are made and written in order, so the same
config gives byte-identical files and manifest. Memory is bounded by the chunk size (plus the pool of
cross-file duplicate candidates, a few times ``chunk_records * duplicate_rate`` rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cdr_schemas.writers import FILE_SUFFIXES, UsageFileWriter, encode_jsonl_lines, iso_utc_strings, usage_avro_schema
from pipelines.generator.anomalies import Duplicates, break_json_lines, corrupt, malformed_kinds
from pipelines.generator.config import GeneratorConfig
from pipelines.generator.population import SECOND_US, build_population
from pipelines.generator.records import SERVICE_SYMBOLS, RecordFactory
from pipelines.generator.reference import write_reference
from pipelines.generator.traffic import BIN_S, build_traffic, plan_files

MANIFEST_VERSION = 1
_MAKERS = max(1, min(2, os.cpu_count() or 1))    # threads making chunks (NumPy/Arrow release the GIL)
Progress = Callable[[int, int], None]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _rounded(position: int, rate: float) -> int:
    """Anomalies among the first ``position`` records: cumulative rounding keeps totals exact."""
    return int(np.floor(position * rate + 0.5))


def _prepare(out_dir: Path, suffix: str) -> tuple[Path, Path]:
    """Create ``reference/`` and ``cdrs/``, removing earlier generator output there (and only that)."""
    reference, cdrs = out_dir / "reference", out_dir / "cdrs"
    if reference.exists():
        if not (reference / "operator.yaml").exists():
            raise ValueError(f"{reference} exists but is not generated reference data (no operator.yaml); "
                             "choose another --out or remove it")
        shutil.rmtree(reference)
    if cdrs.exists():
        foreign = [p.name for p in cdrs.iterdir() if not (p.name.startswith("cdrs-") and p.suffix in FILE_SUFFIXES.values())]
        if foreign:
            raise ValueError(f"{cdrs} holds files the generator did not write ({', '.join(sorted(foreign)[:3])}); "
                             "choose another --out or remove them")
        shutil.rmtree(cdrs)
    reference.mkdir(parents=True)
    cdrs.mkdir(parents=True)
    return reference, cdrs


class _BackgroundWriter:
    """Encodes and writes chunks on one worker thread while the caller generates the next chunk.

    Arrow and NumPy release the GIL in their kernels, so generation and encoding overlap on two
    cores. At most ``depth`` chunks wait in the queue, which bounds memory. Writes stay in order.
    """

    def __init__(self, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as error:  # re-raised in the caller's thread by submit/close
                    self._error = error

    def submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def generate(config: GeneratorConfig, progress: Progress | None = None) -> dict:
    """Write reference data, CDR files and ``manifest.json`` under ``config.out_dir``; return the
    manifest. ``progress(records_done, records_total)`` is called in the caller's thread after each
    chunk is generated and handed to the writer thread (which writes at most two chunks behind)."""
    out_dir = Path(config.out_dir)
    suffix = FILE_SUFFIXES[config.fmt]
    reference_dir, cdr_dir = _prepare(out_dir, suffix)

    population = build_population(_rng(config.seed, 0), config.subscribers, config.start, config.days)
    reference_summary = write_reference(reference_dir, population, config.start, config.days)
    traffic = build_traffic(population, config.start, config.days)
    files = plan_files(traffic, config.records, config.files, config.chunk_records)
    factory = RecordFactory(population, traffic)

    kinds = malformed_kinds(config.fmt)
    malformed_total = dict.fromkeys(kinds, 0)
    duplicates_total = {"same_file": 0, "cross_file": 0}
    rated_by_service = dict.fromkeys((s.lower() for s in SERVICE_SYMBOLS), 0)
    per_chunk_duplicates = int(np.ceil(config.chunk_records * config.duplicate_rate))
    duplicates = Duplicates(per_chunk=2 * per_chunk_duplicates + 64, capacity=8 * per_chunk_duplicates + 256)
    fields = usage_avro_schema(config.schema_version)
    written = 0
    file_entries = []
    background = _BackgroundWriter()
    makers = ThreadPoolExecutor(max_workers=_MAKERS, thread_name_prefix="cdr-maker")
    ahead: deque = deque()     # chunks being made, in order, at most _MAKERS + 1 ahead

    plans = iter([(f, c) for f in files for c in f.chunks])

    def start_next() -> None:
        """Start making the next planned chunk on a maker thread."""
        item = next(plans, None)
        if item is None:
            return
        file_plan, chunk_plan = item
        rng = _rng(config.seed, 1, chunk_plan.index)
        lo, hi = chunk_plan.first_record, chunk_plan.first_record + chunk_plan.count
        n_duplicates = min(_rounded(hi, config.duplicate_rate) - _rounded(lo, config.duplicate_rate),
                           chunk_plan.count - 1)
        future = makers.submit(factory.make, rng, chunk_plan.bin_lo, chunk_plan.bin_hi,
                               chunk_plan.count - n_duplicates)
        ahead.append((file_plan, chunk_plan, rng, n_duplicates, future))

    try:
        for _ in range(_MAKERS + 1):
            start_next()
        for file_plan in files:
            path = cdr_dir / f"cdrs-{file_plan.index:04d}{suffix}"
            sync = hashlib.md5(f"usage-rating generator {config.seed} {file_plan.index}".encode()).digest()
            writer = UsageFileWriter(path, config.fmt, config.schema_version, avro_codec=config.avro_codec,
                                     sync_marker=sync)
            file_counts = {"records": 0, "same_file": 0, "cross_file": 0, "malformed": 0}
            for _ in file_plan.chunks:
                planned_file, chunk_plan, rng, n_duplicates, future = ahead.popleft()
                assert planned_file is file_plan
                chunk = factory.with_record_ids(future.result())
                start_next()
                lo, hi = chunk_plan.first_record, chunk_plan.first_record + chunk_plan.count
                n_malformed = _rounded(hi, config.malformed_rate) - _rounded(lo, config.malformed_rate)
                corruption = corrupt(rng, chunk, n_malformed, config.fmt)
                valid = np.ones(chunk.batch.num_rows, bool)
                valid[corruption.rows] = False
                for service, n in zip(rated_by_service, np.bincount(chunk.service[valid], minlength=3)):
                    rated_by_service[service] += int(n)
                cross_wanted = n_duplicates // 2 if file_plan.index > 0 else 0
                batch, position, same, cross = duplicates.inject(rng, chunk.batch, corruption, n_duplicates,
                                                                 cross_wanted)
                for kind, n in corruption.counts.items():
                    malformed_total[kind] += n
                duplicates_total["same_file"] += same
                duplicates_total["cross_file"] += cross
                file_counts["records"] += batch.num_rows
                file_counts["same_file"] += same
                file_counts["cross_file"] += cross
                file_counts["malformed"] += len(corruption.rows)
                written += batch.num_rows
                background.submit(_write_job(writer, batch, fields, position[corruption.broken_json]))
                if progress is not None:
                    progress(written, config.records)
            background.submit(writer.close)
            duplicates.end_file()
            start_us = traffic.start_us + file_plan.bin_lo * BIN_S * SECOND_US
            end_us = traffic.start_us + file_plan.bin_hi * BIN_S * SECOND_US
            times = iso_utc_strings(np.array([start_us, end_us])).to_pylist()
            file_entries.append({
                "path": f"cdrs/{path.name}", "records": file_counts["records"], "slice_start": times[0],
                "slice_end": times[1], "duplicates": {"same_file": file_counts["same_file"],
                                                      "cross_file": file_counts["cross_file"]},
                "malformed": file_counts["malformed"]})
    finally:
        makers.shutdown(cancel_futures=True)
        background.close()

    period_end = traffic.start_us + traffic.bins * BIN_S * SECOND_US
    period = iso_utc_strings(np.array([traffic.start_us, period_end])).to_pylist()
    n_duplicates = sum(duplicates_total.values())
    n_malformed = sum(malformed_total.values())
    settings = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                for k, v in dataclasses.asdict(config).items() if k != "out_dir"}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "seed": config.seed,
        "config": settings,
        "format": config.fmt,
        "schema_version": config.schema_version,
        "period": {"start": period[0], "end": period[1]},
        "reference": reference_summary,
        "files": file_entries,
        "records_written": written,
        "duplicates_injected": duplicates_total,
        "malformed_injected": malformed_total,
        "expected_duplicates": n_duplicates,
        "expected_rejected": dict(malformed_total),
        "expected_rated": written - n_duplicates - n_malformed,
        "expected_rated_by_service": rated_by_service,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_job(writer: UsageFileWriter, batch, fields, broken_rows: np.ndarray) -> Callable[[], None]:
    def job():
        if writer.fmt == "jsonl":
            lines = encode_jsonl_lines(batch, fields, newline=True)
            writer.write_jsonl_lines(break_json_lines(lines, broken_rows))
        else:
            writer.write_batch(batch)
    return job
