"""Batch runs against the Iceberg store: appending, refusing what would double-charge, crashes, one writer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.staged_run import StagedRun
from sinks.iceberg import IcebergStore
from tests import store_reads
from tests.month_cdrs import DE_S, FRANCE, UNKNOWN, cdr, month_rows, write_jsonl
from tests.paths import DIRECT, REFERENCE_MIN

ORDER = {"rated": ["source", "record_id"],
         "charges": ["account_id", "billing_cycle", "service_cycle", "line_type", "service", "zone", "band", "item"],
         "invoices": ["account_id", "billing_cycle"], "rejected": ["input_file", "input_position"],
         "duplicates": ["source", "record_id", "input_file", "input_position"]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """January usage (service cycles 2025-12 and 2026-01) in a.jsonl, February's (2026-02) in b.jsonl,
    each with a record of an unknown subscriber (rejected) and b.jsonl with a record sent twice."""
    folder = tmp_path_factory.mktemp("inputs")
    rows = month_rows()
    february = [r for r in rows if r["start_time"] >= "2026-02"]
    write_jsonl(folder / "a.jsonl", [r for r in rows if r["start_time"] < "2026-02"])
    write_jsonl(folder / "b.jsonl", february + [february[0], cdr(900, UNKNOWN, "2026-02-09T08:00:00Z", duration_s=5)])
    return folder


def _batch(glob: Path | str, out: Path, *extra: str) -> int:
    return main(["batch", "--input", str(glob), "--reference", str(REFERENCE_MIN), "--output", str(out),
                 "--shards", "2", *extra, *DIRECT])


def _tables(out: Path) -> dict:
    return {name: store_reads.table(out, name).sort_by([(c, "ascending") for c in order])
            for name, order in ORDER.items()}


def test_batch_over_a_then_b_gives_exactly_one_batch_over_a_and_b(inputs, tmp_path):
    assert _batch(inputs / "a.jsonl", tmp_path / "steps") == 0
    assert _batch(inputs / "b.jsonl", tmp_path / "steps") == 0
    assert _batch(inputs / "*.jsonl", tmp_path / "once") == 0
    steps, once = _tables(tmp_path / "steps"), _tables(tmp_path / "once")
    assert steps["rated"].num_rows > 0 and set(steps["rated"].column("service_cycle").to_pylist()) == \
        {"2025-12", "2026-01", "2026-02"}
    for name in ORDER:
        assert steps[name].num_rows > 0 and steps[name].equals(once[name]), name
    runs = store_reads.rows(tmp_path / "steps", "runs")
    assert [(r["run_number"], r["kind"]) for r in runs] == [(0, "create"), (1, "batch"), (2, "batch")]
    assert all(IcebergStore.open(str(tmp_path / "steps"), create=False).run_as_of(r["run_id"]).control_totals.get(
        "balanced", True) for r in runs)


@pytest.mark.parametrize("one_by_one", [1_000, 0], ids=["accounts-replaced", "cycles-replaced"])
def test_batch_runs_adding_to_the_same_cycles_give_one_batch_over_all_of_them(tmp_path, monkeypatch, one_by_one):
    """Hourly runs: each file holds records of every account and cycle, the second one records older
    than some of the first's (late), so allowances, tiers and the first run's charges carry on. The
    touched accounts' rows are replaced, or (many accounts) their cycles whole."""
    monkeypatch.setattr("pipelines.batch.ACCOUNTS_REPLACED_ONE_BY_ONE", one_by_one)
    rows = [r for r in month_rows() if r["start_time"] < "2026-02"]
    write_jsonl(tmp_path / "in" / "a1.jsonl", rows[::2])
    write_jsonl(tmp_path / "in" / "a2.jsonl", rows[1::2])
    assert _batch(tmp_path / "in" / "a1.jsonl", tmp_path / "steps") == 0
    assert _batch(tmp_path / "in" / "a2.jsonl", tmp_path / "steps") == 0
    assert _batch(tmp_path / "in" / "*.jsonl", tmp_path / "once") == 0
    steps, once = _tables(tmp_path / "steps"), _tables(tmp_path / "once")
    for name in ("rated", "charges", "invoices", "rejected"):
        assert steps[name].num_rows > 0 and steps[name].equals(once[name]), name
    assert sum(steps["rated"].column("free_units").to_pylist()) > 0   # allowances were consumed across both runs
    second = store_reads.latest_totals(tmp_path / "steps")
    assert second["records_in"] == len(rows[1::2]) and second["prior_in"] == len(rows[::2]) - 1  # one rejected
    assert second["balanced"]


