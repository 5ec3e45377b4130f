"""Re-rating a cycle: versions in the output store, record-by-record diff, adjustments, what-if.

The operator is ``tests/data/reference_min`` (copied: the tests change prices and subscriptions);
CDRs are small JSON-lines files written here, so every expected change can be named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from cdr_schemas import charge_line_schema
from pipelines.batch import run_batch
from pipelines.options import BatchConfig
from pipelines.rerate import RerateConfig
from pipelines.cli import rerate as rerate_cli
from rating.rerate import adjustment_lines, compare_records, record_contributions
from sinks import store
from sinks.publish import close_cycles
from tests.month_cdrs import DE_S, UNKNOWN, cdr, month_rows, reference_with, rerate, write_jsonl
from tests.paths import DIRECT

@pytest.fixture(scope="module")
def month(tmp_path_factory, reference_min_dir):
    """A rated month: reference data, two CDR files and the batch job's output store (version 1)."""
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
    shutil.copytree(month / "store", tmp_path / "store")
    return tmp_path / "store"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


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
    close_cycles(out, "2026-01")
    base_files = _digest(out)
    base_rated = store.current_rated(out, "2026-01")
    billed = store.current_charges(out, service_cycle="2026-01")
    invoice_before = store.current_invoices(out, billing_cycle="2026-02")

    result = rerate(month, out, reference_with(month, tmp_path, europe_price="0.35"))

    assert result["version"] == 2 and result["closed"] and result["balanced"]
    version = store.current_version(out, "2026-01")
    assert version.number == 2 and version.path == out / "rerates" / "2026-01" / "v2"
    assert json.loads((out / "CURRENT.json").read_text())["cycles"] == {"2026-01": "rerates/2026-01/v2"}
    # Only the France calls of MOBILE_S subscribers changed, for their new price only.
    changes = pl.read_parquet(version.path / "diff" / "changes.parquet")
    expected = pl.from_arrow(base_rated).filter((pl.col("zone") == "EUROPE") & (pl.col("plan_id") == "MOBILE_S"))
    assert changes.height == expected.height > 0
    assert set(changes["status"]) == {"CHANGED"} and set(changes["reasons"]) == {"PRICE"}
    assert set(changes["new_zone"]) == {"EUROPE"} and (changes["delta_micros"] > 0).all()
    assert result["totals"]["records"]["UNCHANGED"] == base_rated.num_rows - expected.height
    # Adjustments per account equal the re-rated minus the previous charges, to the micro-unit.
    rerated = store.current_rated(out, "2026-01")
    before, after = _by_account(base_rated), _by_account(rerated)
    lines = pl.read_parquet(version.path / "adjustments" / "lines.parquet")
    adjustments = lines.filter(pl.col("line_type") == "ADJUSTMENT")
    assert set(adjustments["account_id"]) == {"ACC000001", "ACC000002"}
    for row in adjustments.iter_rows(named=True):
        assert row["amount_micros"] == after[row["account_id"]] - before[row["account_id"]]
        assert (row["billing_cycle"], row["service_cycle"], row["late"], row["service"]) == \
            ("2026-02", "2026-01", True, "VOICE")
    records = pl.read_parquet(version.path / "adjustments" / "records.parquet")
    assert records.height == expected.height and records["delta_micros"].sum() == adjustments["amount_micros"].sum()
    # Billed lines plus adjustments now equal the re-rated lines: micros, minor units and tax.
    current = store.current_charges(out, service_cycle="2026-01")
    recomputed = pl.read_parquet(version.path / "rerated_charges")
    assert _money_by_kind(current) == _money_by_kind(recomputed)
    assert _money_by_kind(current) != _money_by_kind(billed)
    # ... and they reach the next open invoice, whose summary adds them (tax included).
    invoice_after = store.current_invoices(out, billing_cycle="2026-02")
    total = lambda t, a: sum(r["total_minor"] for r in t.to_pylist() if r["account_id"] == a)  # noqa: E731
    adjusted = lines.filter(pl.col("account_id") == "ACC000001")["amount_minor"].sum()
    assert total(invoice_after, "ACC000001") == total(invoice_before, "ACC000001") + adjusted
    # The base output (version 1) is untouched and readable; other cycles are not re-rated.
    assert {k: v for k, v in _digest(out).items() if not k.startswith(("rerates/", "CURRENT.json"))} == base_files
    assert [v.number for v in store.list_versions(out, "2026-01")] == [1, 2]
    assert store.current_version(out, "2025-12").is_base
    totals = json.loads((version.path / "control" / "totals.json").read_text())
    assert totals["out_of_scope"]["rated"] == {"2025-12": 8 * 3, "2026-02": 2}  # ACC000002 before 15 Jan; February
    assert totals["records_balanced"] and totals["adjustments"]["balanced"]


