"""Reading a run's output store in tests: a table's rows, the latest run's control totals, file digests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pyarrow as pa

from sinks.iceberg import IcebergStore

_RUN_PREFIX = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}-")


def table(out: Path | str, name: str, **read) -> pa.Table:
    """Table ``name`` of the store at ``out`` as of its latest run (``read``: IcebergStore.read's keywords)."""
    return IcebergStore.open(str(out), create=False).read(name, **read)


def rows(out: Path | str, name: str, **read) -> list[dict]:
    return table(out, name, **read).to_pylist()


def latest_totals(out: Path | str) -> dict:
    """The control totals of the store's latest run, as its run-log row holds them."""
    return IcebergStore.open(str(out), create=False).runs()[-1].control_totals


def data_digests(out: Path | str) -> dict[str, str]:
    """SHA-256 of every data file of the store's data tables, keyed by its path under the warehouse
    with the run id taken out of the file name (run ids differ from run to run; contents must not).
    The run log is left out: it records when each run started and committed."""
    warehouse = Path(out) / "warehouse"
    digests = {}
    for path in sorted(warehouse.rglob("*.parquet")):
        if path.relative_to(warehouse).parts[:2] == ("rating", "runs"):
            continue
        key = str(path.relative_to(warehouse).with_name(_RUN_PREFIX.sub("", path.name)))
        digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
