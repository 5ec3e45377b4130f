"""The usage-rating command line as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from tests import store_reads
from tests.paths import REFERENCE_EXAMPLES


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
    totals = store_reads.latest_totals(tmp_path / "rated")
    assert totals["records_in"] == 3000 and totals["balanced"]


def test_generate_v3_writes_declared_usage_types_and_batch_rates_them(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--records", "4000", "--subscribers", "100", "--files", "1",
                 "--seed", "5", "--schema-version", "v3"]) == 0
    expected = json.loads((out / "manifest.json").read_text())["expected_rated_by_service"]
    assert expected["mms"] > 0 and expected["api_calls"] > 0
    assert main(["batch", "--input", str(out / "cdrs" / "*.avro"), "--reference", str(out / "reference"),
                 "--output", str(tmp_path / "rated"), "--runner=DirectRunner"]) == 0
    assert store_reads.latest_totals(tmp_path / "rated")["balanced"]
    assert main(["generate", "--out", str(tmp_path / "bad"), "--schema-version", "v9"]) == 1
    assert "schema_version must be one of v1, v2, v3" in capsys.readouterr().err


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
    assert "unknown flag --runner" in capsys.readouterr().err


def test_close_cycle_is_kept_in_the_store_and_late_usage_goes_on_the_next_cycle(tmp_path, capsys):
    import polars as pl

    from sinks.iceberg import IcebergStore

    gen = tmp_path / "gen"
    assert main(["generate", "--out", str(gen), "--records", "3000", "--subscribers", "100", "--files", "2",
                 "--format", "jsonl", "--seed", "5", "--start", "2026-01-01", "--days", "20"]) == 0
    args = ["batch", "--input", str(gen / "cdrs" / "*"), "--reference", str(gen / "reference")]
    assert main(args + ["--output", str(tmp_path / "out")]) == 0
    first = pl.from_arrow(store_reads.table(tmp_path / "out", "charges"))
    assert set(first["billing_cycle"]) >= {"2025-12", "2026-01"}
    assert main(["close-cycle", "--output", str(tmp_path / "out"), "--cycle", "2025-12"]) == 0
    store = IcebergStore.open(str(tmp_path / "out"), create=False)
    assert store.closed_through() == "2025-12" and store.runs()[-1].kind == "close"
    assert main(["close-cycle", "--output", str(tmp_path / "out"), "--cycle", "2025-11"]) == 1
    assert "already closed" in capsys.readouterr().err
    # The same usage rated with 2025-12 closed: its usage is billed, late, on the next invoice.
    assert main(args + ["--output", str(tmp_path / "late"), "--closed-through", "2025-12"]) == 0
    second = pl.from_arrow(store_reads.table(tmp_path / "late", "charges"))
    assert "2025-12" not in set(second["billing_cycle"])
    late = second.filter(pl.col("late"))
    assert late.height > 0 and set(late["service_cycle"]) == {"2025-12"} and set(late["billing_cycle"]) == {"2026-01"}
    usage = lambda frame: frame.filter(pl.col("line_type") == "USAGE")["amount_micros"].sum()  # noqa: E731
    assert usage(second) == usage(first)  # the same money, on a later invoice
    assert store_reads.latest_totals(tmp_path / "late")["balanced"]


def test_batch_on_an_unreadable_file_exits_1_naming_it(tmp_path, capsys, caplog):
    bad = tmp_path / "cdrs.csv"
    bad.write_text("not a cdr file\n")
    assert main(["batch", "--input", str(bad), "--reference", str(REFERENCE_EXAMPLES),
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "cdrs.csv" in err and "unknown file extension" in err
    broken = tmp_path / "broken.avro"
    broken.write_bytes(b"Obj\x01garbage")
    assert main(["batch", "--input", str(broken), "--reference", str(REFERENCE_EXAMPLES),
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.avro" in err and "unreadable Avro header" in err
    # One line, not Beam's worker traceback as well
    assert not [r for r in caplog.records if "InputFileError" in r.getMessage()]
    assert not (tmp_path / "out").exists()


# --- flags: a mistyped flag never reaches Beam (which would only warn) ----------------------------

@pytest.mark.parametrize("command, typo, closest", [
    (["batch", "--input", "{tmp}/none-*.avro", "--reference", str(REFERENCE_EXAMPLES), "--output", "{tmp}/out"],
     ["--closed-thru", "2026-01"], "--closed-through"),
    (["batch", "--input", "{tmp}/none-*.avro", "--reference", str(REFERENCE_EXAMPLES), "--output", "{tmp}/out"],
     ["--direct_num_worker=2"], "--direct_num_workers"),
    (["rerate", "--cycle", "2026-01", "--input", "{tmp}/none-*.avro", "--reference", str(REFERENCE_EXAMPLES),
      "--output", "{tmp}/out"], ["--closed_thru=2026-01"], "--closed_through"),
    (["demo", "--workdir", "{tmp}/out"], ["--recrods", "10"], "--records"),
])
def test_an_unknown_flag_fails_before_the_run_naming_the_closest_flag(tmp_path, capsys, command, typo, closest):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in command] + typo
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"unknown flag {typo[0].split('=')[0]} (did you mean {closest}?)" in err
    assert "nor a Beam pipeline option" in err
    assert not (tmp_path / "out").exists()


def test_a_command_without_beam_flags_names_the_closest_of_its_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["stream", "--subscription", "projects/my-project/subscriptions/s", "--reference", str(REFERENCE_EXAMPLES),
              "--output", str(tmp_path / "out"), "--commit-intervall", "5", "--runner=DirectRunner"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "unknown flag --commit-intervall (did you mean --commit-interval?)" in err
    assert "unknown flag --runner" in err and not (tmp_path / "out").exists()


def test_a_bad_value_of_a_beam_option_fails_before_the_run(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "out"), "--direct_num_workers=two"]) == 1
    assert "--direct_num_workers: invalid int value: 'two'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


RUNNER_CONFIGS = Path(__file__).parents[1] / "runner_configs"


@pytest.mark.parametrize("flags", sorted(p.name for p in RUNNER_CONFIGS.glob("*.flags")))
@pytest.mark.parametrize("command", [
    ["batch", "--input", "x", "--reference", "r", "--output", "o"],
    ["rerate", "--cycle", "2026-01", "--input", "x", "--reference", "r", "--output", "o"],
    ["demo"],
])
def test_every_runner_config_flag_file_is_accepted_by_the_pipeline_commands(command, flags):
    from pipelines.cli import build_parser
    from pipelines.cli.args import check_beam_args

    lines = (RUNNER_CONFIGS / flags).read_text().splitlines()
    if command == ["demo"] and "--shuffle=beam" in lines:
        pytest.skip("demo rates on the DirectRunner; the cluster flag files are for batch and rerate")
    words = [word for line in lines if line and not line.startswith("#") for word in line.split()]  # as $(grep ...)
    args, beam_args = build_parser().parse_known_args(command + words)
    check_beam_args(beam_args, args.command_parser)  # raises on anything unknown


@pytest.mark.parametrize("suffix, compress", [(".gz", "gzip"), (".bz2", "bz2")])
def test_batch_on_a_truncated_compressed_file_exits_1_naming_it_and_publishes_nothing(suffix, compress, tmp_path,
                                                                                    capsys):
    """A compressed input cut at 60% fails the run: its lost records are not silently left out."""
    import importlib

    gen = tmp_path / "gen"
    assert main(["generate", "--out", str(gen), "--records", "3000", "--subscribers", "100", "--files", "1",
                 "--format", "jsonl", "--seed", "7"]) == 0
    (source,) = (gen / "cdrs").glob("*.jsonl")
    data = importlib.import_module(compress).compress(source.read_bytes())
    cut = tmp_path / "inputs" / f"cut.jsonl{suffix}"
    cut.parent.mkdir()
    cut.write_bytes(data[:len(data) * 6 // 10])
    capsys.readouterr()
    assert main(["batch", "--input", str(cut), "--reference", str(gen / "reference"),
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(cut) in err and "end-of-stream marker" in err
    assert not (tmp_path / "out").exists()


# --- one way to run a command, one exit status table, one money formatter -------------------------

def test_no_command_prints_the_commands_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for command in ("demo", "batch", "rerate", "stream", "import-cgrates", "rate-one"):
        assert command in err
    assert "generate an operator month and rate it" in err  # the help of each command, not only the usage line
    assert "usage-rating: error: name a command" in err


def test_every_command_runs_through_its_own_function():
    from pipelines.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in subparsers.choices.items():
        assert callable(parser.get_default("run")), name
        assert parser.get_default("command_parser") is parser, name


def test_the_job_flags_mean_the_same_in_batch_rerate_and_the_beam_entry_point():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.cli import build_parser
    from pipelines.cli.args import SHUFFLE_CHOICES
    from pipelines.options import BatchConfig
    from pipelines.shuffle import SHUFFLE_MODES

    assert SHUFFLE_CHOICES == SHUFFLE_MODES
    flags = ["--shards", "8", "--batch-size", "1000", "--shuffle", "beam", "--closed-through", "2026-01"]
    where = ["--input", "x", "--reference", "r", "--output", "o"]
    parser = build_parser()
    batch = parser.parse_args(["batch", *where, *flags])
    rerate = parser.parse_args(["rerate", "--cycle", "2026-02", *where, *flags])
    config = BatchConfig.from_options(PipelineOptions([*where, *flags]))  # python -m pipelines.batch
    for args in (batch, rerate, config):
        assert (args.shards, args.batch_size, args.shuffle, args.closed_through) == (8, 1000, "beam", "2026-01")
    underscores = BatchConfig.from_options(PipelineOptions([*where, "--batch_size=7", "--closed_through=2026-03"]))
    assert (underscores.batch_size, underscores.closed_through, underscores.shards) == (7, "2026-03", None)


def test_summary_totals_are_rounded_from_exact_micro_units(tmp_path, capsys):
    """2.675 EUR is 2.67499999... as a float: a float formatter shows 2.67; exact half-to-even gives 2.68."""
    import pyarrow as pa

    from cdr_schemas import charge_line_schema
    from pipelines.money_text import format_micros, format_minor, micros_text, total_text
    from pipelines.cli.summary import print_summary
    from sinks.iceberg import IcebergStore
    from tests.test_iceberg_store import charge_rows, write

    store = IcebergStore.open(str(tmp_path / "out"), create=True)
    line = charge_rows("2026-01", "ACC1", 0).to_pylist()[0]
    lines = [dict(line, account_id=account, line_type=kind, service=service, currency="EUR", amount_micros=micros)
             for account, kind, service, micros in (("ACC1", "USAGE", "VOICE", 2_675_000),
                                                    ("ACC2", "USAGE", "SMS", 1_234_567_891_005_000),
                                                    ("ACC1", "PLAN_FEE", None, 9_000_000))]
    path = write(store, "charges", pa.Table.from_pylist(lines, schema=charge_line_schema()), "r1-part-0",
                 {"billing_cycle": "2026-01"})
    store.commit_run("r1", "batch", {"charges": [path]}, {})
    print_summary({"records_in": 2, "elapsed_s": 1.0, "input_files": 1, "skipped_inputs": [], "rated": 2,
                   "duplicates": 0, "rejected_total": 0, "rejected": {}, "balanced": True, "records_balanced": True,
                   "money_balanced": True, "run_id": "r1", "run_number": 1, "billing_cycles": ["2026-01"]},
                  str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert f"  {'VOICE':<8}{'2.68 EUR':>24}" in out and f"  {'ACC1':<14}{'2.68 EUR':>18}" in out
    assert f"  {'ACC2':<14}{'1,234,567,891.00 EUR':>18}" in out  # 1,234,567,891.005: half to even
    # one formatter behind the summary, the re-rate report, invoices and rate-one
    assert total_text(-1_000, "EUR") == "-0.00 EUR" and total_text(-15_000, "EUR") == "-0.02 EUR"
    assert micros_text(641_800) == "0.6418" and micros_text(10_000_000) == "10" and micros_text(-5) == "-0.000005"
    assert format_minor(154_181, 2) == micros_text(1_541_810_000, min_decimals=2, grouping=True) == "1,541.81"
    assert format_micros(49_000, 2) == "0.049" and format_micros(2_000_000, 2) == "2.00"


def test_a_worker_error_is_found_behind_beams_wrapper_in_process_and_from_other_processes():
    from cdr_schemas.decoders import InputFileError
    from pipelines.worker_errors import worker_error_message

    try:
        try:
            raise InputFileError("/in/a.avro", "unreadable Avro header: EOFError: Expected 57 bytes, read 4")
        except InputFileError as error:
            raise RuntimeError(f"{error!r} [while running 'Decode']") from error
    except RuntimeError as wrapped:
        assert worker_error_message(wrapped, InputFileError) == \
            "cannot open /in/a.avro: unreadable Avro header: EOFError: Expected 57 bytes, read 4"
    # a worker in another process (--direct_running_mode=multi_processing): only its traceback's text comes back
    text_only = RuntimeError(
        'Traceback (most recent call last):\n  File "avro.py", line 131, in _read_header\n'
        '    raise InputFileError(path, f"unreadable Avro header: {error}") from error\n'
        "RuntimeError: cdr_schemas.decoders.common.InputFileError: cannot open /in/a.avro: unreadable Avro header: "
        "EOFError: Expected 57 bytes, read 4 [while running 'DecodeUsage/DecodeAndValidate/ParDo(_DecodeFile)']\n")
    assert worker_error_message(text_only, InputFileError) == \
        "cannot open /in/a.avro: unreadable Avro header: EOFError: Expected 57 bytes, read 4"
    assert worker_error_message(RuntimeError("InputFileError: not ours [while running 'X']"), InputFileError) is None


def test_an_unreadable_file_is_named_when_the_workers_are_other_processes(tmp_path, capsys):
    """There Beam hands back only the text of the worker's traceback, not the exception."""
    broken = tmp_path / "broken.avro"
    broken.write_bytes(b"Obj\x01garbage")
    assert main(["batch", "--input", str(broken), "--reference", str(Path(__file__).parent / "data" /
                 "reference_examples"), "--output", str(tmp_path / "out"), "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2"]) == 1
    assert f"usage-rating batch: cannot open {broken}: unreadable Avro header" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_demo_progress_line_counts_records_decoded_and_rated_while_the_job_runs(tmp_path, capsys):
    from pipelines.batch import run_batch
    from synth import GeneratorConfig, generate
    from pipelines.options import BatchConfig
    from pipelines.cli.progress import ProgressLine, StagedRunProgress

    gen = tmp_path / "gen"
    manifest = generate(GeneratorConfig(out_dir=gen, subscribers=100, records=12_000, files=2, fmt="avro", seed=3))
    total = manifest["records_written"]
    config = BatchConfig(input_glob=str(gen / "cdrs" / "*"), reference_dir=str(gen / "reference"),
                         output_dir=str(tmp_path / "out"), shards=2, batch_size=500)
    progress = StagedRunProgress(config.output_dir)
    seen = []

    def poll() -> str:
        seen.append(progress.sample())
        return seen[-1].text(total)

    with ProgressLine("rating", poll=poll, every_s=0.01):
        result = run_batch(config, ["--runner=DirectRunner"])
    assert all(a.decoded <= b.decoded and a.rated <= b.rated for a, b in zip(seen, seen[1:]))
    assert any(s.decoded > 0 and s.rated == 0 for s in seen)   # seen decoding before rating
    assert any(s.rated > 0 for s in seen)                       # and then rating
    assert max(s.decoded for s in seen) <= result["records_in"] and max(s.rated for s in seen) <= result["rated"]
    last = seen[-1]
    assert f"rating: decoded {last.decoded:,} and rated {last.rated:,} of {total:,} records" in capsys.readouterr().err


def test_no_warning_about_absent_google_cloud_packages_precedes_a_commands_output():
    """Beam logs two warnings as it is imported when the gcp extra is not installed; the CLI drops
    exactly those (a gs:// path without the extra still fails with Beam's message naming the fix)."""
    import subprocess
    import sys

    code = "import pipelines.cli, logging, apache_beam.io.filesystems, apache_beam.io.gcp.internal.clients.bigquery\n" \
           "logging.getLogger('apache_beam.io.filesystems').warning('kept: another warning')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert "Failed to import GCSFileSystem" not in done.stderr and "apitools not found" not in done.stderr
    assert "kept: another warning" in done.stderr
