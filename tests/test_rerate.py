"""Re-rating a cycle: the re-rated cycle committed to the output store (Iceberg tables), its audit,
record-by-record diff, adjustments, what-if; the cycle as it was stays readable by time travel.

The operator is ``tests/data/reference_min`` (copied: the tests change prices and subscriptions);
CDRs are small JSON-lines files written here, so every expected change can be named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo

from cdr_schemas import charge_line_schema
from pipelines.batch import run_batch
from pipelines.options import BatchConfig
from pipelines.rerate import RerateConfig, rejects_in_cycle
from pipelines.cli import rerate as rerate_cli
from rating.cycles import in_cycle_scope
from rating.rerate import adjustment_lines, compare_records, record_contributions
from sinks.iceberg import IcebergStore
from tests.month_cdrs import DE_S, UNKNOWN, cdr, month_rows, reference_with, rerate, write_jsonl
from tests.paths import DIRECT

@pytest.fixture(scope="module")
def month(tmp_path_factory, reference_min_dir):
    """A rated month: reference data, two CDR files and the batch job's output store (run 1)."""
    base = tmp_path_factory.mktemp("rerate-month")
    shutil.copytree(reference_min_dir, base / "reference")
    rows = month_rows()
    write_jsonl(base / "cdrs" / "a.jsonl", rows[::2], extra_lines=('{"record_id": "broken",',))
    write_jsonl(base / "cdrs" / "b.jsonl", rows[1::2])
    totals = run_batch(BatchConfig(input_glob=str(base / "cdrs" / "*"), reference_dir=str(base / "reference"),
                                   output_dir=str(base / "store"), shards=3), DIRECT)
    assert totals["balanced"] and totals["rejected"] == {"MALFORMED_RECORD": 1, "UNKNOWN_SUBSCRIBER": 1}
    return base


def _copy_store(month: Path, tmp_path: Path) -> Path:
    """A store of its own holding the month's batch run (an Iceberg store names its absolute
    locations, so it cannot be copied: the batch runs again)."""
    out = tmp_path / "store"
    run_batch(BatchConfig(input_glob=str(month / "cdrs" / "*"), reference_dir=str(month / "reference"),
                          output_dir=str(out), shards=3), DIRECT)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _open(out: Path) -> IcebergStore:
    return IcebergStore.open(str(out), create=False)


def _close(out: Path, cycle: str) -> None:
    """Close every cycle through ``cycle`` (what ``usage-rating close-cycle`` records)."""
    _open(out).close_cycles(f"close-{uuid.uuid4().hex[:8]}", cycle)


def _rated_in(out: Path, cycle: str, as_of: str | None = None) -> pa.Table:
    return _open(out).read("rated", as_of=as_of, row_filter=EqualTo("service_cycle", cycle))


def _charges(out: Path, as_of: str | None = None, **where: str) -> pa.Table:
    [(column, value)] = where.items()
    return _open(out).read("charges", as_of=as_of, row_filter=EqualTo(column, value))


def _invoices(out: Path, billing_cycle: str) -> pa.Table:
    return _open(out).read("invoices", row_filter=EqualTo("billing_cycle", billing_cycle))


def _rejected(out: Path, cycle: str) -> pa.Table:
    return _open(out).read("rejected", row_filter=rejects_in_cycle(cycle))


def _audit(result: dict, name: str) -> pl.DataFrame:
    return pl.read_parquet(Path(result["audit"]) / name)


def _by_account(table: pa.Table) -> dict[str, int]:
    frame = pl.from_arrow(table).group_by("account_id").agg(pl.col("charge_micros").sum())
    return dict(frame.iter_rows())


_KIND = (pl.when(pl.col("line_type") == "USAGE").then(pl.col("service"))
         .when(pl.col("line_type") == "ADJUSTMENT").then(pl.col("item"))
         .when(pl.col("line_type") == "PLAN_FEE").then(pl.lit("PLAN_FEE")))