def test_a_run_with_some_accounts_of_a_held_cycle_replaces_only_theirs(tmp_path):
    """A later file with calls of one account only (one of them older than that account's stored
    calls): that account is rated again, the other accounts' rows stay as the store holds them."""
    rows = [r for r in month_rows() if r["start_time"] < "2026-02"]
    later = [cdr(800 + i, DE_S, f"2026-01-{day:02d}T12:00:00Z", other=FRANCE, duration_s=300)
             for i, day in enumerate((27, 28, 6))]
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    write_jsonl(tmp_path / "in" / "b.jsonl", later)
    assert _batch(tmp_path / "in" / "a.jsonl", tmp_path / "steps") == 0
    before = _tables(tmp_path / "steps")
    assert _batch(tmp_path / "in" / "b.jsonl", tmp_path / "steps") == 0
    assert _batch(tmp_path / "in" / "*.jsonl", tmp_path / "once") == 0
    steps, once = _tables(tmp_path / "steps"), _tables(tmp_path / "once")
    for name in ("rated", "charges", "invoices", "rejected"):
        assert steps[name].equals(once[name]), name
    others = [r for r in before["rated"].to_pylist() if r["account_id"] != "ACC000001"]
    assert others and others == [r for r in steps["rated"].to_pylist() if r["account_id"] != "ACC000001"]
    second = store_reads.latest_totals(tmp_path / "steps")
    account_events = sum(r["account_id"] == "ACC000001" for r in before["rated"].to_pylist())
    assert second["prior_in"] == account_events and second["records_in"] == 3 and second["balanced"]


def test_resubmitting_files_changes_nothing_but_the_duplicates(inputs, tmp_path):
    out = tmp_path / "out"
    assert _batch(inputs / "a.jsonl", out) == 0
    first = store_reads.rows(out, "runs")[-1]["run_id"]
    before = _tables(out)
    assert _batch(inputs / "a.jsonl", out) == 0
    after = _tables(out)
    for name in ("rated", "charges", "invoices", "rejected"):
        assert after[name].equals(before[name]), name
    duplicates = after["duplicates"].to_pylist()
    keyed = before["rated"].num_rows + before["rejected"].num_rows
    assert len(duplicates) == keyed and {d["original_run_id"] for d in duplicates} == {first}
    assert all((d["input_file"], d["input_position"]) == (d["original_input_file"], d["original_input_position"])
               for d in duplicates)
    assert sum(d["identical"] for d in duplicates) == before["rated"].num_rows   # the rejected one: no fields kept
    totals = store_reads.latest_totals(out)
    assert totals["duplicates"] == keyed and totals["balanced"]


def test_a_record_the_store_rated_in_the_cycle_before_is_a_duplicate_of_it(inputs, tmp_path):
    out = tmp_path / "out"
    assert _batch(inputs / "a.jsonl", out) == 0
    again = cdr(1, DE_S, "2026-02-07T10:00:00Z", other=FRANCE, duration_s=60)   # record 000001 of January again
    write_jsonl(tmp_path / "late.jsonl", [again])
    assert _batch(tmp_path / "late.jsonl", out) == 0
    [duplicate] = store_reads.rows(out, "duplicates")
    assert (duplicate["record_id"], duplicate["identical"]) == ("000001", False)
    assert duplicate["original_run_id"] == store_reads.rows(out, "runs")[1]["run_id"]
    assert "2026-02" not in set(store_reads.table(out, "rated").column("service_cycle").to_pylist())


def test_adding_to_a_cycle_rated_with_other_reference_data_or_closed_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _batch(inputs / "a.jsonl", out) == 0
    runs = store_reads.rows(out, "runs")
    changed = tmp_path / "reference"
    shutil.copytree(REFERENCE_MIN, changed)
    (changed / "operator.yaml").write_text((changed / "operator.yaml").read_text() + "\n")
    more = cdr(700, DE_S, "2026-01-28T10:00:00Z", duration_s=60)
    write_jsonl(tmp_path / "more.jsonl", [more])
    capsys.readouterr()
    assert main(["batch", "--input", str(tmp_path / "more.jsonl"), "--reference", str(changed), "--output", str(out),
                 *DIRECT]) == 1
    err = capsys.readouterr().err
    assert "was rated with other reference data" in err and "usage-rating rerate --cycle 2025-12" in err
    assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01"]) == 0
    capsys.readouterr()
    assert _batch(tmp_path / "more.jsonl", out) == 1
    err = capsys.readouterr().err
    assert "holds service cycle(s) 2026-01, closed" in err and "usage-rating rerate --cycle 2026-01" in err
    assert [r["run_id"] for r in store_reads.rows(out, "runs")][:2] == [r["run_id"] for r in runs]
    assert [r["kind"] for r in store_reads.rows(out, "runs")] == ["create", "batch", "close"]


