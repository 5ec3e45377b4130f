"""``usage-rating export``: one table of the store, as of a run, filtered by cycle and account, to a file.

The filters go to the Iceberg scan (``row_filter``), so reading one cycle reads only that cycle's
partition, and one account only the files whose ``account_id`` statistics can hold it. The file's
format follows the extension of ``--to``: ``.parquet`` keeps the store's Arrow types exactly;
``.csv`` keeps money as integers (micro-units or minor units, as the column name says), writes
timestamps as ISO 8601 in UTC (``2026-01-05T10:00:00.000000Z``), the list column
``rated.allowance_units`` as JSON text (``[{"allowance": "A", "units": 60}]``) and the raw bytes
of ``rejected.raw`` as base64.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import urllib.parse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan

from sinks.iceberg import catalog as cat
from sinks.iceberg.store import IcebergStore, Run
from sinks.iceberg.tables import PARTITION_COLUMN, RUNS, arrow_schema, check_table

FORMATS = {".parquet": "parquet", ".csv": "csv"}
# Tables without a cycle column: --cycle means the calendar month (UTC) of this column.
MONTH_COLUMN = {"rejected": "start_time", "duplicates": "start_time"}


@dataclasses.dataclass(frozen=True)
class Exported:
    rows: int
    table: str
    run: Run         # the run whose snapshot was read
    to: str


def output_format(to: str) -> str:
    """``parquet`` or ``csv`` from the extension of ``to``; ValueError naming --to and the choices."""
    for extension, name in FORMATS.items():
        if to.lower().endswith(extension):
            return name
    raise ValueError(f"--to {to}: unknown file extension; expected one of {', '.join(FORMATS)}")


def export_filter(table: str, cycle: str | None = None, account: str | None = None) -> BooleanExpression:
    """The scan filter of ``--cycle`` (YYYY-MM, already checked) and ``--account`` for ``table``.

    ``cycle`` filters the table's cycle column (rated: ``service_cycle``; charges, invoices:
    ``billing_cycle``), or for rejected and duplicates the calendar month (UTC) of ``start_time``
    (a rejected record without a start time is in no month). ValueError for a filter the table
    cannot take, naming it.
    """
    check_table(table)
    expression: BooleanExpression = AlwaysTrue()
    if table == RUNS and (cycle or account):
        raise ValueError("--table runs: the run log has no cycle or account; export it whole "
                         "(without --cycle and --account)")
    if cycle is not None:
        if table in PARTITION_COLUMN:
            expression = EqualTo(PARTITION_COLUMN[table], cycle)
        else:
            start = dt.datetime.strptime(cycle, "%Y-%m").replace(tzinfo=dt.timezone.utc)
            end = (start + dt.timedelta(days=32)).replace(day=1)
            column = MONTH_COLUMN[table]
            expression = And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))
    if account is not None:
        if "account_id" not in arrow_schema(table).names:
            raise ValueError(f"--account: table {table} has no account_id column; the tables with one are "
                             f"{', '.join(t for t in PARTITION_COLUMN)}")
        expression = And(expression, EqualTo("account_id", account))
    return expression


def export_table(store: IcebergStore, table: str, to: str, *, cycle: str | None = None,
                 account: str | None = None, as_of: str | None = None) -> Exported:
    """Write ``table`` as of the latest run (or the run ``as_of`` names), filtered, to the file ``to``
    (a local path, ``gs://`` or ``s3://``; the format from its extension). The file is written whole
    even when no row matches (the columns only)."""
    fmt = output_format(to)
    scheme = urllib.parse.urlparse(to).scheme
    if len(scheme) > 1 and scheme not in ("file",) + cat.OBJECT_STORE_SCHEMES:
        raise ValueError(f"--to {to}: scheme {scheme}:// is not supported; use a local path, gs:// or s3://")
    row_filter = export_filter(table, cycle, account)
    run = store.run_as_of(as_of)
    data = store.read(table, as_of=run.run_id, row_filter=row_filter)
    fs, path = cat.filesystem(cat.output_uri(to))
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as sink:
        if fmt == "parquet":
            pq.write_table(data, sink, compression="zstd")
        else:
            pacsv.write_csv(csv_columns(data), sink)
    return Exported(data.num_rows, table, run, to)


def csv_columns(data: pa.Table) -> pa.Table:
    """``data`` with every column CSV can hold as text: timestamps ISO 8601 (UTC, ``Z``), lists and
    structs JSON, binary base64; numbers (money in integer units) and strings unchanged."""
    columns = []
    for name, column in zip(data.column_names, data.columns):
        kind = column.type
        if pa.types.is_timestamp(kind):
            column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")  # %S keeps the microseconds
        elif pa.types.is_nested(kind):
            column = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in column.to_pylist()],
                              pa.string())
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            column = pa.array([None if v is None else base64.b64encode(v).decode("ascii")
                               for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.table(columns, names=data.column_names)