def _money_by_kind(lines) -> dict:
    frame = pl.from_arrow(lines) if isinstance(lines, pa.Table) else lines
    grouped = frame.with_columns(_KIND.alias("kind")).drop_nulls("kind").group_by(["account_id", "kind"]).agg(
        pl.col("amount_micros").sum(), pl.col("amount_minor").sum(), pl.col("tax_minor").sum())
    return {(a, k): (m, n, t) for a, k, m, n, t in grouped.iter_rows()}


def test_price_change_in_one_zone_rerates_only_that_zone_and_adjusts_billed_totals_exactly(month, tmp_path):
    out = _copy_store(month, tmp_path)
    _close(out, "2026-01")
    base_rated = _rated_in(out, "2026-01")
    other_cycle = _rated_in(out, "2025-12")
    billed = _charges(out, service_cycle="2026-01")
    invoice_before = _invoices(out, "2026-02")
    runs_before = [r.run_id for r in _open(out).runs()]
    reference = reference_with(month, tmp_path, europe_price="0.35")

    result = rerate(month, out, reference)

    assert result["closed"] and result["balanced"]
    runs = _open(out).runs()
    assert [r.run_id for r in runs] == runs_before + [result["run_id"]]
    assert (runs[-1].kind, runs[-1].run_number) == ("rerate", result["version"])
    assert result["previous_version"] == runs[-2].run_number == result["version"] - 1
    assert Path(result["audit"]) == out / "audit" / result["run_id"]
    # Only the France calls of MOBILE_S subscribers changed, for their new price only.
    changes = _audit(result, "changes.parquet")
    expected = pl.from_arrow(base_rated).filter((pl.col("zone") == "EUROPE") & (pl.col("plan_id") == "MOBILE_S"))
    assert changes.height == expected.height > 0
    assert set(changes["status"]) == {"CHANGED"} and set(changes["reasons"]) == {"PRICE"}
    assert set(changes["new_zone"]) == {"EUROPE"} and (changes["delta_micros"] > 0).all()
    assert result["totals"]["records"]["UNCHANGED"] == base_rated.num_rows - expected.height
    # Adjustments per account equal the re-rated minus the previous charges, to the micro-unit.
    rerated = _rated_in(out, "2026-01")
    before, after = _by_account(base_rated), _by_account(rerated)
    current = _charges(out, service_cycle="2026-01")
    lines = pl.from_arrow(current).filter(pl.col("late") & (pl.col("billing_cycle") == "2026-02"))
    adjustments = lines.filter(pl.col("line_type") == "ADJUSTMENT")
    assert set(adjustments["account_id"]) == {"ACC000001", "ACC000002"}
    for row in adjustments.iter_rows(named=True):
        assert row["amount_micros"] == after[row["account_id"]] - before[row["account_id"]]
        assert (row["billing_cycle"], row["service_cycle"], row["late"], row["service"]) == \
            ("2026-02", "2026-01", True, "VOICE")
    records = _audit(result, "adjustment_records.parquet")
    assert records.height == expected.height and records["delta_micros"].sum() == adjustments["amount_micros"].sum()
    # Billed lines plus adjustments now equal the re-rated lines (rating the month afresh with the
    # new price): micros, minor units and tax.
    fresh = tmp_path / "fresh"
    run_batch(BatchConfig(input_glob=str(month / "cdrs" / "*"), reference_dir=str(reference), output_dir=str(fresh),
                          shards=3), DIRECT)
    assert _money_by_kind(current) == _money_by_kind(_charges(fresh, service_cycle="2026-01"))
    assert _money_by_kind(current) != _money_by_kind(billed)
    # ... and they reach the next open invoice, whose summary adds them (tax included).
    invoice_after = _invoices(out, "2026-02")
    total = lambda t, a: sum(r["total_minor"] for r in t.to_pylist() if r["account_id"] == a)  # noqa: E731
    adjusted = lines.filter(pl.col("account_id") == "ACC000001")["amount_minor"].sum()
    assert total(invoice_after, "ACC000001") == total(invoice_before, "ACC000001") + adjusted
    # The cycle as it was stays readable (time travel to the run before); other cycles are not re-rated.
    previous = runs[-2].run_id
    assert _rated_in(out, "2026-01", as_of=previous).sort_by("record_id").equals(base_rated.sort_by("record_id"))
    assert _charges(out, as_of=previous, service_cycle="2026-01").num_rows == billed.num_rows
    assert _rated_in(out, "2025-12").sort_by("record_id").equals(other_cycle.sort_by("record_id"))
    totals = runs[-1].control_totals
    assert totals["out_of_scope"]["rated"] == {"2025-12": 8 * 3, "2026-02": 2}  # ACC000002 before 15 Jan; February
    assert totals["records_balanced"] and totals["adjustments"]["balanced"]
    assert json.loads((Path(result["audit"]) / "summary.json").read_text())["totals"] == \
        json.loads(json.dumps(result["summary"]["totals"]))


