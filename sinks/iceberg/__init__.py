"""The output store as Apache Iceberg tables (pyiceberg): groundwork of issue 13, not yet used by the jobs.

``catalog`` places the store (output URI, embedded SQLite or named catalog), ``tables`` defines the
tables, ``store`` commits runs to them and reads them consistently. Layout: docs/outputs.md.
"""

from sinks.iceberg.store import CommitResult, IcebergStore, Rollback, Run
from sinks.iceberg.tables import DATA_TABLES, NAMESPACE, RUNS, TABLES

__all__ = ["CommitResult", "IcebergStore", "Rollback", "Run", "DATA_TABLES", "NAMESPACE", "RUNS", "TABLES"]
