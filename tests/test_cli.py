"""The usage-rating command line as a user runs it."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.cli import main


def test_validate_reference_ok(reference_min_dir, capsys):
    assert main(["validate-reference", str(reference_min_dir)]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_reference_lists_every_issue_and_exits_1(reference_min_dir, tmp_path, capsys):
    ref = tmp_path / "ref"
    shutil.copytree(reference_min_dir, ref)
    accounts = (ref / "accounts.csv").read_text().replace(",Europe/Berlin,1,DE", ",Europe/Berlinn,31,DE", 1)
    (ref / "accounts.csv").write_text(accounts)
    assert main(["validate-reference", str(ref)]) == 1
    err = capsys.readouterr().err
    assert "accounts.csv" in err and "Europe/Berlinn" in err and "31" in err
    assert "2 issue(s)" in err


def test_generate_then_batch_through_the_cli(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--records", "3000", "--subscribers", "100", "--files", "2",
                 "--format", "parquet", "--seed", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_written"] == 3000
    assert main(["batch", "--input", str(out / "cdrs" / "*.parquet"), "--reference", str(out / "reference"),
                 "--output", str(tmp_path / "rated"), "--runner=DirectRunner"]) == 0
    totals = json.loads((tmp_path / "rated" / "control" / "totals.json").read_text())
    assert totals["records_in"] == 3000 and totals["balanced"]


def test_demo_runs_end_to_end_and_reuses_its_workdir(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--records", "4000", "--subscribers", "200"]) == 0
    first = capsys.readouterr().out
    for expected in ("records in", "rated", "duplicates", "rejected", "revenue by service", "top 5 accounts",
                     "records/s", str(workdir.resolve() / "output")):
        assert expected in first
    assert main(["demo", "--workdir", str(workdir), "--records", "4000", "--subscribers", "200"]) == 0
    assert "reusing the generated operator month" in capsys.readouterr().out


def test_unknown_flags_are_refused_outside_pipeline_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["validate-reference", "x", "--runner=DirectRunner"])
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