def test_rerating_twice_changes_nothing_the_second_time(month, tmp_path):
    out = _copy_store(month, tmp_path)
    _close(out, "2026-01")
    reference = reference_with(month, tmp_path, europe_price="0.35")
    first = rerate(month, out, reference)
    assert first["version"] is not None and first["totals"]["adjustments"]["lines"] > 0
    files = _digest(out)

    second = rerate(month, out, reference)

    assert second["version"] is None and second["previous_version"] == first["version"]
    assert second["audit"] is None
    assert second["totals"]["records"]["CHANGED"] == 0 and "adjustments" in second["totals"]
    assert second["totals"]["adjustments"]["lines"] == 0
    assert second["summary"]["totals"]["EUR"]["delta_micros"] == 0
    assert _digest(out) == files
    assert _open(out).runs()[-1].run_id == first["run_id"]


def test_every_rerate_of_a_cycle_is_in_the_run_log_and_each_stays_readable(month, tmp_path):
    """Two re-rates of one cycle: the run log lists both, and as of each run the cycle is that run's."""
    out = _copy_store(month, tmp_path)
    batch = _open(out).runs()[-1]
    first = rerate(month, out, reference_with(month, tmp_path / "r1", europe_price="0.35"))
    second = rerate(month, out, reference_with(month, tmp_path / "r2", europe_price="0.41"))

    runs = _open(out).runs()
    assert [(r.run_id, r.kind) for r in runs[-3:]] == [(batch.run_id, "batch"), (first["run_id"], "rerate"),
                                                       (second["run_id"], "rerate")]
    assert [r.run_number for r in runs[-2:]] == [first["version"], second["version"]] == \
        [batch.run_number + 1, batch.run_number + 2]
    assert second["previous_version"] == first["version"]
    europe = lambda table: sorted(pl.from_arrow(table).filter(pl.col("zone") == "EUROPE")  # noqa: E731
                                  .select(["record_id", "charge_micros"]).rows())
    as_of = {run_id: europe(_rated_in(out, "2026-01", as_of=run_id))
             for run_id in (batch.run_id, first["run_id"], second["run_id"])}
    assert as_of[second["run_id"]] == europe(_rated_in(out, "2026-01"))
    assert len({tuple(v) for v in as_of.values()}) == 3  # three prices, three cycles
    money = {run_id: sum(m for _, m in rows) for run_id, rows in as_of.items()}
    assert money[batch.run_id] < money[first["run_id"]] < money[second["run_id"]]
    # each re-rate was compared with the one before it
    changed = _audit(second, "changes.parquet").select(["record_id", "old_charge_micros", "new_charge_micros"])
    assert changed.height > 0
    for record_id, old, new in changed.iter_rows():
        assert (dict(as_of[first["run_id"]])[record_id], dict(as_of[second["run_id"]])[record_id]) == (old, new)


