"""Publishing the output store: the old store or the new one whatever step a crash hits, leftovers of
killed runs removed by the next run, no silent replacement of another run's rated usage, one writer
at a time.

A crash is simulated by making the k-th file-system change of a publication raise, and every change
after it (the process is gone: no clean-up handler gets to run either), for every k in turn.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.batch import run_batch
from pipelines.cli import main
from pipelines.options import BatchConfig
from sinks import publish, store
from tests.month_cdrs import month_rows, write_jsonl
from tests.paths import DIRECT



class Crash(BaseException):
    """The process dies here (a BaseException, so ``except Exception`` handlers do not see it)."""


class CrashAt:
    """Make the ``step``-th file-system change (0-based) raise ``Crash``, and every later one too."""

    CHANGES = ((os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (pathlib.Path, "write_text"))

    def __init__(self, monkeypatch, step: int):
        self.step, self.count, self.crashed = step, 0, False
        for owner, name in self.CHANGES:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, change):
        def changed(*args, **kwargs):
            if self.crashed or self.count == self.step:
                self.crashed = True
                raise Crash(f"killed at change {self.step}")
            self.count += 1
            return change(*args, **kwargs)
        return changed


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _data(root: Path) -> dict[str, str]:
    """``_digest`` without ``_SUCCESS`` (which names the run): the same inputs give the same data."""
    return {name: digest for name, digest in _digest(root).items() if name != "_SUCCESS"}


def _beside(out: Path) -> list[str]:
    """What is in the store's folder besides the store and its lock file."""
    return sorted(p.name for p in out.parent.iterdir() if p.name not in (out.name, f".{out.name}.store.lock"))


def _config(inputs: Path, reference: Path, out: Path, **options) -> BatchConfig:
    return BatchConfig(input_glob=str(inputs / "*"), reference_dir=str(reference), output_dir=str(out), shards=3,
                       **options)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, reference_min_dir):
    """Two batch outputs of the same operator: ``old`` from a.jsonl, ``new`` from a.jsonl and b.jsonl."""
    base = tmp_path_factory.mktemp("publish")
    shutil.copytree(reference_min_dir, base / "reference")
    rows = month_rows()
    write_jsonl(base / "cdrs-old" / "a.jsonl", rows[::2])
    shutil.copytree(base / "cdrs-old", base / "cdrs-new")
    write_jsonl(base / "cdrs-new" / "b.jsonl", rows[1::2])
    for name in ("old", "new"):
        assert run_batch(_config(base / f"cdrs-{name}", base / "reference", base / "runs" / name), DIRECT)["balanced"]
    return base


