"""``usage-rating export`` and ``usage-rating maintain`` on a real store (SQLite catalog in tmp_path), run
through the command line as a user would, then the files written and the store read back."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import urllib.parse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import Table

from cdr_schemas import duplicate_schema, rejected_schema
from pipelines.cli import main
from pipelines.cli.store_commands import TABLE_CHOICES
from sinks.iceberg import TABLES, IcebergStore
from sinks.iceberg import catalog as cat
from sinks.lock import store_lock
from tests.test_iceberg_store import commit_cycles, rated_rows, write

UTC = dt.timezone.utc


@pytest.fixture
def store(tmp_path) -> IcebergStore:
    return IcebergStore.open(str(tmp_path / "out"), create=True)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def data_files(store: IcebergStore, table: str) -> list[str]:
    """The data files the latest run's snapshot of ``table`` reads."""
    return sorted(task.file.file_path for task in store.scan(table).plan_files())


def money(store: IcebergStore, as_of: str | None = None) -> tuple:
    """Rows and money of every data table, as a reader sees them."""
    rated, charges = store.read("rated", as_of=as_of), store.read("charges", as_of=as_of)
    return (rated.num_rows, pc.sum(rated["charge_micros"]).as_py(), charges.num_rows,
            pc.sum(charges["amount_micros"]).as_py(), sorted(rated["record_id"].to_pylist()))


def commit_rejected_and_duplicates(store: IcebergStore, run_id: str) -> None:
    def at(day: str) -> dt.datetime:
        return dt.datetime.fromisoformat(f"{day}T23:30:00+00:00")

    rejected = pa.Table.from_pylist(
        [dict(reason="BAD_DURATION", detail="duration -5", record_id="x1", source="msc1", start_time=at("2026-01-31"),
              raw=b"\x00raw,1", input_file="in.avro", input_position=7),
         dict(reason="MALFORMED", detail="not Avro", record_id=None, source=None, start_time=None, raw=b"??",
              input_file="in.avro", input_position=8),
         dict(reason="BAD_DURATION", detail="duration -1", record_id="x2", source="msc1", start_time=at("2026-02-01"),
              raw=b"r2", input_file="in.avro", input_position=9)], schema=rejected_schema())
    duplicates = pa.Table.from_pylist(
        [dict(record_id="d1", source="msc1", start_time=at("2026-01-10"), input_file="b.avro", input_position=0,
              original_input_file="a.avro", original_input_position=3, identical=True)], schema=duplicate_schema())
    store.commit_run(run_id, "batch", {"rejected": [write(store, "rejected", rejected, f"{run_id}-part-0")],
                                       "duplicates": [write(store, "duplicates", duplicates, f"{run_id}-part-0")]}, {})


# -- export ------------------------------------------------------------------------------------


def test_export_choices_are_the_store_tables():
    assert TABLE_CHOICES == TABLES


def test_export_one_account_and_cycle_to_csv(store, tmp_path, capsys):
    commit_cycles(store, "run-1", {"2026-01": 1_250, "2026-02": 2_000})
    target = tmp_path / "exports" / "a1.csv"

    status, out, _ = cli(capsys, "export", "--output", store.output, "--table", "rated", "--to", str(target),
                         "--cycle", "2026-01", "--account", "A1")

    assert status == 0
    assert out == f"wrote 1 rows of rated to {target} (as of run run-1, #1, committed " \
                  f"{store.runs()[-1].committed.isoformat()})\n"
    [row] = list(csv.DictReader(target.open()))
    assert (row["account_id"], row["service_cycle"], row["record_id"]) == ("A1", "2026-01", "run-1-2026-01-A1")
    assert row["charge_micros"] == "1250" and row["connect_fee_micros"] == "0"   # integers, never 0.00125
    assert row["start_time"] == "2026-01-05T10:00:00.000000Z"
    assert json.loads(row["allowance_units"]) == []


def test_export_csv_writes_nested_and_binary_columns_as_text(store, tmp_path, capsys):
    rows = rated_rows("2026-01", ["A1"]).to_pylist()
    rows[0]["allowance_units"] = [{"allowance": "VOICE-100", "units": 60}]
    extra = write(store, "rated", pa.Table.from_pylist(rows, schema=store.read("rated").schema), "run-1-part-0",
                  {"service_cycle": "2026-01"})
    store.commit_run("run-1", "batch", {"rated": [extra]}, {})
    commit_rejected_and_duplicates(store, "run-2")

    assert cli(capsys, "export", "--output", store.output, "--table", "rated", "--to", str(tmp_path / "r.csv"))[0] == 0
    [row] = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert json.loads(row["allowance_units"]) == [{"allowance": "VOICE-100", "units": 60}]

    assert cli(capsys, "export", "--output", store.output, "--table", "rejected", "--to",
               str(tmp_path / "rej.csv"))[0] == 0
    raws = [base64.b64decode(r["raw"]) for r in csv.DictReader((tmp_path / "rej.csv").open())]
    assert sorted(raws) == [b"\x00raw,1", b"??", b"r2"]