def test_late_record_takes_the_allowance_in_event_time_and_adjustments_net_out(month, tmp_path):
    """A 5-hour call used the whole VOICE_300 bundle; an earlier 5-hour call arrives in a later file."""
    cdrs = tmp_path / "cdrs"
    reference = month / "reference"
    other = [cdr(10 + i, DE_S, f"2026-01-{14 + i}T10:00:00Z", duration_s=90) for i in range(3)]
    write_jsonl(cdrs / "day12.jsonl", [cdr(2, DE_S, "2026-01-12T10:00:00Z", duration_s=18_000), *other])
    out = tmp_path / "store"
    run_batch(BatchConfig(input_glob=str(cdrs / "*"), reference_dir=str(reference), output_dir=str(out), shards=3),
              DIRECT)
    _close(out, "2026-01")
    billed = _charges(out, service_cycle="2026-01")
    write_jsonl(cdrs / "day05-late.jsonl", [cdr(1, DE_S, "2026-01-05T10:00:00Z", duration_s=18_000)])

    result = rerate(month, out, reference, glob=str(cdrs / "*"))

    rerated = {r["record_id"]: r for r in _rated_in(out, "2026-01").to_pylist()}
    assert rerated["000001"]["free_units"] == 18_000 and rerated["000001"]["charge_micros"] == 0
    assert rerated["000002"]["free_units"] == 0 and rerated["000002"]["charge_micros"] > 0
    changes = {r["record_id"]: r for r in _audit(result, "changes.parquet").iter_rows(named=True)}
    assert (changes["000001"]["status"], changes["000001"]["previous"]) == ("NEWLY_RATED", "NONE")
    assert changes["000002"]["status"] == "CHANGED" and "ALLOWANCE" in changes["000002"]["reasons"].split(",")
    assert set(changes) == {"000001", "000002"}
    # The same answer as rating both files from scratch, and billed + adjustments = that answer.
    fresh = tmp_path / "fresh"
    run_batch(BatchConfig(input_glob=str(cdrs / "*"), reference_dir=str(reference), output_dir=str(fresh), shards=3),
              DIRECT)
    columns = [c for c in _rated_in(out, "2026-01").column_names if c not in ("run_id", "input_file")]
    assert _rated_in(out, "2026-01").select(columns).sort_by("record_id").equals(
        _rated_in(fresh, "2026-01").select(columns).sort_by("record_id"))
    usage = lambda lines: {k: v for k, v in _money_by_kind(lines).items() if k[1] != "PLAN_FEE"}  # noqa: E731
    assert usage(_charges(out, service_cycle="2026-01")) == usage(_charges(fresh, service_cycle="2026-01"))
    adjustment = result["totals"]["adjustments"]["by_currency"]["EUR"]["amount_micros"]
    records = _audit(result, "adjustment_records.parquet")
    assert adjustment == records["delta_micros"].sum() == rerated["000002"]["charge_micros"]
    assert adjustment == usage(_charges(fresh, service_cycle="2026-01"))[("ACC000001", "VOICE")][0] \
        - usage(billed)[("ACC000001", "VOICE")][0]


def test_a_subscription_added_after_a_reject_recycles_the_record(month, tmp_path):
    out = _copy_store(month, tmp_path)
    subscription = f"{UNKNOWN},ACC000001,MOBILE_S,2026-01-01T00:00:00+01:00,"
    reference = reference_with(month, tmp_path, subscription=subscription)
    rejects_before = _rejected(out, "2026-01")
    assert "UNKNOWN_SUBSCRIBER" in rejects_before.column("reason").to_pylist()

    result = rerate(month, out, reference)

    assert result["version"] == result["previous_version"] + 1 and not result["closed"] and result["balanced"]
    totals = result["totals"]
    assert totals["recycled"] == {"UNKNOWN_SUBSCRIBER": 1}
    assert totals["records"]["NEWLY_RATED"] == 1 and totals["records"]["CHANGED"] == 0
    assert totals["in_cycle"]["rejected"] == {} and totals["out_of_scope"]["rejected"] == 1  # the broken line
    recycled = _audit(result, "changes.parquet").row(0, named=True)
    assert (recycled["status"], recycled["previous"], recycled["old_reject_reason"]) == \
        ("NEWLY_RATED", "REJECTED", "UNKNOWN_SUBSCRIBER")
    assert recycled["account_id"] == "ACC000001" and recycled["new_charge_micros"] > 0
    assert UNKNOWN in _rated_in(out, "2026-01").column("served_msisdn").to_pylist()
    assert "UNKNOWN_SUBSCRIBER" not in _rejected(out, "2026-01").column("reason").to_pylist()
    # An open cycle: the re-rate replaces the cycle, no adjustments; the new line pays its fee.
    assert not (Path(result["audit"]) / "adjustment_records.parquet").exists()
    lines = pl.from_arrow(_charges(out, service_cycle="2026-01"))
    assert "ADJUSTMENT" not in lines["line_type"].to_list()
    assert f"MONTHLY {UNKNOWN}" in lines.filter(pl.col("line_type") == "PLAN_FEE")["item"].to_list()
    invoices = _invoices(out, "2026-01")
    acc1 = [r for r in invoices.to_pylist() if r["account_id"] == "ACC000001"][0]
    billed = _charges(out, billing_cycle="2026-01")
    assert acc1["total_minor"] == sum(r["amount_minor"] for r in billed.to_pylist() if r["account_id"] == "ACC000001")


