"""Compiled reference data cached on disk, keyed by everything it is computed from.

Loading and compiling a reference with a million subscriptions takes seconds per process, and a
run pays it in the submitting process and again in every worker process; the nightly run pays it
again for unchanged reference data. The cache stores the compiled result (pickle) under a key made
of the reference directory's bytes, the source of the ``rating`` and ``cdr_schemas`` packages and
the Python, NumPy and PyArrow versions; on load, the timezone files the reference uses must still
have the bytes they had when it was compiled. Anything that does not match, or does not load, is a
miss: the reference is compiled as if there were no cache.

Location: ``$USAGE_RATING_CACHE_DIR`` or ``~/.cache/usage-rating``, subfolder ``engines``; set the
variable to ``off`` to disable. The newest ``KEEP`` entries are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import os
import pickle
import platform
import uuid
import zoneinfo
from pathlib import Path

import numpy as np
import pyarrow as pa

from rating.compile import CompiledReference, timezone_names
from rating.reference.loader import gc_paused
from rating.reference.model import Account, Subscription
from rating.reference.remote import CACHE_ENV, cache_home

KEEP = 8
_PACKAGES = ("rating", "cdr_schemas")


def cache_dir() -> Path | None:
    return None if os.environ.get(CACHE_ENV) == "off" else cache_home() / "engines"


def load(reference_fingerprint: str) -> CompiledReference | None:
    """The cached compilation of a reference with this fingerprint, or None."""
    path = _path(reference_fingerprint)
    if path is None or not path.is_file():
        return None
    try:
        with open(path, "rb") as f, gc_paused():
            entry = pickle.load(f)
        compiled = _with_rows(entry)
        if entry["timezones"] != _timezone_fingerprint(timezone_names(compiled.reference)):
            return None
        os.utime(path)   # recently used: kept longest
        return compiled
    except Exception:   # a stale or damaged entry is a miss, never an error
        return None


def store(reference_fingerprint: str, compiled: CompiledReference) -> None:
    """Cache ``compiled``; a cache that cannot be written is skipped silently."""
    path = _path(reference_fingerprint)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {**_without_rows(compiled),
                 "timezones": _timezone_fingerprint(timezone_names(compiled.reference))}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        entries = sorted(path.parent.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        return


def _without_rows(compiled: CompiledReference) -> dict:
    """The compiled reference with its accounts and subscriptions as columns: pickle writes and
    reads a million small objects at ~4 us each, lists of strings and ints ~20x faster."""
    ref = compiled.reference
    bare = dataclasses.replace(compiled, reference=dataclasses.replace(ref, subscriptions=(), accounts={}))
    return {"compiled": bare, "accounts": _columns(Account, ref.accounts.values()),
            "subscriptions": _columns(Subscription, ref.subscriptions)}


def _with_rows(entry: dict) -> CompiledReference:
    with gc_paused():
        accounts = {a.account_id: a for a in map(Account, *entry["accounts"])}
        subscriptions = tuple(map(Subscription, *entry["subscriptions"]))
    compiled = entry["compiled"]
    return dataclasses.replace(compiled, reference=dataclasses.replace(
        compiled.reference, subscriptions=subscriptions, accounts=accounts))


def _columns(kind, rows) -> list[list]:
    rows = list(rows)
    return [[getattr(r, f.name) for r in rows] for f in dataclasses.fields(kind)]


def _path(reference_fingerprint: str) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    key = hashlib.sha256(f"{reference_fingerprint}|{_code_fingerprint()}".encode()).hexdigest()
    return directory / f"{key}.pickle"


@functools.cache
def _code_fingerprint() -> str:
    """The source of the packages that compile reference data, and the library versions."""
    digest = hashlib.sha256(f"{platform.python_version()}|{np.__version__}|{pa.__version__}".encode())
    root = Path(__file__).resolve().parent.parent
    for package in _PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _timezone_fingerprint(names: list[str]) -> str:
    """Bytes of the tz database files of ``names`` (where zoneinfo reads them from)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + _zone_bytes(name) + b"\0")
    return digest.hexdigest()


def _zone_bytes(name: str) -> bytes:
    for directory in zoneinfo.TZPATH:
        candidate = Path(directory, name)
        if candidate.is_file():
            return candidate.read_bytes()
    try:
        return importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return b"?"   # not found: still a stable key; compiling would fail on this name anyway
