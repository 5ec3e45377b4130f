"""The Iceberg store with its warehouse on object storage: a real S3-compatible server (moto) on
loopback, configured only by the AWS SDK's environment variables (the ``s3_bucket`` fixture), the
catalog a SQLite file in tmp_path. What lands in the bucket is listed through the server itself."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import Table

from sinks.files import write_parquet
from sinks.iceberg import IcebergStore
from tests.object_store_server import client, list_keys
from tests.test_iceberg_store import charges_by_cycle, commit_cycles, later, rated_rows


@pytest.fixture
def catalog_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/catalog.db"


def test_runs_commit_to_the_bucket_and_read_back_with_time_travel(s3_bucket, s3_endpoint, catalog_uri, tmp_path):
    store = IcebergStore.open(f"s3://{s3_bucket}/store", catalog_uri=catalog_uri, create=True)
    assert store.table("rated").location() == f"s3://{s3_bucket}/store/rating/rated"
    first = commit_cycles(store, "run-1", {"2026-01": 1_000}).run
    commit_cycles(store, "rerate-1", {"2026-01": 1_500, "2026-02": 2_000}, kind="rerate",
                  overwrite={"rated": "service_cycle == '2026-01'", "charges": "billing_cycle == '2026-01'"})

    keys = list_keys(s3_endpoint, s3_bucket)
    data = [key for key in keys if "/data/" in key and "/runs/" not in key]
    assert data == sorted([
        "store/rating/charges/data/billing_cycle=2026-01/rerate-1-part-0.parquet",
        "store/rating/charges/data/billing_cycle=2026-01/run-1-part-0.parquet",
        "store/rating/charges/data/billing_cycle=2026-02/rerate-1-part-0.parquet",
        "store/rating/rated/data/service_cycle=2026-01/rerate-1-part-0.parquet",
        "store/rating/rated/data/service_cycle=2026-01/run-1-part-0.parquet",
        "store/rating/rated/data/service_cycle=2026-02/rerate-1-part-0.parquet",
    ])
    assert sum(key.startswith("store/rating/runs/data/") for key in keys) == 3  # create, run-1, rerate-1
    assert any(key.startswith("store/rating/runs/metadata/") and key.endswith(".metadata.json") for key in keys)
    assert all(key.startswith("store/rating/") for key in keys)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["catalog.db"]  # nothing else local
    body = client(s3_endpoint).get_object(Bucket=s3_bucket, Key=data[-1])["Body"].read()
    assert pq.read_table(pa.BufferReader(body))["charge_micros"].to_pylist() == [2_000, 2_000]

    reopened = IcebergStore.open(f"s3://{s3_bucket}/store", catalog_uri=catalog_uri, create=False)
    assert charges_by_cycle(reopened.read("rated")) == {"2026-01": {1_500}, "2026-02": {2_000}}
    assert sorted(reopened.read("charges")["amount_micros"].to_pylist()) == [3_000, 4_000]
    assert charges_by_cycle(reopened.read("rated", as_of="run-1")) == {"2026-01": {1_000}}
    assert charges_by_cycle(reopened.read("rated", as_of=first.committed.isoformat())) == {"2026-01": {1_000}}
    assert reopened.read("runs")["run_id"].to_pylist() == ["create", "run-1", "rerate-1"]


def test_crashed_run_is_recovered_and_its_files_listed_as_orphans(s3_bucket, s3_endpoint, catalog_uri,
                                                               monkeypatch):
    store = IcebergStore.open(f"s3://{s3_bucket}/store", catalog_uri=catalog_uri, create=True)
    commit_cycles(store, "run-1", {"2026-01": 1_000})

    def crash(*args, **kwargs):  # the run log's commit (the only Table.append of a run) fails
        raise RuntimeError("killed before the run log")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="killed"):
        patch.setattr(Table, "append", crash)
        commit_cycles(store, "run-2", {"2026-02": 9_000})

    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}}  # the crashed run is invisible
    later(monkeypatch)   # no lock on object storage: a half commit is taken for a crash after the grace period
    assert {rollback.table for rollback in store.recover()} == {"rated", "charges"}
    assert store.pending() == []
    orphans = store.orphan_files()
    crashed = {"rated": "rated/data/service_cycle=2026-02", "charges": "charges/data/billing_cycle=2026-02"}
    for table, folder in crashed.items():
        assert orphans[table] == [f"s3://{s3_bucket}/store/rating/{folder}/run-2-part-0.parquet"]
        assert f"store/rating/{folder}/run-2-part-0.parquet" in list_keys(s3_endpoint, s3_bucket)
    assert orphans["invoices"] == [] and orphans["runs"] == []

    commit_cycles(store, "run-3", {"2026-03": 3_000})
    assert charges_by_cycle(store.read("rated")) == {"2026-01": {1_000}, "2026-03": {3_000}}


def test_object_storage_store_needs_a_named_catalog_and_an_empty_warehouse(s3_bucket, s3_endpoint, catalog_uri):
    for create in (True, False):
        with pytest.raises(ValueError, match=f"--output s3://{s3_bucket}/store is on object storage, where a "
                                             f"SQLite catalog cannot live: name the catalog with --catalog-uri"):
            IcebergStore.open(f"s3://{s3_bucket}/store", create=create)
    assert list_keys(s3_endpoint, s3_bucket) == []

    client(s3_endpoint).put_object(Bucket=s3_bucket, Key="other/notes.txt", Body=b"x")
    with pytest.raises(ValueError, match="holds files but no rating store"):
        IcebergStore.open(f"s3://{s3_bucket}/other", catalog_uri=catalog_uri, create=True)
    assert list_keys(s3_endpoint, s3_bucket) == ["other/notes.txt"]


def test_write_parquet_takes_a_uri_on_object_storage_or_local_disk(s3_bucket, s3_endpoint, tmp_path):
    data = rated_rows("2026-01", ["A1", "A2"])
    write_parquet(f"s3://{s3_bucket}/parts/cycle=2026-01/part-0.parquet", data)
    assert list_keys(s3_endpoint, s3_bucket) == ["parts/cycle=2026-01/part-0.parquet"]
    body = client(s3_endpoint).get_object(Bucket=s3_bucket, Key="parts/cycle=2026-01/part-0.parquet")["Body"]
    assert pq.read_table(pa.BufferReader(body.read())).equals(data)

    write_parquet(f"file://{tmp_path}/local/part-0.parquet", data)  # parent folders created, as for a path
    assert [path.name for path in (tmp_path / "local").iterdir()] == ["part-0.parquet"]  # no temp file left
    assert pq.read_table(tmp_path / "local" / "part-0.parquet").equals(data)


def test_the_jobs_run_against_a_store_on_s3(s3_bucket, s3_endpoint, catalog_uri, tmp_path, capsys):
    """batch, an appending batch, close-cycle, rerate, invoice and export with --output s3://...: the
    same tables as the same runs on local disk, and the data files in the bucket."""
    from pipelines.cli import main
    from tests import store_reads
    import shutil

    from tests.month_cdrs import month_rows, reference_with, write_jsonl
    from tests.paths import DIRECT, REFERENCE_MIN

    rows = month_rows()
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[::2])
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[1::2])
    remote, local = f"s3://{s3_bucket}/store", tmp_path / "local"

    def both(*args: str) -> None:
        for output, catalog in ((remote, ["--catalog-uri", catalog_uri]), (str(local), [])):
            assert main([*args, "--output", output, *catalog]) == 0, capsys.readouterr().err

    for name in ("a", "b"):
        both("batch", "--input", str(tmp_path / "in" / f"{name}.jsonl"), "--reference", str(REFERENCE_MIN),
             "--shards", "2", *DIRECT)
    both("close-cycle", "--cycle", "2026-01")
    shutil.copytree(REFERENCE_MIN, tmp_path / "month" / "reference")
    dearer = reference_with(tmp_path / "month", tmp_path, europe_price="0.35")
    both("rerate", "--cycle", "2026-01", "--input", str(tmp_path / "in" / "*.jsonl"), "--reference", str(dearer),
         "--shards", "2", *DIRECT)
    s3_store = IcebergStore.open(remote, catalog_uri=catalog_uri, create=False)
    assert [run.kind for run in s3_store.runs()] == ["create", "batch", "batch", "close", "rerate"]
    order = {"rated": ["source", "record_id"], "charges": ["account_id", "billing_cycle", "service_cycle", "line_type",
                                                           "service", "zone", "band", "item"],
             "invoices": ["account_id", "billing_cycle"], "rejected": ["input_file", "input_position"]}
    for table, keys in order.items():
        on_s3 = s3_store.read(table).sort_by([(k, "ascending") for k in keys])
        assert on_s3.equals(store_reads.table(local, table).sort_by([(k, "ascending") for k in keys])), table
    assert any(line["line_type"] == "ADJUSTMENT" for line in s3_store.read("charges").to_pylist())
    data = [key for key in list_keys(s3_endpoint, s3_bucket) if "/rated/data/" in key]
    assert data and all(key.startswith("store/rating/rated/data/service_cycle=") for key in data)
    assert any(key.startswith("store/audit/") for key in list_keys(s3_endpoint, s3_bucket))
    assert not list(tmp_path.glob("**/.scratch-*")) and not (tmp_path / "s3:").exists()

    capsys.readouterr()
    assert main(["invoice", "--output", remote, "--catalog-uri", catalog_uri, "--account", "ACC000001"]) == 0
    assert "ACC000001" in capsys.readouterr().out
    assert main(["export", "--output", remote, "--catalog-uri", catalog_uri, "--table", "charges",
                 "--to", str(tmp_path / "charges.parquet")]) == 0
    assert pq.read_table(tmp_path / "charges.parquet").num_rows == s3_store.read("charges").num_rows


def test_reference_data_on_s3_rates_as_the_local_copy_does(s3_bucket, s3_endpoint, tmp_path, monkeypatch, capsys):
    """--reference s3://...: the submitter and every worker read a local copy made once per content;
    the run records the URI, and the invoice finds the reference through it."""
    from pipelines.cli import main
    from rating.engine import reference_fingerprint
    from rating.reference.remote import local_reference
    from tests import store_reads
    from tests.month_cdrs import month_rows, write_jsonl
    from tests.paths import DIRECT, REFERENCE_MIN

    monkeypatch.setenv("USAGE_RATING_CACHE_DIR", str(tmp_path / "cache"))
    s3 = client(s3_endpoint)
    for path in sorted(p for p in REFERENCE_MIN.rglob("*") if p.is_file()):
        s3.put_object(Bucket=s3_bucket, Key=f"ref/{path.relative_to(REFERENCE_MIN)}", Body=path.read_bytes())
    remote = f"s3://{s3_bucket}/ref"
    write_jsonl(tmp_path / "in" / "a.jsonl", month_rows())
    for reference, out in ((remote, tmp_path / "remote"), (str(REFERENCE_MIN), tmp_path / "local")):
        assert main(["batch", "--input", str(tmp_path / "in" / "a.jsonl"), "--reference", reference, "--output",
                     str(out), "--shards", "2", *DIRECT]) == 0, capsys.readouterr().err
    for table in ("rated", "charges", "invoices"):
        assert store_reads.table(tmp_path / "remote", table).sort_by("account_id").equals(
            store_reads.table(tmp_path / "local", table).sort_by("account_id")), table
    assert store_reads.latest_totals(tmp_path / "remote")["run"]["reference"] == remote
    assert reference_fingerprint(remote) == reference_fingerprint(str(REFERENCE_MIN))   # the same content
    copy = local_reference(remote)
    assert copy.startswith(str(tmp_path / "cache")) and local_reference(remote) == copy   # one copy per content
    capsys.readouterr()
    assert main(["invoice", "--output", str(tmp_path / "remote"), "--account", "ACC000001"]) == 0
    assert "warning" not in capsys.readouterr().err
    s3.put_object(Bucket=s3_bucket, Key="ref/operator.yaml", Body=(REFERENCE_MIN / "operator.yaml").read_bytes() + b"\n")
    assert local_reference(remote) != copy   # a changed object: a new copy
    with pytest.raises(ValueError, match="no reference data there"):
        local_reference(f"s3://{s3_bucket}/nothing")


def test_a_run_that_read_the_store_before_another_writer_committed_reads_it_again(s3_bucket, catalog_uri, tmp_path,
                                                                                 monkeypatch):
    """Two writers of a store on S3 (no lock): b's run reads the store (duplicates, balances, cycles),
    then another writer commits a.jsonl again before b commits. b's commit must fail and b run again
    on the store as it now is: one batch over both files, not b's stale view."""
    from pipelines.batch import run_batch
    from pipelines.cli import main
    from pipelines.options import BatchConfig
    from pipelines.staged_run import StagedRun
    from tests.month_cdrs import month_rows, write_jsonl
    from tests.paths import DIRECT, REFERENCE_MIN
    from tests.test_store_runs import ORDER

    rows = month_rows()
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[::2])
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[1::2])
    remote = f"s3://{s3_bucket}/store"

    def config(name: str) -> BatchConfig:
        return BatchConfig(input_glob=str(tmp_path / "in" / name), reference_dir=str(REFERENCE_MIN),
                           output_dir=remote, catalog_uri=catalog_uri, shards=2)

    assert run_batch(config("a.jsonl"), DIRECT)["balanced"]
    run_pipeline, cut_in = StagedRun.run_pipeline, []

    def another_writer_first(run, *args, **kwargs):
        result = run_pipeline(run, *args, **kwargs)
        if not cut_in:   # while b computes, another writer commits (a.jsonl again: all duplicates)
            cut_in.append(None)
            cut_in[0] = run_batch(config("a.jsonl"), DIRECT)
        return result

    monkeypatch.setattr(StagedRun, "run_pipeline", another_writer_first)
    result = run_batch(config("b.jsonl"), DIRECT)
    assert result["attempts"] == 2 and result["balanced"]
    assert cut_in[0]["duplicates"] == len(rows[::2])
    assert main(["batch", "--input", str(tmp_path / "in" / "*.jsonl"), "--reference", str(REFERENCE_MIN),
                 "--output", str(tmp_path / "once"), "--shards", "2", *DIRECT]) == 0
    shared = IcebergStore.open(remote, catalog_uri=catalog_uri, create=False)
    once = IcebergStore.open(str(tmp_path / "once"), create=False)
    for table in ("rated", "charges", "invoices"):
        keys = [(k, "ascending") for k in ORDER[table]]
        assert shared.read(table).sort_by(keys).equals(once.read(table).sort_by(keys)), table
    assert [run.kind for run in shared.runs()] == ["create", "batch", "batch", "batch"]