def test_what_if_writes_nothing_and_its_totals_equal_the_rerate(month, tmp_path, capsys):
    out = _copy_store(month, tmp_path)
    reference = reference_with(month, tmp_path, europe_price="0.35")
    files = _digest(out)
    parser = argparse.ArgumentParser(prog="usage-rating")
    rerate_cli.add_parser(parser.add_subparsers(dest="command"))
    args, beam_args = parser.parse_known_args([
        "rerate", "--cycle", "2026-01", "--input", str(month / "cdrs" / "*"), "--reference", str(month / "reference"),
        "--output", str(out), "--what-if", str(reference), "--report", str(tmp_path / "what-if.json"),
        "--shards", "3", *DIRECT])

    assert rerate_cli.run(args, beam_args) == 0

    printed = capsys.readouterr().out
    assert "what-if" in printed and "EUROPE" in printed and "MOBILE_S" in printed
    assert _digest(out) == files
    report = json.loads((tmp_path / "what-if.json").read_text())
    assert report["what_if"] and report["version"] is None
    assert {row["plan_id"] for row in report["summary"]["by_plan"] if row["delta_micros"]} == {"MOBILE_S"}
    assert {row["zone"] for row in report["summary"]["by_zone"] if row["delta_micros"]} == {"EUROPE"}
    assert report["summary"]["top_records"][0]["delta_micros"] > 0
    assert sum(r["accounts"] for r in report["summary"]["by_account_decile"]) == 3

    result = rerate(month, out, reference)

    assert result["version"] == report["previous_version"] + 1
    for key in ("records", "totals", "by_plan", "by_zone", "by_account_decile", "top_records"):
        assert json.loads(json.dumps(result["summary"][key])) == report["summary"][key], key
    summary = json.loads((Path(result["audit"]) / "summary.json").read_text())
    assert summary["totals"] == report["summary"]["totals"]


def test_inputs_must_cover_the_cycle_in_the_store(month, tmp_path, monkeypatch):
    out = _copy_store(month, tmp_path)
    files = _digest(out)
    with pytest.raises(ValueError, match=r"1 file\(s\) that --input does not match.*b.jsonl"):
        rerate(month, out, month / "reference", glob=str(month / "cdrs" / "a.jsonl"))
    # Past that check, the comparison itself refuses to credit records it cannot find.
    monkeypatch.setattr("pipelines.rerate.check_inputs_cover", lambda *args: None)
    with pytest.raises(ValueError, match=r"rated in 2026-01 before are in none of the inputs.*nothing was committed"):
        rerate(month, out, month / "reference", glob=str(month / "cdrs" / "a.jsonl"))
    assert _digest(out) == files
    with pytest.raises(ValueError, match="is not a rating store"):
        rerate(month, tmp_path / "nowhere", month / "reference")
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        RerateConfig(cycle="2026-1", input_glob="x", reference_dir="r", output_dir=str(out))
    assert not (out / "audit").exists() and [r.kind for r in _open(out).runs()] == ["create", "batch"]


