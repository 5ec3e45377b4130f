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

from synth.writers import FILE_SUFFIXES, UsageFileWriter, encode_jsonl_lines, iso_utc_strings, usage_avro_schema
from synth.anomalies import Duplicates, break_json_lines, corrupt, malformed_kinds
from synth.config import GeneratorConfig
from synth.population import SECOND_US, build_population
from synth.records import SERVICE_SYMBOLS, USAGE_TYPE_NAMES, RecordFactory
from synth.reference import write_reference
from synth.traffic import BIN_S, build_traffic, plan_files

MANIFEST_VERSION = 1
_MAKERS = max(1, min(2, os.cpu_count() or 1))    # threads making chunks (NumPy/Arrow release the GIL)
Progress = Callable[[int, int], None]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _rounded(position: int, rate: float) -> int:
    """Anomalies among the first ``position`` records: cumulative rounding keeps totals exact."""
    return int(np.floor(position * rate + 0.5))


def _prepare(out_dir: Path) -> tuple[Path, Path]:
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


class _Tally:
    """Everything injected and written so far, for the manifest; adds up one chunk at a time."""

    def __init__(self, fmt: str, types: tuple[str, ...] = SERVICE_SYMBOLS):
        self.written = 0
        self.duplicates = {"same_file": 0, "cross_file": 0}
        self.malformed = dict.fromkeys(malformed_kinds(fmt), 0)
        self.rated_by_service = dict.fromkeys((s.lower() for s in types), 0)

    def add(self, rows: int, same: int, cross: int, malformed: dict[str, int], rated_services: np.ndarray):
        self.written += rows
        self.duplicates["same_file"] += same
        self.duplicates["cross_file"] += cross
        for kind, n in malformed.items():
            self.malformed[kind] += n
        for service, n in zip(self.rated_by_service, np.bincount(rated_services, minlength=len(self.rated_by_service))):
            self.rated_by_service[service] += int(n)


def generate(config: GeneratorConfig, progress: Progress | None = None) -> dict:
    """Write reference data, CDR files and ``manifest.json`` under ``config.out_dir``; return the
    manifest. ``progress(records_done, records_total)`` is called in the caller's thread after each
    chunk is generated and handed to the writer thread (which writes at most two chunks behind)."""
    out_dir = Path(config.out_dir)
    reference_dir, cdr_dir = _prepare(out_dir)
    population = build_population(_rng(config.seed, 0), config.subscribers, config.start, config.days)
    reference_summary = write_reference(reference_dir, population, config.start, config.days)
    traffic = build_traffic(population, config.start, config.days)
    files = plan_files(traffic, config.records, config.files, config.chunk_records)
    declared_types = config.schema_version == "v3"   # MMS and API_CALLS need the v3 schema's usage_type
    factory = RecordFactory(population, traffic, declared_types)

    tally = _Tally(config.fmt, USAGE_TYPE_NAMES if declared_types else SERVICE_SYMBOLS)
    per_chunk_duplicates = int(np.ceil(config.chunk_records * config.duplicate_rate))
    duplicates = Duplicates(per_chunk=2 * per_chunk_duplicates + 64, capacity=8 * per_chunk_duplicates + 256)
    fields = usage_avro_schema(config.schema_version)
    file_entries = []
    background = _BackgroundWriter()
    makers = ThreadPoolExecutor(max_workers=_MAKERS, thread_name_prefix="cdr-maker")
    ahead: deque = deque()     # chunks being made, in order, at most _MAKERS + 1 ahead
    plans = iter([c for f in files for c in f.chunks])

    def start_next() -> None:
        """Start making the next planned chunk on a maker thread."""
        chunk_plan = next(plans, None)
        if chunk_plan is not None:
            rng = _rng(config.seed, 1, chunk_plan.index)
            n_duplicates = min(_anomalies(chunk_plan, config.duplicate_rate), chunk_plan.count - 1)
            future = makers.submit(factory.make, rng, chunk_plan.bin_lo, chunk_plan.bin_hi,
                                   chunk_plan.count - n_duplicates)
            ahead.append((chunk_plan, rng, n_duplicates, future))

    try:
        for _ in range(_MAKERS + 1):
            start_next()
        for file_plan in files:
            path = cdr_dir / f"cdrs-{file_plan.index:04d}{FILE_SUFFIXES[config.fmt]}"
            sync = hashlib.md5(f"usage-rating generator {config.seed} {file_plan.index}".encode()).digest()
            writer = UsageFileWriter(path, config.fmt, config.schema_version, avro_codec=config.avro_codec,
                                     sync_marker=sync)
            before = (tally.written, dict(tally.duplicates), sum(tally.malformed.values()))
            for _ in file_plan.chunks:
                chunk_plan, rng, n_duplicates, future = ahead.popleft()
                chunk = factory.with_record_ids(future.result())
                start_next()
                corruption = corrupt(rng, chunk, _anomalies(chunk_plan, config.malformed_rate), config.fmt)
                cross_wanted = n_duplicates // 2 if file_plan.index > 0 else 0
                batch, position, same, cross = duplicates.inject(rng, chunk.batch, corruption, n_duplicates,
                                                                 cross_wanted)
                tally.add(batch.num_rows, same, cross, corruption.counts,
                          np.delete(chunk.service, corruption.rows))
                background.submit(_write_job(writer, batch, fields, position[corruption.broken_json]))
                if progress is not None:
                    progress(tally.written, config.records)
            background.submit(writer.close)
            duplicates.end_file()
            file_entries.append(_file_entry(path, file_plan, traffic, tally, before))
    finally:
        makers.shutdown(cancel_futures=True)
        background.close()

    manifest = _manifest(config, traffic, reference_summary, file_entries, tally)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _anomalies(chunk_plan, rate: float) -> int:
    """Anomalies in a chunk: cumulative rounding over the run keeps the totals exact."""
    return _rounded(chunk_plan.first_record + chunk_plan.count, rate) - _rounded(chunk_plan.first_record, rate)


