"""The Iceberg store (sinks/iceberg): a real SQLite catalog and warehouse in tmp_path, read back."""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pyarrow as pa
import pytest
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from cdr_schemas import charge_line_schema, rated_event_schema
from sinks.files import write_parquet
from sinks.iceberg import DATA_TABLES, ConcurrentCommitError, IcebergStore
from sinks.iceberg import store as store_module
from sinks.iceberg.store import RECOVER_AFTER

UTC = dt.timezone.utc


def rated_rows(cycle: str, accounts: list[str], charge_micros: int = 1_000, run: str = "r") -> pa.Table:
    """One voice event per account in ``cycle``; ``charge_micros`` tells versions apart."""
    start = dt.datetime.fromisoformat(f"{cycle}-05T10:00:00+00:00")
    rows = [dict(record_id=f"{run}-{cycle}-{account}", source="msc1", service="voice", served_msisdn="4470000001",
                 other_party="4470000002", destination_e164="4470000002", start_time=start, account_id=account,
                 plan_id="P1", plan_version=1, currency="GBP", service_cycle=cycle, zone="national", band="peak",
                 band_split=False, rate_id="R1", tier=0, raw_units=60, charged_units=60, free_units=0,
                 allowance_units=[], connect_fee_micros=0, charge_micros=charge_micros, rounding_nanos=0,
                 revision=1, input_file="in.avro", input_position=i)
            for i, account in enumerate(accounts)]
    return pa.Table.from_pylist(rows, schema=rated_event_schema())


def charge_rows(cycle: str, account: str, amount_micros: int) -> pa.Table:
    row = dict(account_id=account, billing_cycle=cycle, service_cycle=cycle, line_type="usage", service="voice",
               zone="national", band="peak", item=None, description="Voice national peak", quantity=1, unit="s",
               raw_units=60, charged_units=60, free_units=0, granted_units=0, left_units=0,
               amount_micros=amount_micros, amount_minor=amount_micros // 10_000, rounding_micros=0, tax_minor=0,
               currency="GBP", late=False)
    return pa.Table.from_pylist([row], schema=charge_line_schema())


def write(store: IcebergStore, table: str, data: pa.Table, name: str, partition: dict | None = None) -> str:
    """Write ``data`` where a worker would (the project's own Parquet writer) and return its URI."""
    uri = store.data_location(table, partition) + f"/{name}.parquet"
    write_parquet(uri, data)
    return uri


def commit_cycles(store: IcebergStore, run_id: str, cycles: dict[str, int], kind: str = "batch", overwrite=None,
                  exclusive: bool = False):
    """Commit rated events (accounts A1, A2) and one charge line per cycle, ``cycles`` = {cycle: charge}."""
    files = {"rated": [write(store, "rated", rated_rows(c, ["A1", "A2"], micros, run_id), f"{run_id}-part-0",
                             {"service_cycle": c}) for c, micros in cycles.items()],
             "charges": [write(store, "charges", charge_rows(c, "A1", 2 * micros), f"{run_id}-part-0",
                               {"billing_cycle": c}) for c, micros in cycles.items()]}
    return store.commit_run(run_id, kind, files, {"records_in": 2 * len(cycles)}, overwrite=overwrite,
                            exclusive=exclusive)


def charges_by_cycle(data: pa.Table) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for row in data.select(["service_cycle", "charge_micros"]).to_pylist():
        out.setdefault(row["service_cycle"], set()).add(row["charge_micros"])
    return out


@pytest.fixture
def store(tmp_path) -> IcebergStore:
    return IcebergStore.open(str(tmp_path / "out"), create=True)


def test_create_then_open_gives_empty_partitioned_tables(tmp_path):
    out = tmp_path / "out"
    IcebergStore.open(str(out), create=True)
    assert (out / "catalog.db").is_file() and (out / "warehouse").is_dir()

    store = IcebergStore.open(str(out), create=False)
    assert [(run.run_number, run.kind) for run in store.runs()] == [(0, "create")]
    assert store.read("rated").schema == rated_event_schema()
    assert store.read("rated").num_rows == 0
    rated: Table = store.table("rated")
    assert [(f.name, f.transform) for f in rated.spec().fields] == [("service_cycle", IdentityTransform())]
    assert [f.name for f in store.table("charges").spec().fields] == ["billing_cycle"]
    assert [f.name for f in store.table("invoices").spec().fields] == ["billing_cycle"]
    account_id = rated.schema().find_field("account_id").field_id
    assert [f.source_id for f in rated.sort_order().fields] == [account_id]
    assert store.data_location("rated", {"service_cycle": "2026-01"}).startswith(f"file://{out}/warehouse/")
    with pytest.raises(ValueError, match="expected \\{'service_cycle': value\\}"):
        store.data_location("rated")


