"""The output store as a whole: publishing a batch run into it, and guarding it.

* **One writer at a time.** ``store_lock`` is held for the whole of a batch run, a re-rate or a
  close-cycle; a second writer fails at once, naming the lock file and the run that holds it.
* **Never silently replaced.** ``check_replaceable`` refuses a batch run whose inputs or reference
  data differ from those of the store already at ``--output`` (unless told to replace it).
* **The old store or the new one, whatever step a crash hits.** Beside the store ``P/OUT`` (in its
  parent folder ``P``) a run keeps::

      P/.OUT.store.lock          the lock (``flock``: released when its process ends, even by kill -9)
      P/.OUT.staging-RUNID/      the run's outputs while they are built
      P/.OUT.publish.json        the publication journal: the commit point
      P/.OUT.previous-RUNID/     the replaced store, between the swap and its removal

  ``publish`` writes ``_SUCCESS`` into the complete staging folder, then the journal (temp file +
  rename). Before the journal exists the store is the old one; once it exists the store is the new
  one, and what follows (rename ``OUT`` to previous, staging to ``OUT``, remove the journal, remove
  the previous store) is redone by ``settle`` if a crash stops it half-way. Every command finishes
  an interrupted publication before it reads the store (``settle``), and the next writer removes
  what killed runs left behind (``remove_leftovers``).

``closed_cycles.json`` (invoices issued up to a cycle) is part of the store and carried over by
each batch run. Layout: docs/outputs.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator

from sinks.files import SUCCESS_MARKER, write_json

CLOSED_CYCLES = "closed_cycles.json"   # {"closed_through": "YYYY-MM"}: invoices already issued


def _place(output: str | os.PathLike) -> Path:
    """Where the store is: the absolute path its siblings (lock, staging, journal) are named after."""
    return Path(output).resolve()


def _journal(out: Path) -> Path:
    return out.parent / f".{out.name}.publish.json"


def staging_dir_for(output: str | os.PathLike, run_id: str) -> Path:
    """Where a run builds its outputs before publication: a hidden sibling of ``output``."""
    out = _place(output)
    return out.parent / f".{out.name}.staging-{run_id}"


@contextlib.contextmanager
def store_lock(output: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the store's lock while ``what`` (e.g. "batch run RUNID") runs; ValueError naming the
    lock file and its holder when another run has it. The lock is released when the holder's
    process ends, however it ends, so a killed run never blocks the next one."""
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


def publish(staging: str | os.PathLike, output: str | os.PathLike, manifest: dict) -> None:
    """Make the complete ``staging`` folder the store at ``output``; ``manifest`` (with ``run_id``)
    becomes its ``_SUCCESS``.

    The journal written after ``_SUCCESS`` is the commit point. A failure before it removes the
    staging folder and leaves the previous store as it was; a crash after it is finished by
    ``settle``, so the store is the new one.
    """
    staging, out = Path(staging), _place(output)
    journal = {"run_id": manifest["run_id"], "staging": staging.name,
               "previous": f".{out.name}.previous-{manifest['run_id']}"}
    try:
        write_json(staging / SUCCESS_MARKER, manifest)
        write_json(_journal(out), journal)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _finish(out, journal)


def _finish(out: Path, journal: dict) -> None:
    """Carry out a committed publication from wherever it stopped: every step is safe to redo."""
    staging, previous = out.parent / journal["staging"], out.parent / journal["previous"]
    if staging.is_dir():
        if os.path.lexists(out):
            os.replace(out, previous)
        os.replace(staging, out)
    elif _run_id(out) != journal["run_id"]:
        raise ValueError(f"{_journal(out)}: the publication of run {journal['run_id']} was interrupted and its "
                         f"staging folder {staging} is gone; the previous store, if any, is {previous}: move it "
                         f"back to {out} (or remove it) and delete the journal")
    os.unlink(_journal(out))
    if os.path.lexists(previous):
        remove_leftover(previous)   # if it fails, the next run removes it


def remove_leftover(path: Path, left_by: str = "an interrupted run") -> str:
    """Remove ``path``, a folder or file that ``left_by`` left; a sentence saying so, or why it could
    not. A folder loses its ``_SUCCESS`` first: a half-removed store is never taken for one."""
    try:
        if path.is_dir() and not path.is_symlink():
            (path / SUCCESS_MARKER).unlink(missing_ok=True)
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        return f"could not remove {path}, left by {left_by} ({error.strerror}); remove it by hand"
    return f"removed {path.name}, left by {left_by}"


