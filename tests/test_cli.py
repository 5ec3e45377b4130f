"""The usage-rating command line as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_close_cycle_then_rerun_bills_late_usage_on_the_next_cycle(tmp_path, capsys):
    import polars as pl

    gen = tmp_path / "gen"
    assert main(["generate", "--out", str(gen), "--records", "3000", "--subscribers", "100", "--files", "2",
                 "--format", "jsonl", "--seed", "5", "--start", "2026-01-01", "--days", "20"]) == 0
    args = ["batch", "--input", str(gen / "cdrs" / "*"), "--reference", str(gen / "reference"),
            "--output", str(tmp_path / "out")]
    assert main(args) == 0
    first = pl.read_parquet(tmp_path / "out" / "charges")
    assert set(first["billing_cycle"]) >= {"2025-12", "2026-01"}
    assert main(["close-cycle", "--output", str(tmp_path / "out"), "--cycle", "2025-12"]) == 0
    assert main(args) == 0  # the closed-cycles file of the store is honoured by the next run
    second = pl.read_parquet(tmp_path / "out" / "charges")
    assert "2025-12" not in set(second["billing_cycle"])
    late = second.filter(pl.col("late"))
    assert late.height > 0 and set(late["service_cycle"]) == {"2025-12"} and set(late["billing_cycle"]) == {"2026-01"}
    usage = lambda frame: frame.filter(pl.col("line_type") == "USAGE")["amount_micros"].sum()  # noqa: E731
    assert usage(second) == usage(first)  # the same money, on a later invoice
    totals = json.loads((tmp_path / "out" / "control" / "totals.json").read_text())
    assert totals["balanced"]
    assert json.loads((tmp_path / "out" / "closed_cycles.json").read_text()) == {"closed_through": "2025-12"}
    assert main(["close-cycle", "--output", str(tmp_path / "out"), "--cycle", "2025-11"]) == 1
    assert "already closed" in capsys.readouterr().err


def test_batch_on_an_unreadable_file_exits_1_naming_it(tmp_path, capsys):
    bad = tmp_path / "cdrs.csv"
    bad.write_text("not a cdr file\n")
    assert main(["batch", "--input", str(bad), "--reference", "tests/data/reference_examples",
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "cdrs.csv" in err and "unknown file extension" in err
    broken = tmp_path / "broken.avro"
    broken.write_bytes(b"Obj\x01garbage")
    assert main(["batch", "--input", str(broken), "--reference", "tests/data/reference_examples",
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.avro" in err and "unreadable Avro header" in err
    assert not (tmp_path / "out").exists()


# --- flags: a mistyped flag never reaches Beam (which would only warn) ----------------------------

@pytest.mark.parametrize("command, typo, closest", [
    (["batch", "--input", "{tmp}/none-*.avro", "--reference", "tests/data/reference_examples", "--output", "{tmp}/out"],
     ["--closed-thru", "2026-01"], "--closed-through"),
    (["batch", "--input", "{tmp}/none-*.avro", "--reference", "tests/data/reference_examples", "--output", "{tmp}/out"],
     ["--direct_num_worker=2"], "--direct_num_workers"),
    (["rerate", "--cycle", "2026-01", "--input", "{tmp}/none-*.avro", "--reference", "tests/data/reference_examples",
      "--output", "{tmp}/out"], ["--closed_thru=2026-01"], "--closed_through"),
    (["stream", "--subscription", "projects/p/subscriptions/s", "--reference", "tests/data/reference_examples",
      "--output", "{tmp}/out"], ["--alowed-lateness", "6h"], "--allowed-lateness"),
    (["demo", "--workdir", "{tmp}/out"], ["--recrods", "10"], "--records"),
])
def test_an_unknown_flag_fails_before_the_run_naming_the_closest_flag(tmp_path, capsys, command, typo, closest):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in command] + typo
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"unknown flag {typo[0].split('=')[0]} (did you mean {closest}?)" in err
    assert "nor a Beam pipeline option" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_value_of_a_beam_option_fails_before_the_run(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "out"), "--direct_num_workers=two"]) == 1
    assert "--direct_num_workers: invalid int value: 'two'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


RUNNER_CONFIGS = Path(__file__).parents[1] / "runner_configs"


@pytest.mark.parametrize("flags", sorted(p.name for p in RUNNER_CONFIGS.glob("*.flags")))
@pytest.mark.parametrize("command", [
    ["batch", "--input", "x", "--reference", "r", "--output", "o"],
    ["rerate", "--cycle", "2026-01", "--input", "x", "--reference", "r", "--output", "o"],
    ["stream", "--subscription", "projects/p/subscriptions/s", "--reference", "r", "--output", "o"],
    ["demo"],
])
def test_every_runner_config_flag_file_is_accepted_by_the_pipeline_commands(command, flags):
    from pipelines.cli import _command_parser, build_parser
    from pipelines.cli_args import check_beam_args

    lines = (RUNNER_CONFIGS / flags).read_text().splitlines()
    if command == ["demo"] and "--shuffle=beam" in lines:
        pytest.skip("demo rates on the DirectRunner; the cluster flag files are for batch, rerate and stream")
    parser = build_parser()
    args, beam_args = parser.parse_known_args(command + [line for line in lines if line and not line.startswith("#")])
    check_beam_args(beam_args, _command_parser(parser, args.command))  # raises on anything unknown
