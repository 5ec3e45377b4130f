"""The versioned output store: which version of each cycle is current, reading it, publishing a new one.

A batch run's output directory ``OUT`` is **version 1** of every cycle it rated. A re-rate of cycle
``C`` publishes ``OUT/rerates/C/vN/`` (N = 2, 3, ...) and then points ``OUT/CURRENT.json`` at it::

    OUT/CURRENT.json   {"cycles": {"2026-01": "rerates/2026-01/v3"}, "history": [...]}

A cycle absent from ``cycles`` is current in the base output. Versions are never modified or removed
once published, so every previous version stays readable. Layout and rules: docs/rerating.md.

Publishing is atomic twice over: the version is built in a hidden staging directory beside its final
name and renamed into place complete (with its ``_SUCCESS`` manifest), and only then is
``CURRENT.json`` replaced (temp file + rename). A reader sees the previous current version or the new
complete one, never a mix. ``store_lock`` (``sinks.publish``: the lock of every writer of the store)
serialises publishers; the next re-rate removes the staging directories that killed ones left.

Readers (``current_rated``, ``current_rejected``, ``current_charges``, ``current_invoices``) take
the current version of each cycle, so the invoice preview and later re-rates see re-rated data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from cdr_schemas import charge_line_schema, invoice_summary_schema, rated_event_schema, rejected_schema
from sinks import publish
from sinks.files import SUCCESS_MARKER, write_json
from sinks.publish import settle, store_lock  # noqa: F401  (store_lock: the re-rate's lock is the store's)

CURRENT = "CURRENT.json"
RERATES = "rerates"
BASE_VERSION = 1
_VERSION_DIR = re.compile(r"^v([0-9]+)$")
_CYCLE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


@dataclasses.dataclass(frozen=True)
class Version:
    """One version of one cycle: ``number`` 1 is the base output, ``path`` its directory."""
    cycle: str
    number: int
    path: Path

    @property
    def is_base(self) -> bool:
        return self.number == BASE_VERSION

    def rated_files(self) -> list[str]:
        return parquet_files(self.path / "rated" / f"service_cycle={self.cycle}")

    def rejected_files(self) -> list[str]:
        return parquet_files(self.path / "rejected")

    def charge_files(self) -> list[str]:
        return parquet_files(self.path / "charges")

    def invoice_files(self) -> list[str]:
        return parquet_files(self.path / "invoices")


def _check_cycle(cycle: str) -> str:
    if not isinstance(cycle, str) or not _CYCLE.match(cycle):
        raise ValueError(f"cycle {cycle!r}: expected YYYY-MM, e.g. 2026-01")
    return cycle


def parquet_files(folder: Path) -> list[str]:
    """Published Parquet files directly in ``folder`` (hidden temp files excluded), sorted."""
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith("."))


def require_store(output: str | os.PathLike) -> Path:
    """``output`` as a Path; ValueError when it holds no published batch output."""
    out = settle(output)
    if not (out / SUCCESS_MARKER).is_file():
        raise ValueError(f"{output}: no published output store here (no {SUCCESS_MARKER}); "
                         "run usage-rating batch --output there first")
    return out


def read_current(output: str | os.PathLike) -> dict:
    """The store's ``CURRENT.json`` (``{"cycles": {}, "history": []}`` when no cycle was re-rated)."""
    path = settle(output) / CURRENT
    if not path.exists():
        return {"cycles": {}, "history": []}
    try:
        document = json.loads(path.read_text())
        cycles = document["cycles"]
        if not isinstance(cycles, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: expected {{\"cycles\": {{\"YYYY-MM\": \"rerates/YYYY-MM/vN\"}}}}; "
                         "restore it from the store's history or delete it to fall back to the base output") from None
    document.setdefault("history", [])
    return document


def current_version(output: str | os.PathLike, cycle: str) -> Version:
    """The version of ``cycle`` readers should use now."""
    _check_cycle(cycle)
    out = Path(output)
    relative = read_current(out)["cycles"].get(cycle)
    if relative is None:
        return Version(cycle, BASE_VERSION, out)
    match = _VERSION_DIR.match(Path(relative).name)
    if not match or not (out / relative / SUCCESS_MARKER).is_file():
        raise ValueError(f"{out / CURRENT}: cycle {cycle} points at {relative!r}, which is not a published version")
    return Version(cycle, int(match.group(1)), out / relative)


def list_versions(output: str | os.PathLike, cycle: str) -> list[Version]:
    """Every published version of ``cycle``, oldest first (the base output when it rated the cycle)."""
    _check_cycle(cycle)
    out = Path(output)
    versions = []
    if (out / "rated" / f"service_cycle={cycle}").is_dir():
        versions.append(Version(cycle, BASE_VERSION, out))
    folder = out / RERATES / cycle
    if folder.is_dir():
        for child in folder.iterdir():
            match = _VERSION_DIR.match(child.name)
            if match and (child / SUCCESS_MARKER).is_file():
                versions.append(Version(cycle, int(match.group(1)), child))
    return sorted(versions, key=lambda v: v.number)


def current_versions(output: str | os.PathLike) -> dict[str, Version]:
    """The re-rated cycles and their current versions (cycles current in the base output are absent)."""
    return {cycle: current_version(output, cycle) for cycle in sorted(read_current(output)["cycles"])}


def read_table(files: list[str], schema: pa.Schema, filter=None, columns: list[str] | None = None) -> pa.Table:
    """Parquet ``files`` as one table of ``schema`` (empty when there are none), optionally filtered."""
    if not files:
        table = schema.empty_table()
    else:
        table = ds.dataset(files, format="parquet", schema=schema).to_table(filter=filter)
    return table.select(columns) if columns is not None else table


def current_rated(output: str | os.PathLike, cycle: str, columns: list[str] | None = None) -> pa.Table:
    """Rated events of service cycle ``cycle`` in its current version (``rated_event_schema()``)."""
    return read_table(current_version(output, cycle).rated_files(), rated_event_schema(), columns=columns)


def in_cycle_scope(start_time: pa.ChunkedArray | pa.Array, cycle: str) -> pa.Array:
    """Whether rejected records belong to ``cycle``: the calendar month (UTC) of their start_time.

    A rejected record may have no account (e.g. UNKNOWN_SUBSCRIBER), hence no cycle of its own; this
    rule gives each one with a start_time exactly one cycle. Records without start_time belong to none.
    """
    year, month = (int(part) for part in _check_cycle(cycle).split("-"))
    start = pa.scalar(dt.datetime(year, month, 1, tzinfo=dt.timezone.utc), pa.timestamp("us", tz="UTC"))
    end_month = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    end = pa.scalar(end_month, pa.timestamp("us", tz="UTC"))
    inside = pc.and_(pc.greater_equal(start_time, start), pc.less(start_time, end))
    return pc.fill_null(inside, False)


def current_rejected(output: str | os.PathLike, cycle: str) -> pa.Table:
    """Rejected records of ``cycle`` in its current version.

    A re-rated version holds its own scoped rejects; the base output holds every reject of the run,
    so its rejects of ``cycle`` are those ``in_cycle_scope``.
    """
    version = current_version(output, cycle)
    table = read_table(version.rejected_files(), rejected_schema())
    if version.is_base and table.num_rows:
        table = table.filter(in_cycle_scope(table.column("start_time"), cycle))
    return table


def all_rejected_files(output: str | os.PathLike) -> list[str]:
    """Rejected files of the base output and of every current re-rated version (to find recycled records)."""
    out = Path(output)
    files = parquet_files(out / "rejected")
    for version in current_versions(out).values():
        files += version.rejected_files()
    return files


def other_cycles_rated_files(output: str | os.PathLike, cycle: str) -> dict[str, list[str]]:
    """Current rated files of every cycle but ``cycle``: {cycle: files}."""
    out = Path(output)
    cycles = {p.name.split("=", 1)[1] for p in (out / "rated").glob("service_cycle=*") if p.is_dir()}
    cycles |= set(read_current(out)["cycles"])
    return {c: current_version(out, c).rated_files() for c in sorted(cycles - {cycle})}


def current_charges(output: str | os.PathLike, *, billing_cycle: str | None = None,
                    service_cycle: str | None = None) -> pa.Table:
    """Charge lines as they stand now: the base output's lines of cycles not re-rated, plus each
    re-rated cycle's current lines (which include its adjustments). Filter by billing and/or service cycle."""
    out = Path(output)
    versions = current_versions(out)
    schema = charge_line_schema()

    def where(extra):
        expression = extra
        if billing_cycle is not None:
            expression = (ds.field("billing_cycle") == _check_cycle(billing_cycle)) & expression
        if service_cycle is not None:
            expression = (ds.field("service_cycle") == _check_cycle(service_cycle)) & expression
        return expression

    everything = ds.scalar(True)
    base_filter = where(~ds.field("service_cycle").isin(list(versions)) if versions else everything)
    parts = [read_table(parquet_files(out / "charges"), schema, base_filter)]
    for cycle, version in versions.items():
        if service_cycle is None or service_cycle == cycle:
            parts.append(read_table(version.charge_files(), schema, where(ds.field("service_cycle") == cycle)))
    return pa.concat_tables(parts)


def current_invoices(output: str | os.PathLike, *, billing_cycle: str | None = None) -> pa.Table:
    """Invoice summaries as they stand now: the base output's, replaced per (account, billing cycle) by
    the summaries each re-rate recomputed for the invoices it touched, in publication order."""
    out = Path(output)
    schema = invoice_summary_schema()
    table = read_table(parquet_files(out / "invoices"), schema)
    for entry in read_current(out)["history"]:
        newer = read_table(parquet_files(out / entry["path"] / "invoices"), schema)
        if newer.num_rows:
            keep = pc.invert(pc.is_in(_invoice_keys(table), value_set=_invoice_keys(newer)))
            table = pa.concat_tables([table.filter(keep), newer])
    if billing_cycle is not None:
        table = table.filter(pc.equal(table.column("billing_cycle"), _check_cycle(billing_cycle)))
    return table.sort_by([("account_id", "ascending"), ("billing_cycle", "ascending")])


def _invoice_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(table.column("account_id"), table.column("billing_cycle"), "|").combine_chunks()


def version_staging_dir(output: str | os.PathLike, cycle: str, run_id: str) -> Path:
    """Where a re-rate of ``cycle`` builds its version: hidden, beside the final ``vN`` folders."""
    return Path(output).resolve() / RERATES / _check_cycle(cycle) / f".staging-{run_id}"


def next_version_number(output: str | os.PathLike, cycle: str) -> int:
    return max([v.number for v in list_versions(output, cycle)] + [BASE_VERSION]) + 1


def publish_version(output: str | os.PathLike, cycle: str, staging: str | os.PathLike, *, number: int,
                    manifest: dict) -> Version:
    """Rename a complete staging directory to ``rerates/C/vN`` and make it the current version of ``cycle``.

    The caller holds ``store_lock`` and chose ``number`` with ``next_version_number`` under it. Writes
    ``_SUCCESS`` (``manifest`` plus cycle, version and path) last inside the staging directory,
    renames it, then replaces ``CURRENT.json``.
    """
    out = Path(output).resolve()
    staging = Path(staging)
    if number != next_version_number(out, cycle):
        raise ValueError(f"version {number} of {cycle} is not the next one ({next_version_number(out, cycle)}): "
                         "another run published meanwhile; hold store_lock while re-rating")
    final = out / RERATES / cycle / f"v{number}"
    if final.exists():
        raise ValueError(f"{final} exists but is not a published version; remove it (a crashed run left it)")
    relative = f"{RERATES}/{cycle}/v{number}"
    write_json(staging / SUCCESS_MARKER, {**manifest, "cycle": cycle, "version": number, "path": relative})
    os.replace(staging, final)
    current = read_current(out)
    current["cycles"][cycle] = relative
    current["history"].append({"cycle": cycle, "version": number, "path": relative,
                               "run_id": manifest.get("run_id"),
                               "published_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    write_json(out / CURRENT, current)
    return Version(cycle, number, final)


def remove_leftovers(output: str | os.PathLike) -> list[str]:
    """What killed runs left, removed by the next writer (which holds ``store_lock``): the batch
    publication's (``sinks.publish.remove_leftovers``) and re-rates' staging directories. Returns
    what was done, as sentences."""
    folder = Path(output) / RERATES
    stagings = sorted(folder.glob("*/.staging-*")) if folder.is_dir() else []
    return publish.remove_leftovers(output) + [
        publish.remove_leftover(staging, f"an interrupted re-rate of {staging.parent.name}") for staging in stagings]


def discard(staging: str | os.PathLike) -> None:
    """Remove an unpublished staging directory, and ``rerates/C`` and ``rerates`` if that left them empty."""
    staging = Path(staging)
    shutil.rmtree(staging, ignore_errors=True)
    for folder in (staging.parent, staging.parent.parent):
        if folder.name != RERATES and folder.parent.name != RERATES:
            break
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