def _run_id(out: Path) -> str | None:
    try:
        return json.loads((out / SUCCESS_MARKER).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _siblings(out: Path, pattern: str) -> list[Path]:
    """The store's siblings whose names match ``pattern`` (a regular expression in which ``{}``
    stands for ``.OUT.``), sorted."""
    if not out.parent.is_dir():
        return []
    name = re.compile(pattern.replace("{}", re.escape(f".{out.name}.")))
    return sorted(p for p in out.parent.iterdir() if name.fullmatch(p.name))


def _interrupted(out: Path) -> bool:
    """Whether a crash left a publication to finish, or the store hidden by an earlier version's crash."""
    return _journal(out).exists() or (not os.path.lexists(out) and bool(_siblings(out, r"{}previous-.+")))


def _settle_locked(out: Path) -> list[str]:
    """``settle`` for a caller holding the lock; returns what it did, as sentences."""
    if _journal(out).exists():
        journal = json.loads(_journal(out).read_text())
        _finish(out, journal)
        return [f"finished publishing run {journal['run_id']}, which was interrupted after it committed"]
    if os.path.lexists(out):
        return []
    # Versions before the journal swapped by two renames: a crash between them hid the store here.
    hidden = [p for p in _siblings(out, r"{}previous-.+") if (p / SUCCESS_MARKER).is_file()]
    if len(hidden) > 1:
        raise ValueError(f"{out} is missing and {len(hidden)} replaced stores are beside it "
                         f"({', '.join(p.name for p in hidden)}), left by interrupted runs; rename the one to "
                         f"keep to {out.name}")
    if not hidden:
        return []
    os.replace(hidden[0], out)
    return [f"restored the store from {hidden[0].name}, where an interrupted run had left it"]


def settle(output: str | os.PathLike) -> Path:
    """``output`` as a Path, after finishing a publication that a crash interrupted (see the module
    docstring). Every reader of the store calls it first; when there is nothing to finish it only
    looks for the journal, and takes no lock."""
    out = _place(output)
    if _interrupted(out):
        with store_lock(out, "finishing an interrupted publication"):
            _settle_locked(out)
    return Path(output)


def remove_leftovers(output: str | os.PathLike) -> list[str]:
    """Settle the store, then remove the staging folders and replaced stores that killed runs left
    beside it (and a journal's temp file). The caller holds ``store_lock``, so none of them belongs
    to a live run. Returns what was done, and what could not be removed and why, as sentences."""
    out = _place(output)
    notes = _settle_locked(out)
    leftovers = _siblings(out, r"{}(staging|previous)-[0-9A-Za-z-]+|\.{}publish\.json\.[0-9a-f]+\.tmp")
    return notes + [remove_leftover(path) for path in leftovers]


def check_replaceable(output: str | os.PathLike, fingerprint: dict, *, replace: bool) -> None:
    """ValueError unless a batch run whose inputs have ``fingerprint`` may replace what is at ``output``.

    Nothing there, an empty folder, or a store published from the same ``fingerprint`` (a re-run:
    the same outputs) may be replaced; anything else only with ``replace`` (``--replace-output``).
    The message says what the store holds and what the options are. Call under ``store_lock``.
    """
    out = Path(output)
    if replace or not os.path.lexists(out) or (out.is_dir() and not any(out.iterdir())):
        return
    options = "write to a new --output; to replace it, pass --replace-output"
    if not out.is_dir():
        raise ValueError(f"--output {output} is a file, not an output store: {options}")
    if not (out / SUCCESS_MARKER).is_file():
        raise ValueError(f"--output {output} holds files but no published output store (no {SUCCESS_MARKER}); "
                         f"a batch run would replace all of it: {options}")
    manifest = _read_json(out / SUCCESS_MARKER)
    stored = manifest.get("fingerprint")
    if stored == fingerprint:
        return
    if not isinstance(stored, dict):
        why = ("it records no fingerprint of its inputs (an earlier version published it), so this run cannot "
               "tell whether they are the same")
    else:
        differ = [what for what, key in (("input files", "inputs"), ("reference data", "reference"))
                  if stored.get(key) != fingerprint[key]]
        why = f"this run's {' and '.join(differ)} differ"
    inputs = [str(path) for path in manifest.get("inputs") or []]
    listed = ", ".join(inputs[:3]) + (", ..." if len(inputs) > 3 else "")
    totals = _read_json(out / "control" / "totals.json")
    records = (f"{totals['records_in']:,} records in, {totals['rated']:,} rated"
               if isinstance(totals.get("records_in"), int) and isinstance(totals.get("rated"), int)
               else "record counts unknown")
    raise ValueError(f"--output {output} already holds the rated usage of batch run {manifest.get('run_id', '?')} "
                     f"({records}; {len(inputs)} input file(s): {listed}; reference {manifest.get('reference', '?')})"
                     f"; {why}, and replacing the store would discard that rated usage. To keep it, {options}")


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when it is missing or not a JSON object."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def read_closed_through(output: str | os.PathLike) -> str | None:
    """The output store's last closed cycle (``closed_cycles.json``), or None."""
    path = settle(output) / CLOSED_CYCLES
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())["closed_through"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: expected {{\"closed_through\": \"YYYY-MM\"}}; fix or delete the file") from None
    return value


def close_cycles(output: str | os.PathLike, closed_through: str) -> None:
    """Mark every cycle up to ``closed_through`` as invoiced in the output store (under its lock, so
    a batch run in progress cannot publish a store without the mark)."""
    if not settle(output).is_dir():
        raise ValueError(f"{output}: no output store here; run usage-rating batch first")
    with store_lock(output, f"close-cycle {closed_through}"):
        write_json(Path(output) / CLOSED_CYCLES, {"closed_through": closed_through})