def test_an_unreadable_input_file_fails_the_rerate_naming_it(month, tmp_path, monkeypatch):
    out = _copy_store(month, tmp_path)
    files = _digest(out)
    inputs = tmp_path / "cdrs"
    shutil.copytree(month / "cdrs", inputs)
    (inputs / "zz-broken.avro").write_bytes(b"Obj\x01garbage")
    monkeypatch.setattr("pipelines.rerate.check_inputs_cover", lambda *args: None)  # copies: other paths
    with pytest.raises(ValueError, match=r"^cannot open \S*zz-broken.avro: unreadable Avro header"):
        rerate(month, out, month / "reference", glob=str(inputs / "*"))
    assert _digest(out) == files and not (out / "audit").exists()


def test_reject_scope_is_the_utc_calendar_month():
    times = pa.array([0, None, 1_767_225_600_000_000, 1_769_903_999_999_999, 1_769_904_000_000_000],
                     pa.timestamp("us", tz="UTC"))  # 1970, null, 2026-01-01T00:00Z, 2026-01-31T23:59:59.999999Z, Feb 1
    assert in_cycle_scope(times, "2026-01").to_pylist() == [False, False, True, True, False]


# --- the comparison, without a pipeline ----------------------------------------------------------------

def _rated(rows: list[dict]) -> pl.LazyFrame:
    defaults = dict(service="VOICE", start_time=0, account_id="A1", plan_id="P", plan_version=1, currency="EUR",
                    zone="NATIONAL", band="PEAK", band_split=False, rate_id="P/v1/voice/NATIONAL/PEAK", tier=-1,
                    charged_units=60, free_units=0, allowance_units=[], connect_fee_micros=0, charge_micros=100,
                    rounding_nanos=0)
    frame = pl.DataFrame([{"source": "S", **defaults, **r} for r in rows],
                         schema_overrides={"plan_version": pl.Int32, "tier": pl.Int32,
                                           "allowance_units": pl.List(pl.Struct({"allowance": pl.Utf8,
                                                                                 "units": pl.Int64}))})
    return frame.with_columns(pl.col("start_time").cast(pl.Datetime("us", "UTC"))).lazy()


def _rejects(rows: list[dict], in_scope: bool = True) -> pl.LazyFrame:
    return pl.DataFrame([{"reason": r["reason"], "record_id": r["record_id"], "source": "S", "start_time": 0,
                          "in_scope": in_scope} for r in rows],
                        schema={"reason": pl.Utf8, "record_id": pl.Utf8, "source": pl.Utf8, "start_time": pl.Int64,
                                "in_scope": pl.Boolean}).with_columns(
        pl.col("start_time").cast(pl.Datetime("us", "UTC"))).lazy()


def test_every_status_and_reason_is_told_apart():
    previous = _rated([{"record_id": "same"}, {"record_id": "price", "charge_micros": 100},
                       {"record_id": "zone"}, {"record_id": "gone-rejected"}, {"record_id": "gone-elsewhere"},
                       {"record_id": "allowance", "free_units": 60, "charge_micros": 0,
                        "allowance_units": [{"allowance": "B", "units": 60}]}])
    rerated = _rated([{"record_id": "same"}, {"record_id": "price", "charge_micros": 130},
                      {"record_id": "zone", "zone": "MOBILE", "rate_id": "P/v1/voice/MOBILE/*"},
                      {"record_id": "allowance", "charge_micros": 100},
                      {"record_id": "recycled"}, {"record_id": "late"}])
    diff = compare_records(
        previous, _rejects([{"record_id": "recycled", "reason": "UNKNOWN_SUBSCRIBER"},
                            {"record_id": "still", "reason": "NO_ZONE"}]),
        rerated, _rejects([{"record_id": "gone-rejected", "reason": "NO_RATE"},
                           {"record_id": "still", "reason": "NO_ZONE"},
                           {"record_id": "other-month", "reason": "NO_ZONE"}], in_scope=False),
        out_of_scope=pl.LazyFrame({"source": ["S"], "record_id": ["gone-elsewhere"], "service_cycle": ["2026-02"]}))
    rows = {r["record_id"]: r for r in diff.changes.iter_rows(named=True)}
    assert set(rows) == {"price", "zone", "allowance", "recycled", "late", "gone-rejected", "gone-elsewhere"}
    assert rows["price"]["reasons"] == "PRICE" and rows["price"]["delta_micros"] == 30
    assert rows["zone"]["reasons"] == "ZONE" and rows["zone"]["delta_micros"] == 0
    assert rows["allowance"]["reasons"] == "ALLOWANCE"
    assert (rows["recycled"]["status"], rows["recycled"]["previous"]) == ("NEWLY_RATED", "REJECTED")
    assert (rows["late"]["status"], rows["late"]["previous"]) == ("NEWLY_RATED", "NONE")
    assert (rows["gone-rejected"]["status"], rows["gone-rejected"]["new_reject_reason"]) == \
        ("NEWLY_REJECTED", "NO_RATE")
    assert (rows["gone-elsewhere"]["status"], rows["gone-elsewhere"]["other_cycle"]) == ("LEFT_CYCLE", "2026-02")
    assert diff.counts == {"UNCHANGED": 1, "CHANGED": 3, "NEWLY_RATED": 2, "NEWLY_REJECTED": 1, "STILL_REJECTED": 1,
                           "LEFT_CYCLE": 1}
    assert diff.recycled == {"UNKNOWN_SUBSCRIBER": 1}
    assert sorted(diff.rejected["record_id"].to_list()) == ["gone-rejected", "still"]  # not "other-month"
    assert diff.previous_micros["EUR"] + diff.changes["delta_micros"].sum() == diff.rerated_micros["EUR"]


