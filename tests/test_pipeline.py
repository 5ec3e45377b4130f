"""The batch job end to end on generated operator data, and on several runners."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.batch import run_batch
from pipelines.cli import main as cli_main
from synth import GeneratorConfig, generate
from pipelines.options import BatchConfig
from tests import store_reads
from tests.paths import DIRECT, DIRECT_2

DIRECT_1 = DIRECT
PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


_GENERATED: dict[str, tuple[Path, dict]] = {}


def _generated(tmp_path_factory, fmt: str) -> tuple[Path, dict]:
    """A small generated operator with 1% duplicates and 1% malformed records, once per format."""
    if fmt not in _GENERATED:
        out = tmp_path_factory.mktemp(f"gen-{fmt}")
        manifest = generate(GeneratorConfig(out_dir=out, subscribers=300, records=6_000, days=20, files=3, fmt=fmt,
                                            seed=11, duplicate_rate=0.01, malformed_rate=0.01))
        _GENERATED[fmt] = (out, manifest)
    return _GENERATED[fmt]


@pytest.fixture(scope="module", params=["jsonl", "avro", "parquet"])
def generated(request, tmp_path_factory):
    return _generated(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def generated_avro(tmp_path_factory):
    return _generated(tmp_path_factory, "avro")


def _run(generated_dir: Path, output: Path, beam_args=DIRECT_1, shards=4, shuffle="files") -> dict:
    config = BatchConfig(input_glob=str(generated_dir / "cdrs" / "*"), reference_dir=str(generated_dir / "reference"),
                         output_dir=str(output), shards=shards, batch_size=1000, shuffle=shuffle)
    return run_batch(config, beam_args)


def _read(output: Path, table: str):
    return store_reads.rows(output, table)


def test_outputs_match_the_manifest_exactly(generated, tmp_path):
    gen_dir, manifest = generated
    out = tmp_path / "out"
    totals = _run(gen_dir, out)

    assert totals["balanced"]
    assert totals["records_in"] == manifest["records_written"]
    assert totals["duplicates"] == sum(manifest["duplicates_injected"].values())
    expected_rejects = {k: v for k, v in manifest["malformed_injected"].items() if v}
    assert totals["rejected"] == expected_rejects
    assert totals["rated"] == manifest["expected_rated"]

    rejected = _read(out, "rejected")
    assert sorted({r["reason"] for r in rejected}) == sorted(expected_rejects)
    assert all(r["raw"] and r["input_file"].startswith(str(gen_dir)) for r in rejected)
    duplicates = _read(out, "duplicates")
    assert len(duplicates) == totals["duplicates"]
    assert all(d["identical"] for d in duplicates)  # the generator resends records unchanged
    assert all((d["original_input_file"], d["original_input_position"]) < (d["input_file"], d["input_position"])
               for d in duplicates)

    rated = _read(out, "rated")
    assert len(rated) == totals["rated"]
    assert len({(r["source"], r["record_id"]) for r in rated}) == len(rated)  # nothing charged twice
    assert sum(r["charge_micros"] for r in rated) == totals["charge_micros"]
    charges = _read(out, "charges")
    usage = [c for c in charges if c["line_type"] == "USAGE"]
    assert sum(c["amount_micros"] for c in usage) == totals["charge_micros"]  # money conserved
    assert all(c["amount_minor"] * 10_000 - c["amount_micros"] == c["rounding_micros"] for c in charges)
    by_account: dict = {}
    for r in rated:
        by_account[r["account_id"]] = by_account.get(r["account_id"], 0) + r["charge_micros"]
    lines_by_account: dict = {}
    for c in usage:
        lines_by_account[c["account_id"]] = lines_by_account.get(c["account_id"], 0) + c["amount_micros"]
    assert lines_by_account == {a: m for a, m in by_account.items()}  # per account, to the micro
    assert totals["money_balanced"] and all(c["money_balanced"] for c in totals["cycles"].values())
    logged = store_reads.latest_totals(out)   # the run log keeps the run's control totals
    assert logged["balanced"] is True and logged["charge_micros"] == totals["charge_micros"]


def _digest(output: Path) -> dict[str, str]:
    return store_reads.data_digests(output)


def test_runners_and_worker_counts_give_byte_identical_outputs(generated_avro, tmp_path):
    gen_dir, _ = generated_avro
    digests = {}
    runs = (("direct-1", DIRECT_1, "files"), ("direct-2", DIRECT_2, "files"), ("portable", PORTABLE, "files"),
            ("direct-1-beam-shuffle", DIRECT_1, "beam"), ("direct-2-beam-shuffle", DIRECT_2, "beam"))
    for name, args, shuffle in runs:
        _run(gen_dir, tmp_path / name, args, shuffle=shuffle)
        digests[name] = _digest(tmp_path / name)
        assert not any("_shuffle" in path for path in digests[name])  # spill files never committed
    assert any(name.startswith("rating/charges/data/billing_cycle=") for name in digests["direct-1"])
    assert any(name.startswith("rating/invoices/data/billing_cycle=") for name in digests["direct-1"])
    for name, _, _ in runs[1:]:
        assert digests[name] == digests["direct-1"], name
        assert store_reads.latest_totals(tmp_path / name)["cycles"] == \
            store_reads.latest_totals(tmp_path / "direct-1")["cycles"]
    assert not list(tmp_path.rglob("*.arrow"))  # spill files deleted with the scratch folder


def test_batch_size_and_shard_files_do_not_change_charges(generated_avro, tmp_path):
    gen_dir, _ = generated_avro
    config_a = BatchConfig(input_glob=str(gen_dir / "cdrs" / "*"), reference_dir=str(gen_dir / "reference"),
                           output_dir=str(tmp_path / "a"), shards=4, batch_size=97)
    config_b = BatchConfig(input_glob=str(gen_dir / "cdrs" / "*"), reference_dir=str(gen_dir / "reference"),
                           output_dir=str(tmp_path / "b"), shards=7, batch_size=5000)
    run_batch(config_a, DIRECT_1)
    run_batch(config_b, DIRECT_1)
    order = [(name, "ascending") for name in ("account_id", "billing_cycle", "service_cycle", "line_type", "service",
                                              "zone", "band", "item")]
    charges_a = store_reads.table(tmp_path / "a", "charges").sort_by(order)
    charges_b = store_reads.table(tmp_path / "b", "charges").sort_by(order)
    assert charges_a.num_rows > 0 and charges_a.equals(charges_b)
    totals_a, totals_b = (store_reads.latest_totals(tmp_path / x) for x in "ab")
    for totals in (totals_a, totals_b):
        del totals["run"]   # where the run read its inputs and how many shards it used
    assert totals_a == totals_b


def test_a_corrupt_file_fails_the_run_and_keeps_the_previous_output(generated_avro, tmp_path):
    gen_dir, _ = generated_avro
    out = tmp_path / "out"
    _run(gen_dir, out)
    before, runs_before = _digest(out), store_reads.rows(out, "runs")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in (gen_dir / "cdrs").iterdir():
        (inputs / f"next-{f.name}").write_bytes(f.read_bytes())
    (inputs / "zz-broken.avro").write_bytes(b"this is not an avro file")
    config = BatchConfig(input_glob=str(inputs / "*"), reference_dir=str(gen_dir / "reference"),
                         output_dir=str(out), shards=4)
    with pytest.raises(Exception, match="zz-broken.avro"):
        run_batch(config, DIRECT_1)
    assert _digest(out) == before and store_reads.rows(out, "runs") == runs_before
    assert not [p for p in out.iterdir() if ".scratch-" in p.name]


def test_cli_batch_exit_status_and_summary(generated_avro, tmp_path, capsys):
    gen_dir, manifest = generated_avro
    status = cli_main(["batch", "--input", str(gen_dir / "cdrs" / "*"), "--reference", str(gen_dir / "reference"),
                       "--output", str(tmp_path / "out"), "--shards", "3"])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"{manifest['records_written']:,}" in printed and "balanced" in printed
    status = cli_main(["batch", "--input", str(tmp_path / "nothing-*.avro"), "--reference",
                       str(gen_dir / "reference"), "--output", str(tmp_path / "out2")])
    assert status == 1
    assert "matches no files" in capsys.readouterr().err


def test_auto_shards_grow_with_the_input_so_memory_does_not(tmp_path):
    from pipelines.options import BYTES_PER_RECORD, RECORDS_PER_SHARD, auto_shards, parse_shards

    small = tmp_path / "small.avro"
    small.write_bytes(b"x" * 1000)
    assert auto_shards([str(small)]) == 16
    big = tmp_path / "big.avro"          # sparse: sized like 10M Avro records, nothing written
    with open(big, "wb") as f:
        f.truncate(10_000_000 * BYTES_PER_RECORD["avro"])
    assert auto_shards([str(big)]) == 64 and 10_000_000 / 64 <= RECORDS_PER_SHARD
    jsonl = tmp_path / "big.jsonl"
    with open(jsonl, "wb") as f:
        f.truncate(10_000_000 * BYTES_PER_RECORD["jsonl"])
    assert auto_shards([str(big), str(jsonl)]) == 128
    assert parse_shards("auto") is None and parse_shards("32") == 32
    with pytest.raises(ValueError, match="--shards must be a number or 'auto'"):
        parse_shards("many")


def test_batch_without_shards_picks_them_from_the_input(generated_avro, tmp_path):
    gen_dir, _ = generated_avro
    config = BatchConfig(input_glob=str(gen_dir / "cdrs" / "*"), reference_dir=str(gen_dir / "reference"),
                         output_dir=str(tmp_path / "out"))
    totals = run_batch(config, DIRECT_1)
    assert totals["shards"] == 16 and totals["balanced"]
    assert store_reads.latest_totals(tmp_path / "out")["run"]["shards"] == 16


def test_spill_writer_keeps_few_files_open_and_loses_no_rows(tmp_path, monkeypatch):
    import pyarrow as pa

    from pipelines.shuffle import ShardShuffle, ShardWriter

    monkeypatch.setattr(ShardWriter, "MAX_OPEN_FILES", 3)
    shuffle = ShardShuffle(str(tmp_path / "spill"))
    writer = shuffle.writer("stage")
    schema = pa.schema([("shard", pa.int64()), ("row", pa.int64())])
    pairs = [(s, pa.RecordBatch.from_pydict({"shard": [s] * 2, "row": [r, r + 1]}, schema=schema))
             for r in range(0, 20, 2) for s in (4, 0, 7, 2, 9)]
    assert list(writer.add(pairs)) == []   # spilled, nothing emitted before the bundle ends
    done = writer.finish()
    assert [s for s, _ in done] == sorted(s for s, _ in done) and len(done) > 5   # several files a shard
    for shard in (0, 2, 4, 7, 9):
        table = shuffle.read([p for s, p in done if s == shard], schema)
        assert sorted(table.column("row").to_pylist()) == list(range(20))
        assert set(table.column("shard").to_pylist()) == {shard}


def test_hidden_files_and_dangling_links_are_skipped_and_reported(generated_avro, tmp_path, capsys):
    gen_dir, manifest = generated_avro
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = sorted((gen_dir / "cdrs").iterdir())
    for f in files[1:]:
        (inputs / f.name).write_bytes(f.read_bytes())
    hidden = inputs / f".{files[0].name}"            # e.g. a copy tool's temporary name: its records are not read
    hidden.write_bytes(files[0].read_bytes())
    dangling = inputs / "zz-moved.avro"
    dangling.symlink_to(tmp_path / "elsewhere" / "moved.avro")
    status = cli_main(["batch", "--input", str(inputs / "*"), "--reference", str(gen_dir / "reference"),
                       "--output", str(tmp_path / "out"), "--shards", "3", *DIRECT_1])
    printed = capsys.readouterr().out
    assert status == 0
    assert "skipped inputs               2" in printed
    assert f"  {hidden}: hidden file (the name starts with '.')" in printed
    assert f"  {dangling}: dangling symbolic link: its target {tmp_path / 'elsewhere' / 'moved.avro'}" in printed
    totals = store_reads.latest_totals(tmp_path / "out")
    assert [(entry["path"], entry["reason"].split(":")[0].split(" (")[0]) for entry in totals["skipped_inputs"]] == [
        (str(hidden), "hidden file"), (str(dangling), "dangling symbolic link")]
    assert 0 < totals["records_in"] < manifest["records_written"] and totals["balanced"]

    hidden.rename(inputs / ".only")
    for f in inputs.glob("*.avro"):
        if not f.is_symlink():
            f.unlink()
    with pytest.raises(ValueError, match=r"matches no files; skipped: .*\.only: hidden file.*zz-moved.avro: dangling"):
        run_batch(BatchConfig(input_glob=str(inputs / "*"), reference_dir=str(gen_dir / "reference"),
                              output_dir=str(tmp_path / "out2")), DIRECT_1)


@pytest.mark.parametrize("named", [True, False], ids=["path-in-error", "no-path-in-error"])
def test_a_full_disk_says_where_and_how_much_the_run_needs(generated_avro, tmp_path, monkeypatch, capsys, named):
    import errno

    from pipelines.shuffle import ShardWriter

    gen_dir, _ = generated_avro
    spill = tmp_path / "out" / ".scratch-x" / "_shuffle" / "dedup-00000.arrow"

    def disk_full(self, shard, schema):   # the spill writer is what fills a disk first (~565 bytes a record)
        if named:
            raise OSError(errno.ENOSPC, "No space left on device", str(spill))
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(ShardWriter, "_stream", disk_full)
    status = cli_main(["batch", "--input", str(gen_dir / "cdrs" / "*"), "--reference", str(gen_dir / "reference"),
                       "--output", str(tmp_path / "out"), "--shards", "2", *DIRECT_1])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    where = spill if named else f"under {tmp_path.resolve()}"   # the output's folder, where staging is too
    assert last.startswith(f"usage-rating batch: no space left on device writing {where} (")
    assert re.search(r"\(\d[\d,.]* [KMG]B free there now\); this run needs roughly \d[\d,.]* [KMG]B free on the disk "
                     r"of .*out \(~[\d,]+ records estimated from the input files' sizes", last), last
    assert not (tmp_path / "out").exists()   # the run would have created the store: nothing is left


def test_the_shuffle_follows_the_runner_and_spill_files_are_refused_where_workers_run_elsewhere(
        generated_avro, tmp_path, capsys):
    from pipelines.options import resolve_shuffle

    assert resolve_shuffle(None, []) == resolve_shuffle(None, DIRECT_2) == resolve_shuffle(None, PORTABLE) == "files"
    assert resolve_shuffle(None, ["--runner=FlinkRunner"]) == "beam"
    assert resolve_shuffle(None, ["--runner=PortableRunner", "--job_endpoint=localhost:8099"]) == "beam"
    assert resolve_shuffle("beam", DIRECT_1) == "beam"
    gen_dir, _ = generated_avro
    status = cli_main(["batch", "--input", str(gen_dir / "cdrs" / "*"), "--reference", str(gen_dir / "reference"),
                       "--output", str(tmp_path / "out"), "--shuffle", "files", "--runner=FlinkRunner"])
    assert status == 1
    assert "--shuffle files spills shard data into the run's scratch folder on this machine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
