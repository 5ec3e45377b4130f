"""File sinks: Parquet parts and JSON documents written whole (temp file + rename).

A reader never sees a half-written file: every file is written beside its final name and renamed.
The output store (Iceberg tables) is ``sinks.iceberg``; its lock is ``sinks.lock``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
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


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the file at ``path`` (a local path or a URI)."""
    if isinstance(path, str) and "://" in path:
        fs, path = filesystem(path)
        with fs.open_input_stream(path) as source:
            return source.readall()
    return Path(path).read_bytes()


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI of object storage (not a local path nor ``file://``)."""
    return isinstance(path, str) and "://" in path and not isinstance(filesystem(path)[0], pafs.LocalFileSystem)


def upload(local: str | os.PathLike, uri: str) -> None:
    """Copy the local file ``local`` to ``uri`` (object storage), whole."""
    fs, path = filesystem(uri)
    with open(local, "rb") as source, fs.open_output_stream(path) as out:
        while chunk := source.read(8 << 20):
            out.write(chunk)


_LOCAL_COPIES: dict[str, str] = {}   # URI -> this process's copy (``local_copy``)


def local_copy(path: str) -> str:
    """A local path holding the file at ``path``: ``path`` itself on local disk; for object storage,
    a copy in this machine's temporary folder, made once per process (a run's scratch files, which
    do not change under a URI once written, memory-mapped by each worker)."""
    if not is_remote(path):
        return path.removeprefix("file://") if isinstance(path, str) else str(path)
    if path not in _LOCAL_COPIES:
        fs, remote = filesystem(path)
        fd, copy = tempfile.mkstemp(prefix="usage-rating-", suffix="-" + Path(remote).name)
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(remote) as source:
            while chunk := source.read(8 << 20):
                out.write(chunk)
        _LOCAL_COPIES[path] = copy
        atexit.register(_remove, copy)
    return _LOCAL_COPIES[path]


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


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