@pytest.mark.parametrize("step", ["rated", "charges", "invoices", "rejected", "duplicates", "runs"])
def test_a_crash_at_any_commit_step_leaves_the_store_as_before_and_the_next_run_recovers(inputs, tmp_path,
                                                                                        monkeypatch, capsys, step):
    out = tmp_path / "out"
    assert _batch(inputs / "a.jsonl", out) == 0
    before = _tables(out)
    commit_table, append_run = IcebergStore._commit_table, IcebergStore._append_run

    def crash_at(table, run_id, paths, delete_filter):
        if table.name()[-1] == step:
            raise OSError(f"killed while committing {step}")
        return commit_table(table, run_id, paths, delete_filter)

    def crash_run_log(self, run, *runs_table):
        raise OSError("killed while committing runs")

    with monkeypatch.context() as patch:   # killed: the run cannot even remove its own files
        patch.setattr(StagedRun, "discard_files", lambda run: None)
        patch.setattr(IcebergStore, "_commit_table", staticmethod(crash_at))
        if step == "runs":
            patch.setattr(IcebergStore, "_append_run", crash_run_log)
        with pytest.raises(OSError, match=f"killed while committing {step}"):
            _batch(inputs / "b.jsonl", out)
    assert _tables(out) == before   # readers see the store as it was: the run log names the old snapshots
    assert [r["kind"] for r in store_reads.rows(out, "runs")] == ["create", "batch"]
    assert IcebergStore._append_run is append_run
    capsys.readouterr()
    assert _batch(inputs / "b.jsonl", out) == 0   # rolls back the half commit, removes the dead run's files
    printed = capsys.readouterr().out
    if step not in ("rated",):
        assert "rolled rated back from snapshot" in printed
    assert "data file(s) of interrupted runs" in printed
    assert _batch(inputs / "*.jsonl", tmp_path / "once") == 0
    after, once = _tables(out), _tables(tmp_path / "once")
    for name in ORDER:
        assert after[name].equals(once[name]), name
    store = IcebergStore.open(str(out), create=False)
    assert not any(store.orphan_files().values())


def test_an_old_layout_folder_or_a_folder_of_other_files_is_refused(inputs, tmp_path, capsys):
    old = tmp_path / "old"
    (old / "rated").mkdir(parents=True)
    (old / "_SUCCESS").write_text("{}")
    assert _batch(inputs / "a.jsonl", old) == 1
    assert "old layout" in capsys.readouterr().err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _batch(inputs / "a.jsonl", other) == 1
    assert "holds files but no rating store" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_second_writer_fails_fast_naming_the_lock_and_the_run_holding_it(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _batch(inputs / "a.jsonl", out) == 0
    before = store_reads.data_digests(out)
    capsys.readouterr()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom sinks.lock import store_lock\n"
         f"with store_lock({str(out)!r}, 'batch run 20260301T000000Z-0000beef'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _batch(inputs / "b.jsonl", out) == 1
        err = capsys.readouterr().err
        lock = tmp_path / ".out.store.lock"
        assert f"batch run 20260301T000000Z-0000beef (pid {holder.pid} on " in err and str(lock) in err
        assert "another run is writing the output store" in err
        assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01"]) == 1
        assert str(lock) in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert store_reads.data_digests(out) == before
    assert _batch(inputs / "b.jsonl", out) == 0   # the lock went with its process


def test_a_run_another_writer_beat_to_the_commit_is_made_again(inputs, tmp_path, monkeypatch):
    """With a shared catalog two runs may commit at once; the loser commits nothing and runs again."""
    from pipelines.batch import run_batch
    from pipelines.options import BatchConfig
    from sinks.iceberg import ConcurrentCommitError

    commit, calls = StagedRun.commit, []

    def beaten_once(run, *args, **kwargs):
        calls.append(run.run_id)
        if len(calls) == 1:
            raise ConcurrentCommitError(f"run {run.run_id} was not committed: run other was committed meanwhile",
                                        "other")
        return commit(run, *args, **kwargs)

    monkeypatch.setattr(StagedRun, "commit", beaten_once)
    result = run_batch(BatchConfig(input_glob=str(inputs / "a.jsonl"), reference_dir=str(REFERENCE_MIN),
                                   output_dir=str(tmp_path / "out"), shards=2), DIRECT)
    assert result["attempts"] == 2 and len(set(calls)) == 2 and result["balanced"]
    assert [r["run_id"] for r in store_reads.rows(tmp_path / "out", "runs")][1:] == [calls[1]]
    assert not any(IcebergStore.open(str(tmp_path / "out"), create=False).orphan_files().values())


def test_a_store_on_object_storage_without_a_named_catalog_is_refused_before_anything_runs(inputs, capsys):
    assert _batch(inputs / "a.jsonl", "s3://no-such-bucket/store") == 1   # no network is reached
    assert "is on object storage, where a SQLite catalog cannot live: name the catalog with --catalog-uri" in \
        capsys.readouterr().err