def _line(account: str, service: str | None, micros: int, minor: int, tax: int, line_type: str = "USAGE",
          item: str | None = None) -> dict:
    return dict(account_id=account, billing_cycle="2026-01", service_cycle="2026-01", line_type=line_type,
                service=service, zone="NATIONAL", band="PEAK", item=item, description="x", quantity=1, unit="second",
                raw_units=0, charged_units=0, free_units=0, granted_units=0, left_units=0, amount_micros=micros,
                amount_minor=minor, rounding_micros=minor * 10_000 - micros, tax_minor=tax, currency="EUR", late=False)


def test_adjustments_follow_a_record_that_moved_account_and_balance_to_the_micro():
    changes = compare_records(_rated([{"record_id": "r1", "account_id": "A1", "charge_micros": 1_004_000}]),
                              _rejects([]), _rated([{"record_id": "r1", "account_id": "A2", "charge_micros": 996_000}]),
                              _rejects([])).changes
    contributions = record_contributions(changes)
    assert sorted(contributions.select(["account_id", "delta_micros"]).rows()) == [("A1", -1_004_000), ("A2", 996_000)]
    schema = charge_line_schema()
    billed = pa.Table.from_pylist([_line("A1", "VOICE", 1_004_000, 100, 19),
                                   _line("A1", None, 190_000, 19, 0, line_type="TAX", item="VAT")], schema=schema)
    rerated = pa.Table.from_pylist([_line("A2", "VOICE", 996_000, 100, 19),
                                    _line("A2", None, 190_000, 19, 0, line_type="TAX", item="VAT")], schema=schema)
    result = adjustment_lines(billed, rerated, changes, cycle="2026-01", billing_cycle="2026-02", version=2,
                              digits={"EUR": 2})
    lines = {(r["account_id"], r["line_type"]): r for r in result.lines.to_pylist()}
    assert result.balanced
    credit, debit = lines[("A1", "ADJUSTMENT")], lines[("A2", "ADJUSTMENT")]
    assert (credit["amount_micros"], credit["amount_minor"], credit["tax_minor"]) == (-1_004_000, -100, -19)
    assert (debit["amount_micros"], debit["amount_minor"], debit["tax_minor"]) == (996_000, 100, 19)
    assert debit["rounding_micros"] == 100 * 10_000 - 996_000 and "debit" in debit["description"]
    assert lines[("A1", "TAX")]["amount_minor"] == -19 and lines[("A2", "TAX")]["amount_minor"] == 19
    assert all(r["late"] and r["billing_cycle"] == "2026-02" for r in result.lines.to_pylist())
