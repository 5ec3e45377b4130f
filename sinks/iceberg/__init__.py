"""The output store as Apache Iceberg tables (pyiceberg): every job reads and writes it.

``catalog`` places the store (output URI, embedded SQLite or named catalog), ``tables`` defines the
tables, ``store`` commits runs to them and reads them consistently. Layout: docs/outputs.md.
"""

from sinks.iceberg.store import CommitResult, ConcurrentCommitError, IcebergStore, Rollback, Run
from sinks.iceberg.tables import DATA_TABLES, NAMESPACE, RUNS, TABLES

__all__ = ["CommitResult", "ConcurrentCommitError", "IcebergStore", "Rollback", "Run",
           "DATA_TABLES", "NAMESPACE", "RUNS", "TABLES"]