def _iso(*micros: int) -> list[str]:
    return iso_utc_strings(np.array(micros, dtype=np.int64)).to_pylist()


def _file_entry(path: Path, file_plan, traffic, tally: _Tally, before) -> dict:
    written, duplicates, malformed = before
    start, end = _iso(traffic.start_us + file_plan.bin_lo * BIN_S * SECOND_US,
                      traffic.start_us + file_plan.bin_hi * BIN_S * SECOND_US)
    return {"path": f"cdrs/{path.name}", "records": tally.written - written, "slice_start": start,
            "slice_end": end, "duplicates": {k: v - duplicates[k] for k, v in tally.duplicates.items()},
            "malformed": sum(tally.malformed.values()) - malformed}


def _manifest(config: GeneratorConfig, traffic, reference_summary: dict, file_entries: list, tally: _Tally) -> dict:
    start, end = _iso(traffic.start_us, traffic.start_us + traffic.bins * BIN_S * SECOND_US)
    n_duplicates = sum(tally.duplicates.values())
    settings = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                for k, v in dataclasses.asdict(config).items() if k != "out_dir"}
    return {
        "manifest_version": MANIFEST_VERSION,
        "seed": config.seed,
        "config": settings,
        "format": config.fmt,
        "schema_version": config.schema_version,
        "period": {"start": start, "end": end},
        "reference": reference_summary,
        "files": file_entries,
        "records_written": tally.written,
        "duplicates_injected": tally.duplicates,
        "malformed_injected": tally.malformed,
        "expected_duplicates": n_duplicates,
        "expected_rejected": dict(tally.malformed),
        "expected_rated": tally.written - n_duplicates - sum(tally.malformed.values()),
        "expected_rated_by_service": tally.rated_by_service,
    }


def _write_job(writer: UsageFileWriter, batch, fields, broken_rows: np.ndarray) -> Callable[[], None]:
    def job():
        if writer.fmt == "jsonl":
            lines = encode_jsonl_lines(batch, fields, newline=True)
            writer.write_jsonl_lines(break_json_lines(lines, broken_rows))
        else:
            writer.write_batch(batch)
    return job
