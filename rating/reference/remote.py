"""Reference data on object storage (``s3://``, ``gs://``): read from a local copy made once per content.

The loader, the fingerprint and the engine cache read a reference directory as local files. For a
``--reference`` on object storage, ``local_reference`` copies its files into this machine's cache
(``$USAGE_RATING_CACHE_DIR``, else ``~/.cache/usage-rating``, subfolder ``reference``) under a
key of the URI and every object's path, size and modification time, so a changed object makes a
new copy; every process (the submitter, each worker) makes or finds its own. Credentials and
endpoints come from the cloud SDKs' standard environment variables, as for the store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs")
CACHE_ENV = "USAGE_RATING_CACHE_DIR"


def is_remote(reference: str | os.PathLike) -> bool:
    return urllib.parse.urlparse(str(reference)).scheme in REMOTE_SCHEMES


def cache_home() -> Path:
    """The project's cache folder on this machine: ``$USAGE_RATING_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/usage-rating`` or ``~/.cache/usage-rating`` (``off`` turns only the engine
    cache off, ``rating.engine_cache``; reference copies are needed to read the reference at all)."""
    configured = os.environ.get(CACHE_ENV)
    if configured and configured != "off":
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "usage-rating"


def local_reference(reference: str | os.PathLike) -> str:
    """``reference`` itself when it is a local directory; for ``s3://`` or ``gs://``, the path of a
    local copy of its files. ValueError naming the URI when it cannot be listed or holds no file."""
    reference = str(reference)
    if not is_remote(reference):
        return reference
    try:
        fs, root = pafs.FileSystem.from_uri(reference.rstrip("/"))
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as error:
        raise ValueError(f"--reference {reference}: cannot list it ({error}); check the URI and the "
                         f"credentials (the cloud SDK's environment variables)") from None
    files = sorted((info.path[len(root) + 1:], info.size, info.mtime_ns) for info in infos
                   if info.type == pafs.FileType.File)
    if not files:
        raise ValueError(f"--reference {reference}: no reference data there (no files); expected operator.yaml, "
                         f"plans/, zones/, accounts.csv, subscriptions.csv and tax_rates.csv")
    key = hashlib.sha256(repr((reference, files)).encode()).hexdigest()[:32]
    copy = cache_home() / "reference" / key
    if copy.is_dir():
        return str(copy)
    copy.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=copy.parent))
    try:
        for relative, _, _ in files:
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{root}/{relative}") as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        try:
            os.rename(staging, copy)   # atomic; another process may have made the same copy meanwhile
        except OSError:
            if not copy.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(copy)