def test_rerating_twice_changes_nothing_the_second_time(month, tmp_path):
    out = _copy_store(month, tmp_path)
    close_cycles(out, "2026-01")
    reference = reference_with(month, tmp_path, europe_price="0.35")
    first = rerate(month, out, reference)
    assert first["version"] == 2 and first["totals"]["adjustments"]["lines"] > 0
    files = _digest(out)

    second = rerate(month, out, reference)

    assert second["version"] is None and second["previous_version"] == 2
    assert second["totals"]["records"]["CHANGED"] == 0 and "adjustments" in second["totals"]
    assert second["totals"]["adjustments"]["lines"] == 0
    assert second["summary"]["totals"]["EUR"]["delta_micros"] == 0
    assert _digest(out) == files


def test_late_record_takes_the_allowance_in_event_time_and_adjustments_net_out(month, tmp_path):
    """A 5-hour call used the whole VOICE_300 bundle; an earlier 5-hour call arrives in a later file."""
    cdrs = tmp_path / "cdrs"
    reference = month / "reference"
    other = [cdr(10 + i, DE_S, f"2026-01-{14 + i}T10:00:00Z", duration_s=90) for i in range(3)]
    write_jsonl(cdrs / "day12.jsonl", [cdr(2, DE_S, "2026-01-12T10:00:00Z", duration_s=18_000), *other])
    out = tmp_path / "store"
    run_batch(BatchConfig(input_glob=str(cdrs / "*"), reference_dir=str(reference), output_dir=str(out), shards=3),
              DIRECT)
    close_cycles(out, "2026-01")
    billed = store.current_charges(out, service_cycle="2026-01")
    write_jsonl(cdrs / "day05-late.jsonl", [cdr(1, DE_S, "2026-01-05T10:00:00Z", duration_s=18_000)])

    result = rerate(month, out, reference, glob=str(cdrs / "*"))

    rerated = {r["record_id"]: r for r in store.current_rated(out, "2026-01").to_pylist()}
    assert rerated["000001"]["free_units"] == 18_000 and rerated["000001"]["charge_micros"] == 0
    assert rerated["000002"]["free_units"] == 0 and rerated["000002"]["charge_micros"] > 0
    changes = {r["record_id"]: r for r in pl.read_parquet(
        store.current_version(out, "2026-01").path / "diff" / "changes.parquet").iter_rows(named=True)}
    assert (changes["000001"]["status"], changes["000001"]["previous"]) == ("NEWLY_RATED", "NONE")
    assert changes["000002"]["status"] == "CHANGED" and "ALLOWANCE" in changes["000002"]["reasons"].split(",")
    assert set(changes) == {"000001", "000002"}
    # The same answer as rating both files from scratch, and billed + adjustments = that answer.
    fresh = tmp_path / "fresh"
    run_batch(BatchConfig(input_glob=str(cdrs / "*"), reference_dir=str(reference), output_dir=str(fresh), shards=3),
              DIRECT)
    columns = [c for c in store.current_rated(out, "2026-01").column_names]
    assert store.current_rated(out, "2026-01").sort_by("record_id").equals(
        store.current_rated(fresh, "2026-01").select(columns).sort_by("record_id"))
    usage = lambda lines: {k: v for k, v in _money_by_kind(lines).items() if k[1] != "PLAN_FEE"}  # noqa: E731
    assert usage(store.current_charges(out, service_cycle="2026-01")) == \
        usage(store.current_charges(fresh, service_cycle="2026-01"))
    adjustment = result["totals"]["adjustments"]["by_currency"]["EUR"]["amount_micros"]
    records = pl.read_parquet(store.current_version(out, "2026-01").path / "adjustments" / "records.parquet")
    assert adjustment == records["delta_micros"].sum() == rerated["000002"]["charge_micros"]
    assert adjustment == usage(store.current_charges(fresh, service_cycle="2026-01"))[("ACC000001", "VOICE")][0] \
        - usage(billed)[("ACC000001", "VOICE")][0]


