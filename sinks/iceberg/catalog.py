"""Where a store lives: the output location as a URI, its catalog, and what an output folder holds.

Every path a user gives goes through :func:`output_uri` once; everything after works on URIs and on
pyarrow's filesystem for that URI, so a warehouse on ``gs://`` or ``s3://`` takes the same path as a
local folder. The embedded catalog is pyiceberg's SQL catalog on ``OUT/catalog.db`` (SQLite) with the
tables under ``OUT/warehouse``; a catalog named by ``catalog_uri`` (any SQLAlchemy URL pyiceberg's
SQL catalog accepts: ``sqlite:///...``, ``postgresql+psycopg2://...``) keeps its tables under ``OUT``.

Object storage is configured the way the cloud SDKs are, by their standard environment variables and
nothing of ours: for ``s3://``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or any source of the
AWS default credential chain), ``AWS_REGION`` and, for an S3-compatible server (MinIO, a local
emulator), ``AWS_ENDPOINT_URL``. pyarrow's :func:`filesystem` honours them itself; pyiceberg's FileIO
reads the credentials through the same AWS SDK but takes the endpoint and region only as catalog
properties, which :func:`file_io_properties` fills from the same variables.
"""

from __future__ import annotations

import os
import urllib.parse

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io import S3_ENDPOINT, S3_REGION

CATALOG_NAME = "usage_rating"
CATALOG_FILE = "catalog.db"
WAREHOUSE_DIR = "warehouse"
OLD_LAYOUT_MARKERS = ("_SUCCESS", "rated")
OBJECT_STORE_SCHEMES = ("gs", "s3")


def output_uri(output: str) -> str:
    """``output`` as a URI: ``gs://`` and ``s3://`` as given, a local path as an absolute ``file://``."""
    scheme = urllib.parse.urlparse(output).scheme
    if scheme in OBJECT_STORE_SCHEMES:
        return output.rstrip("/")
    if scheme == "file":
        return output.rstrip("/")
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise ValueError(f"--output {output}: scheme {scheme}:// is not supported; "
                         f"use a local folder, gs://bucket/path or s3://bucket/path")
    return "file://" + os.path.abspath(output)


def is_object_store(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in OBJECT_STORE_SCHEMES


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri`` and the path within it: the one way this package (and
    ``sinks.files``) reaches a store's files. Object storage is configured by the environment."""
    return pafs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_empty_or_missing(uri: str) -> bool:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return True
    return not fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def make_dirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Every file under ``uri`` (recursively) as a URI of the same scheme; [] if it does not exist."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    prefix = urllib.parse.urlparse(uri).scheme + "://"
    return sorted(prefix + info.path for info in infos if info.type == pafs.FileType.File)


def delete_file(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.delete_file(path)


def delete_dir(uri: str) -> None:
    """Delete the folder at ``uri`` and everything under it; nothing when it does not exist."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def has_min_max(uri: str, column: str) -> bool:
    """Whether the Parquet file at ``uri`` has min/max statistics for ``column`` in every row group
    (read from its footer only)."""
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as source:
        metadata = pq.read_metadata(source)
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]  # leaf columns
    if column not in paths:
        return False
    index = paths.index(column)
    stats = [metadata.row_group(i).column(index).statistics for i in range(metadata.num_row_groups)]
    return all(s is not None and s.has_min_max for s in stats)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def is_old_layout(out_uri: str) -> bool:
    """A batch output of earlier releases (``_SUCCESS`` and ``rated/`` of plain Parquet) and no catalog."""
    return all(exists(join(out_uri, marker)) for marker in OLD_LAYOUT_MARKERS) and \
        not exists(join(out_uri, CATALOG_FILE))


def warehouse_of(out_uri: str, *, embedded: bool) -> str:
    """Where the tables' files go: ``OUT/warehouse`` with the embedded catalog, ``OUT`` otherwise."""
    return join(out_uri, WAREHOUSE_DIR) if embedded else out_uri


def embedded_catalog_uri(out_uri: str, output: str) -> str:
    """SQLAlchemy URL of ``OUT/catalog.db``; only a local output can hold a SQLite catalog."""
    if is_object_store(out_uri):
        raise ValueError(f"--output {output} is on object storage, where a SQLite catalog cannot live: "
                         f"name the catalog with --catalog-uri (a local sqlite:///PATH/catalog.db or a "
                         f"server such as postgresql+psycopg2://USER@HOST/DB)")
    return "sqlite:///" + urllib.parse.urlparse(join(out_uri, CATALOG_FILE)).path


# pyiceberg FileIO property <- the AWS SDK's environment variables, first one set wins. pyarrow's
# S3FileSystem built from a URI reads these itself; built from pyiceberg's properties it does not.
_S3_PROPERTIES_FROM_ENV = {
    S3_ENDPOINT: ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    S3_REGION: ("AWS_REGION", "AWS_DEFAULT_REGION"),
}


def file_io_properties() -> dict[str, str]:
    """The pyiceberg FileIO properties for object storage that the environment sets (see the module
    docstring): the S3 endpoint and region; {} when none of their variables is set."""
    properties = {}
    for prop, variables in _S3_PROPERTIES_FROM_ENV.items():
        value = next((os.environ[name] for name in variables if os.environ.get(name)), None)
        if value is not None:
            properties[prop] = value
    return properties


def open_catalog(catalog_uri: str, warehouse_uri: str) -> SqlCatalog:
    """pyiceberg's SQL catalog at ``catalog_uri`` (its tables created if missing), warehouse
    ``warehouse_uri``; its tables' files read and written with :func:`file_io_properties`."""
    return SqlCatalog(CATALOG_NAME, uri=catalog_uri, warehouse=warehouse_uri, **file_io_properties())
