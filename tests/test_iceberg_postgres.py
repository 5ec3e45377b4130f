"""The Iceberg store with its SQL catalog on a real PostgreSQL server (tests/postgres_server.py), the
warehouse in tmp_path. Each test gets its own database: a catalog holds one store."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy
from pyiceberg.table import Table

from sinks.iceberg import TABLES, CommitResult, ConcurrentCommitError, IcebergStore
from tests.postgres_server import create_database
from tests.test_iceberg_store import charges_by_cycle, commit_cycles, later

_databases = itertools.count()


@pytest.fixture
def catalog_uri(postgres_url) -> str:
    """A fresh, empty database on the session's server."""
    return create_database(postgres_url, f"catalog_{next(_databases)}")


def catalog_rows(catalog_uri: str) -> dict[str, str]:
    """What the server's catalog table holds, read with SQL: store table name -> metadata file."""
    engine = sqlalchemy.create_engine(catalog_uri)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(
                "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables "
                "WHERE catalog_name = 'usage_rating'")).all()
    finally:
        engine.dispose()
    return {f"{namespace}.{name}": location for namespace, name, location in rows}


def test_store_catalog_is_on_the_server_and_its_files_in_the_warehouse(tmp_path, catalog_uri):
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    commit_cycles(store, "run-1", {"2026-01": 1_000})

    assert store.catalog.engine.dialect.name == "postgresql"
    rows = catalog_rows(catalog_uri)
    assert sorted(rows) == sorted(f"rating.{table}" for table in TABLES)
    assert rows["rating.rated"] == store.table("rated").metadata_location
    assert all(location.startswith(f"file://{tmp_path}/wh/rating/") for location in rows.values())
    assert sorted(os.listdir(tmp_path / "wh")) == ["rating"]  # no catalog.db beside the tables
    assert store.read("rated").num_rows == 2


def test_runs_read_back_with_time_travel(tmp_path, catalog_uri):
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    first = commit_cycles(store, "run-1", {"2026-01": 1_000}).run
    commit_cycles(store, "rerate-1", {"2026-01": 1_500, "2026-02": 2_000}, kind="rerate",
                  overwrite={"rated": "service_cycle == '2026-01'", "charges": "billing_cycle == '2026-01'"})

    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_500}, "2026-02": {2_000}}
    assert charges_by_cycle(store.read("rated", as_of="run-1")) == {"2026-01": {1_000}}
    assert charges_by_cycle(store.read("rated", as_of=first.committed.isoformat())) == {"2026-01": {1_000}}
    assert store.read("charges", as_of="run-1")["amount_micros"].to_pylist() == [2_000]
    assert store.read("runs")["run_id"].to_pylist() == ["create", "run-1", "rerate-1"]


def test_another_process_opens_the_store_and_sees_the_committed_runs(tmp_path, catalog_uri):
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    commit_cycles(store, "run-2", {"2026-02": 3_000})

    reader = ("import json, sys\n"
              "from sinks.iceberg import IcebergStore\n"
              "store = IcebergStore.open(sys.argv[1], catalog_uri=sys.argv[2], create=False)\n"
              "print(json.dumps({'runs': [run.run_id for run in store.runs()],\n"
              "                  'latest': sorted(store.read('rated')['service_cycle'].to_pylist()),\n"
              "                  'run_1': sorted(store.read('rated', as_of='run-1')['service_cycle'].to_pylist())}))\n")
    done = subprocess.run([sys.executable, "-c", reader, str(tmp_path / "wh"), catalog_uri],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"runs": ["create", "run-1", "run-2"],
                                       "latest": ["2026-01", "2026-01", "2026-02", "2026-02"],
                                       "run_1": ["2026-01", "2026-01"]}


def test_crashed_run_is_invisible_and_rolled_back_by_recover(tmp_path, catalog_uri, monkeypatch):
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    monkeypatch.setattr(Table, "append", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):  # the run log's commit (its only append) fails
        commit_cycles(store, "run-2", {"2026-02": 9_000})
    monkeypatch.undo()

    # The crashed run's table commits are on the server, for every client: a fresh store sees them pending.
    reopened = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=False)
    assert {r.table for r in reopened.pending()} == {"rated", "charges"}
    assert charges_by_cycle(reopened.read("rated")) == {"2026-01": {1_000}}
    assert reopened.recover() == []   # young: maybe a live writer's (no lock guards a shared catalog) ...
    later(monkeypatch)
    assert {r.table for r in reopened.recover()} == {"rated", "charges"}   # ... until the grace period ends
    assert reopened.pending() == []
    assert [u.rsplit("/", 1)[-1] for u in reopened.orphan_files()["rated"]] == ["run-2-part-0.parquet"]

    commit_cycles(reopened, "run-3", {"2026-03": 3_000})
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-03": {3_000}}
    assert [run.run_id for run in store.runs()] == ["create", "run-1", "run-3"]


