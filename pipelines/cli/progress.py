"""Progress of long commands, as one line on stderr.

``ProgressLine`` rewrites one line on a terminal; when stderr is not a terminal (CI, logs) it
prints a plain line, by default at most every 10 seconds. ``StagedRunProgress`` counts the records
a batch run has decoded and rated so far, from the files the run writes (scratch spills, uncommitted rated data files).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Spill files of the account shuffle (pipelines.rate): every decoded, valid record is written there
# once, as the run decodes its input files (and the store's events a run continues).
_DECODED_SPILLS = "by_account"
# The rated events of each account shard, as the run rates them (docs/outputs.md).
_RATED_PARTS = "warehouse/*/rated/data/*/{run_id}-part-*.parquet"   # in the embedded store's warehouse


class ProgressLine:
    """``with ProgressLine("rating", poll=...)``: a heartbeat thread writes ``label: poll() (N s)``
    every ``every_s`` seconds (default: 2 on a terminal, 10 otherwise); ``update(done, total)`` does
    it for work that reports its own progress."""

    def __init__(self, label: str, *, poll=None, every_s: float | None = None):
        self._label = label
        self._poll = poll          # optional callable -> str, sampled by a heartbeat thread
        self._every_s = every_s if every_s is not None else 2.0 if sys.stderr.isatty() else 10.0
        self._started = time.monotonic()
        self._last = 0.0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self._poll is not None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        return False

    def _write(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        line = f"{self._label}: {text} ({elapsed:.0f} s)"
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s and done < total:
            return
        self._last = now
        self._write(f"{done:,}/{total:,} records ({100 * done / max(total, 1):.0f}%)")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._every_s):
            self._write(self._poll())


@dataclasses.dataclass(frozen=True)
class RunProgress:
    decoded: int = 0   # valid records decoded from the input files
    rated: int = 0     # records rated (written as rated events)

    def text(self, total: int) -> str:
        """``'decoded 600,000 and rated 250,000 of 1,000,000 records'`` (``total``: records in the input files)."""
        return f"decoded {self.decoded:,} and rated {self.rated:,} of {total:,} records"


class StagedRunProgress:
    """What the batch run writing the store at ``output_dir`` has decoded and rated so far.

    Beam's DirectRunner hands back its result, and with it the job's metrics, only when the
    pipeline has finished, so progress is read from the files the run writes: rows in the spill
    files of its first shuffle in its scratch folder (decoded) and in its rated-event data files in
    the store's warehouse, not yet committed (rated). Only new or
    grown files are read, and only their batches' metadata (memory-mapped): sampling every few
    seconds costs the run nothing measurable. Counts never go down: once the run ends, its
    scratch folder is gone and the last counts stay. Needs ``--shuffle files`` (the demo's) for
    the decoded count; with ``--shuffle beam`` only rated records are counted.
    """

    def __init__(self, output_dir: str):
        from pipelines.options import SHUFFLE_FOLDER   # here, not at the top: ProgressLine needs no Beam
        from pipelines.staged_run import scratch_dir_for

        self._output = Path(output_dir)
        self._staging_pattern = scratch_dir_for(output_dir, "*")
        self._decoded_spills = Path(SHUFFLE_FOLDER, _DECODED_SPILLS)
        self._rows: dict[Path, tuple[int, int]] = {}   # file -> (size in bytes, rows) when last read
        self._last = RunProgress()

    def sample(self) -> RunProgress:
        runs = sorted(self._staging_pattern.parent.glob(self._staging_pattern.name))  # run ids sort by start time
        if runs:
            staging = runs[-1]
            decoded = sum(self._count(path, _stream_rows)
                          for path in (staging / self._decoded_spills).glob("*/*.arrow"))
            run_id = staging.name.split("-", 1)[1]
            rated = sum(self._count(path, _parquet_rows)
                        for path in self._output.glob(_RATED_PARTS.format(run_id=run_id)))
            self._last = RunProgress(max(decoded, self._last.decoded), max(rated, self._last.rated))
        return self._last

    def _count(self, path: Path, rows_of) -> int:
        try:
            size = path.stat().st_size
        except OSError:   # gone: the run moved on
            return self._rows.get(path, (0, 0))[1]
        cached = self._rows.get(path)
        if cached is None or cached[0] != size:
            cached = (size, rows_of(path))
            self._rows[path] = cached
        return cached[1]


def _stream_rows(path: Path) -> int:
    """Rows in an Arrow IPC stream file, up to the last complete batch (the writer may be mid-way)."""
    rows = 0
    try:
        with pa.memory_map(str(path)) as source, pa.ipc.open_stream(source) as reader:
            for batch in reader:
                rows += batch.num_rows
    except (pa.ArrowInvalid, OSError):
        pass
    return rows


def _parquet_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError):
        return 0
