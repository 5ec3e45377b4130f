"""File sinks: Parquet parts and JSON documents written whole (temp file + rename), and the atomic
publication of a finished output directory.

A reader never sees a half-written file: every file is written beside its final name and renamed.
A run's outputs are built in a staging directory and published only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute in write_part)
import pyarrow.parquet as pq

SUCCESS_MARKER = "_SUCCESS"
CLOSED_CYCLES = "closed_cycles.json"   # {"closed_through": "YYYY-MM"}: invoices already issued


def write_parquet(path: str | os.PathLike, table: pa.Table | pa.RecordBatch, *,
                  dictionary: bool | list[str] = True, statistics: bool | list[str] = True) -> None:
    """Write ``table`` to ``path`` (parent folders created), atomically, zstd-compressed.

    ``dictionary`` / ``statistics``: columns to dictionary-encode / to keep min-max statistics for
    (all by default); big tables write faster when high-cardinality columns are left out.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary, write_statistics=statistics)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, document: dict) -> None:
    """Write ``document`` as indented, key-sorted JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def staging_dir_for(output: str | os.PathLike, run_id: str) -> Path:
    """Where a run builds its outputs before publication: a hidden sibling of ``output``."""
    output = Path(output).resolve()
    return output.parent / f".{output.name}.staging-{run_id}"


def publish(staging: str | os.PathLike, output: str | os.PathLike, manifest: dict) -> None:
    """Make ``staging`` the output: write the success marker, then swap directories by rename.

    A previous output at ``output`` is replaced only after the new one is complete; if anything
    fails before the swap, the previous output is untouched and the staging directory remains for
    inspection.
    """
    staging, output = Path(staging), Path(output).resolve()
    write_json(staging / SUCCESS_MARKER, manifest)
    previous = None
    if output.exists():
        previous = output.parent / f".{output.name}.previous-{uuid.uuid4().hex}"
        os.replace(output, previous)
    os.replace(staging, output)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def read_closed_through(output: str | os.PathLike) -> str | None:
    """The output store's last closed cycle (``closed_cycles.json``), or None."""
    path = Path(output) / CLOSED_CYCLES
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())["closed_through"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: expected {{\"closed_through\": \"YYYY-MM\"}}; fix or delete the file") from None
    return value


def close_cycles(output: str | os.PathLike, closed_through: str) -> None:
    """Mark every cycle up to ``closed_through`` as invoiced in the output store."""
    if not Path(output).is_dir():
        raise ValueError(f"{output}: no output store here; run usage-rating batch first")
    write_json(Path(output) / CLOSED_CYCLES, {"closed_through": closed_through})


def write_part(folder: str | os.PathLike, table: pa.Table, *, partition: str | None = None) -> list[Path]:
    """Write ``table`` as new uniquely named part files under ``folder`` (one per value of the
    ``partition`` column, Hive-style), for streaming outputs. Returns the paths written."""
    folder = Path(folder)
    stamp = f"{uuid.uuid1().hex}"
    if partition is None:
        path = folder / f"part-{stamp}.parquet"
        write_parquet(path, table)
        return [path]
    paths = []
    for value in sorted(set(table.column(partition).to_pylist())):
        part = table.filter(pa.compute.equal(table.column(partition), value))
        path = folder / f"{partition}={value}" / f"part-{stamp}.parquet"
        write_parquet(path, part)
        paths.append(path)
    return paths
