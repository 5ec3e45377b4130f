"""The output store's lock: one writer at a time on a local store.

``store_lock`` is held for the whole of a batch run, a re-rate, a close-cycle or a maintenance run; a
second writer fails at once, naming the lock file and the run that holds it. The lock file is
``P/.OUT.store.lock`` beside the store ``P/OUT``, and ``flock`` releases it when its process ends,
even by kill -9. It guards local stores only (``flock`` is local POSIX): writers of a store on object
storage rely on the catalog's optimistic commits (``sinks.iceberg.store``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Iterator


def _place(output: str | os.PathLike) -> Path:
    """The store's absolute local path (its lock is named after it)."""
    output = str(output)
    if output.startswith("file://"):
        output = urllib.parse.unquote(urllib.parse.urlparse(output).path)
    return Path(output).resolve()


def is_local(output: str | os.PathLike) -> bool:
    scheme = urllib.parse.urlparse(str(output)).scheme
    return scheme in ("", "file") or len(scheme) == 1


@contextlib.contextmanager
def store_lock(output: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the store's lock while ``what`` (e.g. "batch run RUNID") runs; ValueError naming the
    lock file and its holder when another run has it. The lock is released when the holder's
    process ends, however it ends, so a killed run never blocks the next one."""
    if not is_local(output):
        yield   # object storage: optimistic commits in the catalog, no lock file
        return
    out = _place(output)
    path = out.parent / f".{out.name}.store.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise ValueError(f"another run is writing the output store {out}: {holder} holds {path}; wait for "
                             "it to finish (the lock is released when that process ends), or use another "
                             "--output") from None
        started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {started})\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


