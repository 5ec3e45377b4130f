"""A one-line progress display on stderr that does nothing when stderr is not a terminal... mostly.

When stderr is not a terminal (CI, logs) it prints a plain line at most every 10 seconds.
"""

from __future__ import annotations

import sys
import threading
import time


class ProgressLine:
    def __init__(self, label: str, *, poll=None, every_s: float = 2.0):
        self._label = label
        self._poll = poll          # optional callable -> str, sampled by a heartbeat thread
        self._every_s = every_s if sys.stderr.isatty() else 10.0
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
