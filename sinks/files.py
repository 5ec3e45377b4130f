"""File sinks: Parquet parts and JSON documents written whole (temp file + rename).

A reader never sees a half-written file: every file is written beside its final name and renamed.
The output store (Iceberg tables) is ``sinks.iceberg``; its lock is ``sinks.lock``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute in write_part)
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sinks.iceberg.catalog import filesystem


def write_parquet(path: str | os.PathLike, table: pa.Table | pa.RecordBatch, *,
                  dictionary: bool | list[str] = True, statistics: bool | list[str] = True,
                  row_group_size: int | None = None) -> None:
    """Write ``table`` to ``path`` (parent folders created), atomically, zstd-compressed.

    ``path`` is a local path or a URI (``file://``, ``gs://``, ``s3://``: a store's data files,
    reached through ``sinks.iceberg.catalog.filesystem``). An object is uploaded whole from memory,
    so a failed write leaves no object (object stores publish an upload only once it completes).
    ``dictionary`` / ``statistics``: columns to dictionary-encode / to keep min-max statistics for
    (all by default); big tables write faster when high-cardinality columns are left out.
    ``row_group_size``: rows per row group (pyarrow's default when None); smaller groups let a
    reader filtering on a sorted column skip more by the groups' statistics.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    options = dict(compression="zstd", use_dictionary=dictionary, write_statistics=statistics,
                   row_group_size=row_group_size)
    if isinstance(path, str) and "://" in path:
        fs, path = filesystem(path)
        if not isinstance(fs, pafs.LocalFileSystem):
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, **options)
            with fs.open_output_stream(path) as out:
                out.write(buffer.getvalue())
            return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, **options)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, document: dict) -> None:
    """Write ``document`` as indented, key-sorted JSON, atomically (``path``: a local path or a URI,
    as for ``write_parquet``)."""
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if isinstance(path, str) and "://" in path:
        fs, path = filesystem(path)
        if not isinstance(fs, pafs.LocalFileSystem):
            with fs.open_output_stream(path) as out:
                out.write(text.encode())
            return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