def _store_and_staging(runs: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """``tmp_path/out`` holding the old store, and the new run's complete staging folder beside it."""
    out = tmp_path / "out"
    shutil.copytree(runs / "runs" / "old", out)
    staging = publish.staging_dir_for(out, "20260301T000000Z-0000beef")
    shutil.copytree(runs / "runs" / "new", staging)
    manifest = json.loads((staging / "_SUCCESS").read_text())
    (staging / "_SUCCESS").unlink()
    return out, staging, {**manifest, "run_id": "20260301T000000Z-0000beef"}


def test_a_crash_at_any_step_of_publishing_leaves_the_old_store_or_the_new_one(runs, tmp_path, monkeypatch):
    old = _digest(runs / "runs" / "old")
    charges = {"old": store.current_charges(runs / "runs" / "old"), "new": store.current_charges(runs / "runs" / "new")}
    outcomes = []
    for step in range(1000):
        work = tmp_path / f"step{step}"
        out, staging, manifest = _store_and_staging(runs, work)
        new = {**_digest(runs / "runs" / "new"), "_SUCCESS": None}
        with monkeypatch.context() as patch:
            crash = CrashAt(patch, step)
            try:
                publish.publish(staging, out, manifest)
            except Crash:
                pass
        # Whatever a reader opens next sees one complete store: it finishes the publication first.
        seen = store.require_store(out)
        digest = _digest(seen)
        outcome = "old" if digest == old else "new" if {**digest, "_SUCCESS": None} == new else "neither"
        assert outcome != "neither", f"crash at step {step}: the store is a mix of both runs"
        assert json.loads((out / "_SUCCESS").read_text())["run_id"] == (manifest["run_id"] if outcome == "new"
                                                                        else _run_id(runs / "runs" / "old"))
        assert store.current_charges(out).equals(charges[outcome])
        outcomes.append(outcome)
        # The next run (holding the lock) removes what the killed one left: nothing stays beside the store.
        with publish.store_lock(out, "the next run"):
            notes = publish.remove_leftovers(out)
        assert _beside(out) == [], f"crash at step {step}: left {_beside(out)} ({notes})"
        assert _digest(out) == digest
        shutil.rmtree(work)
        if not crash.crashed:
            break
    else:
        pytest.fail("publish never completed")
    commit = outcomes.index("new")
    assert commit > 0 and outcomes == ["old"] * commit + ["new"] * (len(outcomes) - commit), outcomes
    assert len(outcomes) > 6  # _SUCCESS, journal, both renames, journal removal, the old store's files


def _run_id(out: Path) -> str:
    return json.loads((out / "_SUCCESS").read_text())["run_id"]


def test_a_run_killed_between_the_renames_is_finished_by_the_next_reader_and_tidied_by_the_next_run(
        runs, tmp_path, monkeypatch, capsys):
    """The issue's case: ``OUT`` renamed away, the new store not yet in place, the process killed."""
    out = tmp_path / "out"
    reference, inputs = runs / "reference", runs / "cdrs-new"
    assert run_batch(_config(runs / "cdrs-old", reference, out), DIRECT)["balanced"]
    real_replace = os.replace

    def killed_at_second_rename(source, target):
        if ".staging-" in str(source) and Path(target) == out:
            raise Crash("killed between the renames")
        return real_replace(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed_at_second_rename)
        with pytest.raises(Crash):
            run_batch(_config(inputs, reference, out, replace_output=True), DIRECT)
    assert not out.exists() and any(".out.previous-" in name for name in _beside(out))
    # The invoice (a reader) sees the committed new store, not "no _SUCCESS".
    assert main(["invoice", "--output", str(out), "--account", "ACC000001", "--cycle", "2026-01"]) == 0
    assert "ACC000001" in capsys.readouterr().out
    assert _data(out) == _data(runs / "runs" / "new")
    assert _beside(out) == []

    # A run killed before publishing leaves its staging folder; the next run removes it and says so.
    def killed_before_publishing(*args):
        raise Crash("killed")

    with monkeypatch.context() as patch:
        patch.setattr("pipelines.batch.publish", killed_before_publishing)
        with pytest.raises(Crash):
            run_batch(_config(inputs, reference, out), DIRECT)
    staged = _beside(out)
    assert len(staged) == 1 and staged[0].startswith(".out.staging-")
    assert main(["batch", "--input", str(inputs / "*"), "--reference", str(reference), "--output", str(out),
                 "--shards", "3", *DIRECT]) == 0
    assert f"removed {staged[0]}, left by an interrupted run" in capsys.readouterr().out
    assert _beside(out) == []


def test_a_store_hidden_by_an_earlier_version_crash_is_restored(runs, tmp_path, capsys):
    """Before the journal, a crash between the two renames left no OUT and the store as .OUT.previous-*."""
    out, staging, _ = _store_and_staging(runs, tmp_path)
    hidden = out.parent / ".out.previous-0123456789abcdef0123456789abcdef"
    os.replace(out, hidden)
    (staging / "_SUCCESS").write_text("{}")   # the earlier version wrote it before the renames
    assert main(["invoice", "--output", str(out), "--account", "ACC000001", "--cycle", "2026-01"]) == 0
    assert _digest(out) == _digest(runs / "runs" / "old")
    with publish.store_lock(out, "the next run"):
        assert publish.remove_leftovers(out) == [f"removed {staging.name}, left by an interrupted run"]
    assert _beside(out) == []


def test_a_crash_at_any_step_of_publishing_a_re_rated_version_leaves_the_old_or_the_new_one(tmp_path, monkeypatch):
    outcomes = []
    for step in range(100):
        out = tmp_path / f"step{step}" / "store"
        (out / "rated").mkdir(parents=True)
        (out / "_SUCCESS").write_text("{}")
        for number in (2, 3):
            staging = store.version_staging_dir(out, "2026-01", f"run{number}")
            (staging / "rated" / "service_cycle=2026-01").mkdir(parents=True)
            (staging / "rated" / "service_cycle=2026-01" / "part-00000.parquet").write_text(f"v{number}")
            if number == 3:
                crash = CrashAt(monkeypatch, step)
            try:
                store.publish_version(out, "2026-01", staging, number=number, manifest={"run_id": f"run{number}"})
            except Crash:
                pass
            finally:
                monkeypatch.undo()
        current = store.current_version(out, "2026-01")
        assert current.number in (2, 3)
        assert Path(current.rated_files()[0]).read_text() == f"v{current.number}"
        outcomes.append(current.number)
        with store.store_lock(out, "the next re-rate"):
            store.remove_leftovers(out)
        assert not list(out.glob("rerates/*/.staging-*"))
        assert store.next_version_number(out, "2026-01") > current.number
        if not crash.crashed:
            break
    commit = outcomes.index(3)
    assert commit > 0 and outcomes == [2] * commit + [3] * (len(outcomes) - commit), outcomes


# --- no silent replacement, one writer at a time ---------------------------------------------------

def _batch(inputs: Path, reference: Path, out: Path, *flags: str) -> int:
    return main(["batch", "--input", str(inputs / "*"), "--reference", str(reference), "--output", str(out),
                 "--shards", "3", *flags, *DIRECT])


def test_a_batch_of_other_inputs_refuses_to_replace_the_store_unless_told_to(runs, tmp_path, capsys):
    reference, out = runs / "reference", tmp_path / "out"
    assert _batch(runs / "cdrs-old", reference, out) == 0
    first, run_id = _digest(out), _run_id(out)
    records = json.loads((out / "control" / "totals.json").read_text())
    capsys.readouterr()

    assert _batch(runs / "cdrs-new", reference, out) == 1
    err = capsys.readouterr().err
    assert f"already holds the rated usage of batch run {run_id}" in err
    assert f"{records['records_in']:,} records in, {records['rated']:,} rated" in err
    assert str(runs / "cdrs-old" / "a.jsonl") in err
    assert "this run's input files differ" in err and "new --output" in err and "--replace-output" in err
    assert _digest(out) == first

    other_reference = tmp_path / "reference"
    shutil.copytree(reference, other_reference)
    plan = other_reference / "plans" / "MOBILE_S.yaml"
    plan.write_text(plan.read_text().replace('price: "0.29"', 'price: "0.31"'))
    assert _batch(runs / "cdrs-old", other_reference, out) == 1
    assert "this run's reference data differ" in capsys.readouterr().err
    assert _digest(out) == first

    assert _batch(runs / "cdrs-old", reference, out) == 0   # the same inputs again: the same store
    assert _data(out) == {name: digest for name, digest in first.items() if name != "_SUCCESS"}
    assert _run_id(out) != run_id

    assert _batch(runs / "cdrs-new", reference, out, "--replace-output") == 0
    assert json.loads((out / "control" / "totals.json").read_text())["records_in"] > records["records_in"]

    folder = tmp_path / "not-a-store"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert _batch(runs / "cdrs-old", reference, folder) == 1
    assert "holds files but no published output store" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_second_writer_fails_fast_naming_the_lock_and_the_run_holding_it(runs, tmp_path, capsys):
    reference, out = runs / "reference", tmp_path / "out"
    assert _batch(runs / "cdrs-old", reference, out) == 0
    before = _digest(out)
    capsys.readouterr()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom sinks.publish import store_lock\n"
         f"with store_lock({str(out)!r}, 'batch run 20260301T000000Z-0000beef'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _batch(runs / "cdrs-old", reference, out) == 1
        err = capsys.readouterr().err
        lock = tmp_path / ".out.store.lock"
        assert f"batch run 20260301T000000Z-0000beef (pid {holder.pid} on " in err and str(lock) in err
        assert "another run is writing the output store" in err
        assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01"]) == 1
        assert str(lock) in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert _digest(out) == before
    assert _batch(runs / "cdrs-old", reference, out) == 0   # the lock went with its process