def test_export_parquet_as_of_an_earlier_run_is_that_runs_rows(store, tmp_path, capsys):
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    commit_cycles(store, "rerate-1", {"2026-01": 1_500}, kind="rerate",
                  overwrite={"rated": "service_cycle == '2026-01'", "charges": "billing_cycle == '2026-01'"})

    status, out, _ = cli(capsys, "export", "--output", store.output, "--table", "charges", "--to",
                         str(tmp_path / "c.parquet"), "--as-of", "run-1")
    assert status == 0 and "wrote 1 rows of charges" in out and "as of run run-1, #1" in out
    written = pq.read_table(tmp_path / "c.parquet")
    assert written == store.read("charges", as_of="run-1")
    assert written["amount_micros"].to_pylist() == [2_000]
    assert written.schema.field("amount_micros").type == pa.int64()

    cli(capsys, "export", "--output", store.output, "--table", "runs", "--to", str(tmp_path / "runs.parquet"))
    assert pq.read_table(tmp_path / "runs.parquet")["run_id"].to_pylist() == ["create", "run-1", "rerate-1"]


def test_export_cycle_reads_only_that_partition(store, tmp_path, capsys):
    commit_cycles(store, "run-1", {"2026-01": 1_000, "2026-02": 2_000})
    for uri in data_files(store, "rated"):   # the other cycle's file is gone: reading it would fail
        if "service_cycle=2026-02" in uri:
            (tmp_path / urllib.parse.urlparse(uri).path).unlink()

    status, out, _ = cli(capsys, "export", "--output", store.output, "--table", "rated", "--to",
                         str(tmp_path / "jan.parquet"), "--cycle", "2026-01")
    assert status == 0 and out.startswith("wrote 2 rows of rated")
    assert set(pq.read_table(tmp_path / "jan.parquet")["service_cycle"].to_pylist()) == {"2026-01"}
    with pytest.raises(OSError):
        main(["export", "--output", store.output, "--table", "rated", "--to", str(tmp_path / "all.parquet")])


def test_export_cycle_of_rejected_and_duplicates_is_the_utc_month_of_start_time(store, tmp_path, capsys):
    commit_rejected_and_duplicates(store, "run-1")

    cli(capsys, "export", "--output", store.output, "--table", "rejected", "--to", str(tmp_path / "rej.parquet"),
        "--cycle", "2026-01")
    assert pq.read_table(tmp_path / "rej.parquet")["record_id"].to_pylist() == ["x1"]   # not 02-01, nor no time
    cli(capsys, "export", "--output", store.output, "--table", "duplicates", "--to", str(tmp_path / "dup.csv"),
        "--cycle", "2026-02")
    assert list(csv.DictReader((tmp_path / "dup.csv").open())) == []
    assert (tmp_path / "dup.csv").read_text().startswith('"record_id","source","start_time"')