def test_open_refuses_missing_store_old_layout_and_foreign_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a rating store"):
        IcebergStore.open(str(tmp_path / "nothing"), create=False)

    old = tmp_path / "old"
    (old / "rated" / "service_cycle=2026-01").mkdir(parents=True)
    (old / "_SUCCESS").write_text("{}")
    for create in (False, True):
        with pytest.raises(ValueError, match=f"--output {old} is an output folder in the old layout.*new --output"):
            IcebergStore.open(str(old), create=create)

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds files but no rating store"):
        IcebergStore.open(str(other), create=True)


def test_named_catalog_keeps_tables_under_output(tmp_path):
    catalog_uri = f"sqlite:///{tmp_path}/shared.db"
    store = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=True)
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    assert store.table("rated").location() == f"file://{tmp_path}/wh/rating/rated"
    assert not (tmp_path / "wh" / "catalog.db").exists()

    reopened = IcebergStore.open(str(tmp_path / "wh"), catalog_uri=catalog_uri, create=False)
    assert reopened.read("rated").num_rows == 2
    with pytest.raises(ValueError, match="lives at .*/wh/rating/.*not under .*/elsewhere"):
        IcebergStore.open(str(tmp_path / "elsewhere"), catalog_uri=catalog_uri, create=False)


def test_object_storage_output_needs_a_named_catalog():
    with pytest.raises(ValueError, match="gs://bucket/out is on object storage.*--catalog-uri"):
        IcebergStore.open("gs://bucket/out", create=True)


def test_two_runs_read_back_by_run_id_and_timestamp(store):
    first = commit_cycles(store, "run-1", {"2026-01": 1_000}).run
    second = commit_cycles(store, "run-2", {"2026-02": 3_000}).run

    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-02": {3_000}}
    assert charges_by_cycle(store.read("rated", as_of="run-1")) == {"2026-01": {1_000}}
    assert charges_by_cycle(store.read("rated", as_of=first.committed.isoformat())) == {"2026-01": {1_000}}
    assert store.read("charges", as_of="run-1")["amount_micros"].to_pylist() == [2_000]
    assert store.read("runs")["run_id"].to_pylist() == ["create", "run-1", "run-2"]
    assert store.read("runs", as_of="run-1")["run_id"].to_pylist() == ["create", "run-1"]
    assert second.control_totals == {"records_in": 2}
    assert store.runs()[-1] == second

    with pytest.raises(ValueError, match="--as-of nope: no run with that id"):
        store.read("rated", as_of="nope")
    with pytest.raises(ValueError, match="no run of .* was committed at or before it"):
        store.read("rated", as_of="2000-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="run id 'run-1' is already committed"):
        commit_cycles(store, "run-1", {"2026-03": 1})


def test_a_replayed_commit_is_a_no_op(store):
    """A committer asked to commit the same files again (a retried bundle) commits them once."""
    first = commit_cycles(store, "stream-0001", {"2026-01": 1_000}, kind="stream")
    snapshots = {table: store.table(table).current_snapshot().snapshot_id for table in DATA_TABLES}
    again = store.commit_run("stream-0001", "stream", {"rated": ["ignored: never read on a replay"]}, {},
                             replay=True)
    assert again.replayed and again.run == first.run and not first.replayed
    assert {table: store.table(table).current_snapshot().snapshot_id for table in DATA_TABLES} == snapshots
    assert [run.run_id for run in store.runs()] == ["create", "stream-0001"]
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}}
    with pytest.raises(ValueError, match=r"already committed .*\(run 1, stream\)"):
        store.commit_run("stream-0001", "batch", {}, {}, replay=True)   # another kind: not the same commit


def test_rerate_overwrites_one_cycle_and_keeps_the_previous_version(store):
    commit_cycles(store, "run-1", {"2026-01": 1_000, "2026-02": 2_000})
    commit_cycles(store, "rerate-1", {"2026-01": 1_500}, kind="rerate",
                  overwrite={"rated": "service_cycle == '2026-01'", "charges": "billing_cycle == '2026-01'"})

    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_500}, "2026-02": {2_000}}
    assert store.read("rated").num_rows == 4
    assert sorted(store.read("charges")["amount_micros"].to_pylist()) == [3_000, 4_000]
    assert charges_by_cycle(store.read("rated", as_of="run-1")) == {"2026-01": {1_000}, "2026-02": {2_000}}


