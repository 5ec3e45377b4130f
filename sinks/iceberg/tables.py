"""The store's tables: names, Arrow schemas (from ``cdr_schemas``), partitioning, sort order, creation.

Every table lives in the namespace ``rating``. The Iceberg schemas are pyiceberg's conversion of the
project's Arrow schemas (field ids assigned at creation), so a column added to an ``.avsc`` reaches
the table definition here with no second list of columns.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table, TableProperties
from pyiceberg.transforms import IdentityTransform

from cdr_schemas import (
    charge_line_schema,
    duplicate_schema,
    invoice_summary_schema,
    rated_event_schema,
    rejected_schema,
)
from cdr_schemas.arrow_mapping import TIMESTAMP_US_UTC

NAMESPACE = "rating"
RUNS = "runs"
# The tables a run writes, in the order commit_run commits them; the run log is committed after them.
DATA_TABLES = ("rated", "charges", "invoices", "rejected", "duplicates")
TABLES = DATA_TABLES + (RUNS,)
RUN_KINDS = ("create", "batch", "rerate", "stream", "close", "maintain")  # maintain: compaction
# Every table's commits fail on a moved head instead of pyiceberg retrying them on the new head
# (its default): ``IcebergStore.commit_run`` checks what changed and decides.
COMMIT_NUM_RETRIES = TableProperties.COMMIT_NUM_RETRIES
NO_COMMIT_RETRIES = "0"


def snapshot_column(table: str) -> str:
    """Column of the run log naming ``table``'s snapshot after the run: ``rated_snapshot_id``, ..."""
    return f"{table}_snapshot_id"


def runs_schema() -> pa.Schema:
    """The run log: one row per committed run, naming every table's snapshot after that run.

    ``run_number`` counts runs from 0 (the store's creation) and orders them without trusting clocks;
    ``control_totals_json`` is the run's control totals as JSON text.
    """
    return pa.schema(
        [pa.field("run_number", pa.int64(), nullable=False),
         pa.field("run_id", pa.string(), nullable=False),
         pa.field("kind", pa.string(), nullable=False),
         pa.field("started", TIMESTAMP_US_UTC, nullable=False),
         pa.field("committed", TIMESTAMP_US_UTC, nullable=False)]
        + [pa.field(snapshot_column(table), pa.int64(), nullable=False) for table in DATA_TABLES]
        + [pa.field("control_totals_json", pa.string(), nullable=False)]
    )


_SCHEMAS = {
    "rated": rated_event_schema,
    "charges": charge_line_schema,
    "invoices": invoice_summary_schema,
    "rejected": rejected_schema,
    "duplicates": duplicate_schema,
    RUNS: runs_schema,
}
# Identity partition column of each partitioned table: one account's cycle reads one partition.
PARTITION_COLUMN = {"rated": "service_cycle", "charges": "billing_cycle", "invoices": "billing_cycle"}
SORT_COLUMN = {"rated": "account_id", "charges": "account_id", "invoices": "account_id"}


def arrow_schema(table: str) -> pa.Schema:
    check_table(table)
    return _SCHEMAS[table]()


def check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"table {table!r}: expected one of {', '.join(TABLES)}")
    return table


def identifier(table: str) -> str:
    return f"{NAMESPACE}.{check_table(table)}"


def create_table(catalog: Catalog, table: str) -> Table:
    """Create ``table`` with its schema, partition spec and sort order (commits not retried by
    pyiceberg: ``COMMIT_NUM_RETRIES``), plus one empty snapshot.

    The empty snapshot gives every table a snapshot from its creation on, so the run log can always
    name one and a crashed first run can be rolled back to it.
    """
    tx = catalog.create_table_transaction(identifier(table), schema=arrow_schema(table),
                                          properties={COMMIT_NUM_RETRIES: NO_COMMIT_RETRIES})
    if table in PARTITION_COLUMN:
        with tx.update_spec() as spec:
            spec.add_identity(PARTITION_COLUMN[table])
    if table in SORT_COLUMN:
        # Declares how files are sorted; pyiceberg does not sort files that add_files registers.
        with tx.update_sort_order() as order:
            order.asc(SORT_COLUMN[table], IdentityTransform())
    created = tx.commit_transaction()
    with created.transaction() as empty:
        with empty.update_snapshot().fast_append():
            pass
    return catalog.load_table(identifier(table))