@pytest.mark.parametrize("flags, message", [
    (["--table", "rated", "--to", "x.json"], "--to x.json: unknown file extension; expected one of .parquet, .csv"),
    (["--table", "rejected", "--to", "x.csv", "--account", "A1"],
     "--account: table rejected has no account_id column; the tables with one are rated, charges, invoices"),
    (["--table", "runs", "--to", "x.csv", "--cycle", "2026-01"], "--table runs: the run log has no cycle or account"),
    (["--table", "rated", "--to", "x.csv", "--cycle", "2026-1"], "cycle '2026-1': expected YYYY-MM"),
    (["--table", "rated", "--to", "x.csv", "--as-of", "nope"], "--as-of nope: no run with that id"),
])
def test_export_refuses_what_it_cannot_do(store, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(capsys, "export", "--output", store.output, *flags)
    assert status == 1 and out == ""
    assert err.startswith("usage-rating export: ") and message in err
    assert not (tmp_path / "x.csv").exists()


def test_the_polars_query_in_the_docs_reads_what_export_writes(store, tmp_path, capsys):
    import re
    import warnings
    from pathlib import Path

    commit_cycles(store, "run-1", {"2026-01": 1_000, "2026-02": 2_000})
    commit_cycles(store, "run-2", {"2026-01": 1_500})
    doc = (Path(__file__).parents[1] / "docs" / "outputs.md").read_text()
    snippet = re.search(r"\*\*Polars\*\*.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Polars suggests its polars_iceberg planner
        exec(snippet.replace('"/data/rating-store"', repr(store.output)), namespace)

    cli(capsys, "export", "--output", store.output, "--table", "rated", "--to", str(tmp_path / "a1.parquet"),
        "--cycle", "2026-01", "--account", "A1")
    exported = pq.read_table(tmp_path / "a1.parquet").select(["record_id", "start_time", "charge_micros"])
    assert namespace["one"].sort("record_id").to_dicts() == exported.sort_by("record_id").to_pylist()
    assert namespace["run"]["run_id"] == "run-2"


# -- maintain ----------------------------------------------------------------------------------


def small_files_store(store: IcebergStore, monkeypatch) -> dict:
    """Three runs adding small files to cycle 2026-01 (as streaming does), a close, a re-rate of
    2026-02, and a crashed run; returns what readers saw at each run."""
    commit_cycles(store, "run-1", {"2026-01": 1_000, "2026-02": 5})
    commit_cycles(store, "run-2", {"2026-01": 1_100})
    store.close_cycles("close-1", "2026-01")
    commit_cycles(store, "run-3", {"2026-01": 1_200})
    commit_cycles(store, "rerate-1", {"2026-02": 7}, kind="rerate",
                  overwrite={"rated": "service_cycle == '2026-02'", "charges": "billing_cycle == '2026-02'"})
    seen = {run.run_id: money(store, as_of=run.run_id) for run in store.runs()}
    monkeypatch.setattr(Table, "append", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        commit_cycles(store, "crashed", {"2026-03": 9_000})
    monkeypatch.undo()
    return seen


def test_maintain_compacts_and_expires_but_keeps_what_closed_invoices_need(store, capsys, monkeypatch):
    seen = small_files_store(store, monkeypatch)
    assert len([f for f in data_files(store, "rated") if "2026-01" in f]) == 3
    crashed = [f for fs in store.orphan_files().values() for f in fs]   # not yet: the crash is still pending
    assert crashed == [] and store.pending()

    status, out, err = cli(capsys, "maintain", "--output", store.output, "--retain-days", "0", "--compact")

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("rolled rated back") and lines[1].startswith("rolled charges back")
    assert lines[2].startswith("compacted data files (run ") and lines[2].endswith(": rated 3 -> 1, charges 3 -> 1")
    assert lines[3].startswith("expired ") and lines[4].startswith("deleted ")

    maintain_run = store.runs()[-1]
    assert maintain_run.kind == "maintain" and maintain_run.control_totals == {
        "compacted": {"rated": {"files_before": 3, "files_after": 1}, "charges": {"files_before": 3, "files_after": 1}}}
    assert money(store) == seen["rerate-1"]                           # same rows, same money
    assert len(data_files(store, "rated")) == 2                      # one file per partition
    assert all(f.endswith(f"{maintain_run.run_id}-compacted.parquet") or "rerate-1" in f
               for f in data_files(store, "rated"))
    rated = store.read("rated", row_filter="service_cycle == '2026-01'")
    assert rated["account_id"].to_pylist() == sorted(rated["account_id"].to_pylist())

    assert money(store, as_of="close-1") == seen["close-1"]          # what close-cycle invoiced stays readable
    with pytest.raises(ValueError, match="--as-of run-3: the snapshot of rated that run run-3 names was expired "
                                         "by usage-rating maintain"):
        store.read("rated", as_of="run-3")
    # Every file left is one a kept snapshot reads: none is an orphan the next batch run would delete.
    assert store.orphan_files() == {table: [] for table in TABLES}
    on_disk = _listed(store, "rated")
    kept = {task.file.file_path for run_id in ("close-1", maintain_run.run_id)
            for task in store.scan("rated", as_of=run_id).plan_files()}
    assert on_disk == kept                                           # the crashed run's files are gone too


def test_maintain_within_the_retention_only_drops_abandoned_snapshots(store, capsys, monkeypatch):
    seen = small_files_store(store, monkeypatch)
    store.recover(force=True)
    files_before = _listed(store, "rated")

    status, out, _ = cli(capsys, "maintain", "--output", store.output, "--retain-days", "30")

    assert status == 0
    assert out.splitlines()[0].startswith("expired 2 snapshot(s) older than 30 day(s) (rated 1, charges 1)")
    assert {run.run_id: money(store, as_of=run.run_id) for run in store.runs()} == seen   # all readable
    assert [run.kind for run in store.runs()][-1] == "rerate"                             # nothing committed
    assert _listed(store, "rated") == files_before   # the crashed run's file is younger than the retention


def test_maintain_waits_for_no_writer(store, capsys):
    with store_lock(store.output, "batch run 20260301T000000Z-0000beef"):
        status, _, err = cli(capsys, "maintain", "--output", store.output, "--retain-days", "7")
    assert status == 1 and "another run is writing the output store" in err and "batch run 20260301T" in err
    status, _, err = cli(capsys, "maintain", "--output", store.output, "--retain-days", "-1")
    assert status == 1 and "--retain-days -1: expected 0 or more days" in err


def _listed(store: IcebergStore, table: str) -> set[str]:
    """The data files of ``table`` on disk."""
    return set(cat.list_files(cat.join(store.table(table).location(), "data")))