def test_crash_before_the_run_log_is_invisible_and_recovered(store, monkeypatch):
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    before = store.read("rated")

    def crash(*args, **kwargs):  # the run log's commit (the only Table.append of a run) fails
        raise RuntimeError("killed before the run log")

    monkeypatch.setattr(Table, "append", crash)
    with pytest.raises(RuntimeError, match="killed"):
        commit_cycles(store, "run-2", {"2026-02": 9_000})
    monkeypatch.undo()

    crashed = store.table("rated").current_snapshot().snapshot_id
    assert crashed != store.runs()[-1].snapshot_ids["rated"]  # the table holds the crashed run's commit ...
    assert store.read("rated") == before  # ... which readers do not see
    assert [run.run_id for run in store.runs()] == ["create", "run-1"]
    assert {r.table for r in store.pending()} == {"rated", "charges"}

    rolled_back = store.recover(force=True)   # the caller holds the store's lock: no writer is live
    assert {(r.table, r.from_snapshot_id, r.run_id) for r in rolled_back} >= {("rated", crashed, "run-2")}
    assert store.pending() == []
    assert store.table("rated").current_snapshot().snapshot_id == store.runs()[-1].snapshot_ids["rated"]
    orphans = store.orphan_files()
    assert [u.rsplit("/", 2)[-2:] for u in orphans["rated"]] == [["service_cycle=2026-02", "run-2-part-0.parquet"]]
    assert orphans["invoices"] == [] and orphans["runs"] == []

    commit_cycles(store, "run-3", {"2026-03": 3_000})
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-03": {3_000}}