def test_a_second_warehouse_on_the_same_catalog_is_refused(tmp_path, catalog_uri):
    IcebergStore.open(str(tmp_path / "wh1"), catalog_uri=catalog_uri, create=True)
    for create in (True, False):
        with pytest.raises(ValueError, match=f"--output {tmp_path}/wh2: the catalog's table rating.* lives at "
                                             f"file://{tmp_path}/wh1/rating/.*not under file://{tmp_path}/wh2; "
                                             f"a catalog holds one store"):
            IcebergStore.open(str(tmp_path / "wh2"), catalog_uri=catalog_uri, create=create)
    assert not (tmp_path / "wh2").exists()
    assert all(location.startswith(f"file://{tmp_path}/wh1/") for location in catalog_rows(catalog_uri).values())


def _commit_concurrently(tmp_path, catalog_uri, monkeypatch) -> dict[str, CommitResult | Exception]:
    """Two writers (threads, each with its own store and catalog connections, as two processes would
    have) commit run-a (cycle 2026-02) and run-b (2026-03) at once: each waits at the run log until
    the other is there too (or has failed). Returns each run's result or error."""
    IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    writers = {run_id: IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=False)
               for run_id in ("run-a", "run-b")}
    arrived, this_thread, condition = [], threading.local(), threading.Condition()

    def arrive(*, wait: bool) -> None:
        with condition:
            this_thread.arrived = True
            arrived.append(threading.get_ident())
            condition.notify_all()
            if wait:
                condition.wait_for(lambda: len(arrived) == len(writers), timeout=60)

    append = Table.append

    def append_when_both_are_there(table, *args, **kwargs):  # the run log's commit is a run's only append
        if not getattr(this_thread, "arrived", False):
            arrive(wait=True)
        return append(table, *args, **kwargs)

    monkeypatch.setattr(Table, "append", append_when_both_are_there)
    results: dict[str, CommitResult | Exception] = {}

    def commit(run_id: str, cycle: str) -> None:
        try:
            results[run_id] = commit_cycles(writers[run_id], run_id, {cycle: 5_000})
        except Exception as error:  # noqa: BLE001 - the outcome under test
            results[run_id] = error
        finally:
            if not getattr(this_thread, "arrived", False):  # failed before the run log: do not hold the other
                arrive(wait=False)

    threads = [threading.Thread(target=commit, args=args) for args in (("run-a", "2026-02"), ("run-b", "2026-03"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    return results


def test_two_writers_at_once_never_lose_a_run_silently(tmp_path, catalog_uri, monkeypatch):
    results = _commit_concurrently(tmp_path, catalog_uri, monkeypatch)

    committed = [run_id for run_id, result in results.items() if isinstance(result, CommitResult)]
    refused = [run_id for run_id, result in results.items() if isinstance(result, ConcurrentCommitError)]
    assert len(committed) == 1 and len(refused) == 1, f"expected one commit and one refusal: {results}"
    [winner], [loser] = committed, refused
    assert results[loser].other_run_id == winner
    assert "None of this run's data files were committed" in str(results[loser])
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=False)
    cycle_of = {"run-a": "2026-02", "run-b": "2026-03"}
    assert [(run.run_number, run.run_id) for run in store.runs()] == [(0, "create"), (1, winner)]
    assert sorted(charges_by_cycle(store.read("rated"))) == [cycle_of[winner]]
    assert store.pending() == []

    commit_cycles(store, loser, {cycle_of[loser]: 5_000})   # the loser runs again: both runs are there
    assert [(run.run_number, run.run_id) for run in store.runs()] == [(0, "create"), (1, winner), (2, loser)]
    assert sorted(charges_by_cycle(store.read("rated"))) == ["2026-02", "2026-03"]
    assert store.pending() == []