def test_a_subscription_added_after_a_reject_recycles_the_record(month, tmp_path):
    out = _copy_store(month, tmp_path)
    subscription = f"{UNKNOWN},ACC000001,MOBILE_S,2026-01-01T00:00:00+01:00,"
    reference = reference_with(month, tmp_path, subscription=subscription)
    rejects_before = store.current_rejected(out, "2026-01")
    assert "UNKNOWN_SUBSCRIBER" in rejects_before.column("reason").to_pylist()

    result = rerate(month, out, reference)

    assert result["version"] == 2 and not result["closed"] and result["balanced"]
    totals = result["totals"]
    assert totals["recycled"] == {"UNKNOWN_SUBSCRIBER": 1}
    assert totals["records"]["NEWLY_RATED"] == 1 and totals["records"]["CHANGED"] == 0
    assert totals["in_cycle"]["rejected"] == {} and totals["out_of_scope"]["rejected"] == 1  # the broken line
    version = store.current_version(out, "2026-01")
    recycled = pl.read_parquet(version.path / "diff" / "changes.parquet").row(0, named=True)
    assert (recycled["status"], recycled["previous"], recycled["old_reject_reason"]) == \
        ("NEWLY_RATED", "REJECTED", "UNKNOWN_SUBSCRIBER")
    assert recycled["account_id"] == "ACC000001" and recycled["new_charge_micros"] > 0
    assert UNKNOWN in store.current_rated(out, "2026-01").column("served_msisdn").to_pylist()
    assert "UNKNOWN_SUBSCRIBER" not in store.current_rejected(out, "2026-01").column("reason").to_pylist()
    # An open cycle: the new version replaces the old one, no adjustments; the new line pays its fee.
    assert not (version.path / "adjustments").exists()
    fees = store.current_charges(out, service_cycle="2026-01").filter(
        pa.compute.equal(store.current_charges(out, service_cycle="2026-01").column("line_type"), "PLAN_FEE"))
    assert f"MONTHLY {UNKNOWN}" in fees.column("item").to_pylist()
    invoices = store.current_invoices(out, billing_cycle="2026-01")
    acc1 = [r for r in invoices.to_pylist() if r["account_id"] == "ACC000001"][0]
    lines = store.current_charges(out, billing_cycle="2026-01")
    assert acc1["total_minor"] == sum(r["amount_minor"] for r in lines.to_pylist() if r["account_id"] == "ACC000001")


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

    assert result["version"] == 2
    for key in ("records", "totals", "by_plan", "by_zone", "by_account_decile", "top_records"):
        assert json.loads(json.dumps(result["summary"][key])) == report["summary"][key], key
    summary = json.loads((store.current_version(out, "2026-01").path / "diff" / "summary.json").read_text())
    assert summary["totals"] == report["summary"]["totals"]


def test_inputs_must_cover_the_current_version(month, tmp_path, monkeypatch):
    out = _copy_store(month, tmp_path)
    files = _digest(out)
    with pytest.raises(ValueError, match=r"1 file\(s\) that --input does not match.*b.jsonl"):
        rerate(month, out, month / "reference", glob=str(month / "cdrs" / "a.jsonl"))
    # Past that check, the comparison itself refuses to credit records it cannot find.
    monkeypatch.setattr("pipelines.rerate.check_inputs_cover", lambda previous, paths: None)
    with pytest.raises(ValueError, match=r"rated in 2026-01 before are in none of the inputs.*nothing was published"):
        rerate(month, out, month / "reference", glob=str(month / "cdrs" / "a.jsonl"))
    assert _digest(out) == files
    with pytest.raises(ValueError, match="no published output store"):
        rerate(month, tmp_path / "nowhere", month / "reference")
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        RerateConfig(cycle="2026-1", input_glob="x", reference_dir="r", output_dir=str(out))
    assert not (out / "rerates").exists() and not (out / ".store.lock").exists()



def test_an_unreadable_input_file_fails_the_rerate_naming_it(month, tmp_path, monkeypatch):
    out = _copy_store(month, tmp_path)
    files = _digest(out)
    inputs = tmp_path / "cdrs"
    shutil.copytree(month / "cdrs", inputs)
    (inputs / "zz-broken.avro").write_bytes(b"Obj\x01garbage")
    monkeypatch.setattr("pipelines.rerate.check_inputs_cover", lambda previous, paths: None)  # copies: other paths
    with pytest.raises(ValueError, match=r"^cannot open \S*zz-broken.avro: unreadable Avro header"):
        rerate(month, out, month / "reference", glob=str(inputs / "*"))
    assert _digest(out) == files and not (out / "rerates").exists()

# --- the store, without a pipeline ---------------------------------------------------------------------

def test_publishing_a_version_is_atomic_and_previous_versions_stay_readable(tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    (out / "_SUCCESS").write_text("{}")
    for number in (2, 3):
        staging = store.version_staging_dir(out, "2026-01", f"run{number}")
        (staging / "rated" / "service_cycle=2026-01").mkdir(parents=True)
        with store.store_lock(out, "test"):
            with pytest.raises(ValueError, match="another run is writing the output store"):
                with store.store_lock(out, "second"):
                    pass
            assert store.next_version_number(out, "2026-01") == number
            store.publish_version(out, "2026-01", staging, number=number, manifest={"run_id": f"run{number}"})
        assert not staging.exists()
    assert [v.number for v in store.list_versions(out, "2026-01")] == [2, 3]
    assert store.current_version(out, "2026-01").number == 3
    assert store.current_version(out, "2026-02").is_base
    assert [h["version"] for h in store.read_current(out)["history"]] == [2, 3]
    assert json.loads((out / "rerates" / "2026-01" / "v2" / "_SUCCESS").read_text())["version"] == 2
    with pytest.raises(ValueError, match="not the next one"):
        store.publish_version(out, "2026-01", tmp_path, number=3, manifest={})


def test_reject_scope_is_the_utc_calendar_month():
    times = pa.array([0, None, 1_767_225_600_000_000, 1_769_903_999_999_999, 1_769_904_000_000_000],
                     pa.timestamp("us", tz="UTC"))  # 1970, null, 2026-01-01T00:00Z, 2026-01-31T23:59:59.999999Z, Feb 1
    assert store.in_cycle_scope(times, "2026-01").to_pylist() == [False, False, True, True, False]


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