def crash_before_the_run_log(store: IcebergStore, run_id: str, cycles: dict[str, int], monkeypatch) -> None:
    """``run_id`` commits its tables, then dies before its run log row."""
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="killed"):
        patch.setattr(Table, "append", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        commit_cycles(store, run_id, cycles)


def later(monkeypatch, after: dt.timedelta = RECOVER_AFTER + dt.timedelta(minutes=1)) -> None:
    """From now on the store's clock reads ``after`` later than the wall clock."""
    wall_clock = store_module._now
    monkeypatch.setattr(store_module, "_now", lambda: wall_clock() + after)


def test_next_run_recovers_a_crashed_one_itself(store, monkeypatch):
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    crash_before_the_run_log(store, "run-2", {"2026-02": 9_000}, monkeypatch)

    result = commit_cycles(store, "run-3", {"2026-03": 3_000}, exclusive=True)   # as the lock holder
    assert {r.table for r in result.rolled_back} == {"rated", "charges"}
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-03": {3_000}}


def test_without_the_lock_a_crashed_half_commit_waits_for_the_grace_period(store, monkeypatch):
    commit_cycles(store, "run-1", {"2026-01": 1_000})
    crash_before_the_run_log(store, "run-2", {"2026-02": 9_000}, monkeypatch)

    # Just committed: it may be a live writer's (a shared catalog has no lock), so nothing is undone.
    with pytest.raises(ConcurrentCommitError, match="run run-3 was not committed to .*: run run-2 is committing "
                                                    "\\(if it crashed instead, the first run from .* on rolls its "
                                                    "half commit back\\).*running it again is safe") as refused:
        commit_cycles(store, "run-3", {"2026-03": 3_000})
    assert refused.value.other_run_id == "run-2"
    assert store.recover() == []
    assert {(r.table, r.run_id) for r in store.pending()} == {("rated", "run-2"), ("charges", "run-2")}

    later(monkeypatch)
    result = commit_cycles(store, "run-3", {"2026-03": 3_000})
    assert {(r.table, r.run_id) for r in result.rolled_back} == {("rated", "run-2"), ("charges", "run-2")}
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-03": {3_000}}
    assert [run.run_id for run in store.runs()] == ["create", "run-1", "run-3"]


# -- two writers on one store, interleaved: each IcebergStore object stands for another process --


def two_writers(tmp_path) -> tuple[IcebergStore, IcebergStore]:
    IcebergStore.open(str(tmp_path / "out"), create=True)
    return (IcebergStore.open(str(tmp_path / "out"), create=False),
            IcebergStore.open(str(tmp_path / "out"), create=False))


def assert_runs_intact(store: IcebergStore, run_ids: list[str], cycles: dict[str, int]) -> None:
    """The run log holds ``run_ids`` numbered 0, 1, ... and readers see exactly ``cycles``; nothing pending."""
    assert [(run.run_number, run.run_id) for run in store.runs()] == list(enumerate(run_ids))
    assert charges_by_cycle(store.read("rated")) == {cycle: {charge} for cycle, charge in cycles.items()}
    assert sorted(store.read("charges")["amount_micros"].to_pylist()) == sorted(2 * c for c in cycles.values())
    assert store.pending() == []


def test_a_writer_between_its_table_commits_and_its_run_log_is_not_rolled_back(tmp_path, monkeypatch):
    a, b = two_writers(tmp_path)
    append, seen = Table.append, {}

    def b_commits_meanwhile(table, *args, **kwargs):   # a's run log commit: a's tables are committed
        if "error" not in seen:
            seen["error"] = None
            with pytest.raises(ConcurrentCommitError) as refused:
                commit_cycles(b, "run-b", {"2026-03": 3_000})
            seen["error"] = refused.value
        return append(table, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Table, "append", b_commits_meanwhile)
        commit_cycles(a, "run-a", {"2026-02": 2_000})

    assert seen["error"].other_run_id == "run-a"
    assert "run run-a is committing" in str(seen["error"])
    assert_runs_intact(a, ["create", "run-a"], {"2026-02": 2_000})
    commit_cycles(b, "run-b", {"2026-03": 3_000})   # the loser runs again
    assert_runs_intact(b, ["create", "run-a", "run-b"], {"2026-02": 2_000, "2026-03": 3_000})


def test_a_table_commit_after_another_run_committed_fails_and_is_not_rebased(tmp_path, monkeypatch):
    a, b = two_writers(tmp_path)
    commit_table = IcebergStore._commit_table

    def b_commits_first(table, *args):   # a has read the store and loaded rated; b commits all of its run
        monkeypatch.undo()
        commit_cycles(b, "run-b", {"2026-03": 3_000})
        return commit_table(table, *args)

    monkeypatch.setattr(a, "_commit_table", b_commits_first)
    with pytest.raises(ConcurrentCommitError, match="run run-a was not committed .*: run run-b was committed "
                                                    "meanwhile. This run read the store as of run create; since "
                                                    "then rated has another commit") as refused:
        commit_cycles(a, "run-a", {"2026-02": 2_000})
    assert refused.value.other_run_id == "run-b"
    assert_runs_intact(a, ["create", "run-b"], {"2026-03": 3_000})
    commit_cycles(a, "run-a", {"2026-02": 2_000})
    assert_runs_intact(b, ["create", "run-b", "run-a"], {"2026-03": 3_000, "2026-02": 2_000})


def test_a_run_log_row_after_another_run_is_refused_and_its_tables_rolled_back(tmp_path, monkeypatch):
    a, b = two_writers(tmp_path)
    recover = a._recover

    def b_closes_meanwhile(*args, **kwargs):   # a has read the run log; b logs a run with no data
        b.close_cycles("close-b", "2026-01")
        return recover(*args, **kwargs)

    monkeypatch.setattr(a, "_recover", b_closes_meanwhile)
    with pytest.raises(ConcurrentCommitError, match="run close-b was committed meanwhile.*since then the run log "
                                                    "has a new run. None of this run's data files were committed"):
        commit_cycles(a, "run-a", {"2026-02": 2_000})
    monkeypatch.undo()

    assert_runs_intact(a, ["create", "close-b"], {})   # a's table commits were rolled back, not left pending
    assert [u.rsplit("/", 1)[-1] for u in a.orphan_files()["rated"]] == ["run-a-part-0.parquet"]
    commit_cycles(a, "run-a", {"2026-02": 2_000})
    assert_runs_intact(b, ["create", "close-b", "run-a"], {"2026-02": 2_000})


def test_reading_one_cycle_plans_only_its_files(store):
    commit_cycles(store, "run-1", {"2026-01": 1, "2026-02": 2, "2026-03": 3})
    extra = write(store, "rated", rated_rows("2026-02", ["A3"], 2, "run-2"), "run-2-part-0", {"service_cycle": "2026-02"})
    store.commit_run("run-2", "batch", {"rated": [extra]}, {})

    tasks = list(store.scan("rated", row_filter="service_cycle == '2026-02'").plan_files())
    assert sorted(t.file.file_path.rsplit("/", 1)[-1] for t in tasks) == ["run-1-part-0.parquet", "run-2-part-0.parquet"]
    assert len(list(store.scan("rated").plan_files())) == 4
    one_cycle = store.read("rated", row_filter="service_cycle == '2026-02'", selected_fields=["account_id"])
    assert sorted(one_cycle["account_id"].to_pylist()) == ["A1", "A2", "A3"]


def test_commit_refuses_bad_files_before_committing_anything(store, tmp_path):
    outside = tmp_path / "elsewhere.parquet"
    write_parquet(outside, rated_rows("2026-01", ["A1"]))
    with pytest.raises(ValueError, match="outside the table's location.*data_location"):
        store.commit_run("run-1", "batch", {"rated": [f"file://{outside}"]}, {})

    no_stats = store.data_location("rated", {"service_cycle": "2026-01"}) + "/part-0.parquet"
    write_parquet(urllib.parse.urlparse(no_stats).path, rated_rows("2026-01", ["A1"]), statistics=["record_id"])
    with pytest.raises(ValueError, match="no min/max statistics for its partition column service_cycle"):
        store.commit_run("run-1", "batch", {"rated": [no_stats]}, {})
    with pytest.raises(ValueError, match="run kind 'hourly'"):
        store.commit_run("run-1", "hourly", {}, {})

    assert [run.run_id for run in store.runs()] == ["create"]
    assert all(store.read(table).num_rows == 0 for table in DATA_TABLES)
