"""The synthetic operator generator and the usage file writers.

Generated runs are read back with independent readers (fastavro, pyarrow, json) and every record is
classified by a small oracle written here from docs/reference-data.md and cdr_schemas/reasons.py:
the manifest's counts must be exactly what is in the files. The Avro writer is checked against
fastavro on random batches, and its two engines against each other.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth.writers import (
    UsageFileWriter, encode_avro_datums, encode_jsonl_lines, iso_utc_strings, usage_avro_schema, write_usage_file)
from synth import GeneratorConfig, generate
from synth.records import record_schema

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
SMALL = dict(subscribers=400, records=24_000, days=6, files=3, chunk_records=5_000,
             duplicate_rate=0.02, malformed_rate=0.02)


def _config(out: Path, **overrides) -> GeneratorConfig:
    return GeneratorConfig(out_dir=out, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One small generated run per format (and a v2 Avro run), shared by the tests here."""
    out = {}
    for name, overrides in (("avro", {}), ("parquet", {"fmt": "parquet"}), ("jsonl", {"fmt": "jsonl"}),
                            ("avro_v2", {"schema_version": "v2", "avro_codec": "null"})):
        path = tmp_path_factory.mktemp(name)
        out[name] = path, generate(_config(path, **overrides))
    return out


# --- reading generated files back -----------------------------------------------------------

def read_records(path: Path) -> list[dict | None]:
    """Records of one CDR file as dicts (start_time in µs); None for a line that is not JSON."""
    if path.suffix == ".avro":
        with open(path, "rb") as f:
            rows = list(fastavro.reader(f))
        for row in rows:
            row["start_time"] = (row["start_time"] - EPOCH) // dt.timedelta(microseconds=1)
        return rows
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("start_time"), "start_time",
                                 table["start_time"].cast(pa.int64()))
        return table.to_pylist()
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            rows.append(None)
            continue
        if isinstance(row.get("start_time"), str):
            row["start_time"] = (dt.datetime.fromisoformat(row["start_time"]) - EPOCH) // dt.timedelta(microseconds=1)
        rows.append(row)
    return rows


@dataclasses.dataclass
class Oracle:
    """What the pipeline will decide for a record, from the reference files alone."""
    subscriptions: dict[str, list[tuple[int, int | None, str]]]
    numbering: dict[str, tuple[str, str, str]]
    zones: dict[str, dict[str, str]]       # plan -> prefix -> zone (one zone table per plan here)
    roaming: dict[str, dict[str, str]]
    home_networks: set[str]

    @classmethod
    def load(cls, root: Path) -> Oracle:
        def instant(text: str) -> int:
            return (dt.datetime.fromisoformat(text) - EPOCH) // dt.timedelta(microseconds=1)

        def table(name: str) -> dict[str, str]:
            with open(root / name, encoding="utf-8") as f:
                return {row["prefix"]: row["zone"] for row in csv.DictReader(f)}

        subscriptions: dict[str, list] = {}
        with open(root / "subscriptions.csv", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                subscriptions.setdefault(row["msisdn"], []).append(
                    (instant(row["valid_from"]), instant(row["valid_to"]) if row["valid_to"] else None,
                     row["plan_id"]))
        numbering, zones, roaming = {}, {}, {}
        for path in sorted((root / "plans").glob("*.yaml")):
            plan = yaml.safe_load(path.read_text(encoding="utf-8"))
            n = plan["numbering"]
            numbering[plan["plan_id"]] = (n["country_code"], n["international_prefix"], n["trunk_prefix"])
            assert len({v["zone_table"] for v in plan["versions"]}) == 1
            zones[plan["plan_id"]] = table(plan["versions"][0]["zone_table"])
            roaming[plan["plan_id"]] = table(plan["versions"][0]["roaming_table"])
        operator = yaml.safe_load((root / "operator.yaml").read_text(encoding="utf-8"))
        return cls(subscriptions, numbering, zones, roaming, set(operator["home_networks"]))

    def plan_at(self, msisdn: str, start_us: int) -> str | None:
        for valid_from, valid_to, plan in self.subscriptions.get(msisdn, ()):
            if valid_from <= start_us and (valid_to is None or start_us < valid_to):
                return plan
        return None

    def normalise(self, plan: str, dialled: str) -> str:
        cc, international, trunk = self.numbering[plan]
        if dialled.startswith("+"):
            return dialled[1:]
        if dialled.startswith(international):
            return dialled[len(international):]
        assert trunk and dialled.startswith(trunk), f"generated number {dialled!r} is in no known form"
        return cc + dialled[len(trunk):]

    @staticmethod
    def longest_prefix(table: dict[str, str], digits: str) -> str | None:
        for end in range(len(digits), 0, -1):
            if digits[:end] in table:
                return table[digits[:end]]
        return None

    def reason(self, record: dict | None) -> str | None:
        """The reject reason the pipeline must give ``record``, or None when it is rated."""
        if record is None:
            return "MALFORMED_RECORD"
        required = ("record_id", "source", "service", "served_msisdn", "start_time", "duration_s")
        if any(record.get(k) is None for k in required) or record["record_id"] == "":
            return "MISSING_FIELD"
        if (record["service"] not in ("VOICE", "SMS", "DATA") or record["duration_s"] < 0
                or not record["served_msisdn"].isdigit()):
            return "INVALID_FIELD"
        other = record.get("other_party")
        if record["service"] != "DATA":
            if other is None:
                return "MISSING_DESTINATION"
            if not other.removeprefix("+").isdigit():
                return "INVALID_NUMBER"
        plan = self.plan_at(record["served_msisdn"], record["start_time"])
        if plan is None:
            return "UNKNOWN_SUBSCRIBER"
        visited = record.get("visited_network")
        if visited is not None and visited not in self.home_networks:
            zone = self.longest_prefix(self.roaming[plan], visited)
        elif record["service"] == "DATA":
            zone = "HOME"
        else:
            zone = self.longest_prefix(self.zones[plan], self.normalise(plan, other))
        return None if zone is not None else "NO_ZONE"


def audit(root: Path, manifest: dict) -> dict:
    """Counts found in a run's files, in the manifest's terms."""
    oracle = Oracle.load(root / "reference")
    rejected: Counter = Counter()
    seen: dict[tuple[str, str], int] = {}
    duplicates: Counter = Counter()
    written = rated = 0
    for index, entry in enumerate(manifest["files"]):
        records = read_records(root / entry["path"])
        assert len(records) == entry["records"]
        written += len(records)
        for record in records:
            reason = oracle.reason(record)
            if reason is not None:
                rejected[reason] += 1
                continue
            key = (record["source"], record["record_id"])
            if key in seen:
                duplicates["same_file" if seen[key] == index else "cross_file"] += 1
            else:
                seen[key] = index
                rated += 1
    return {"records_written": written, "expected_rejected": dict(rejected),
            "duplicates_injected": dict(duplicates), "expected_rated": rated}


# --- the generator --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["avro", "parquet", "jsonl", "avro_v2"])
def test_manifest_counts_are_what_the_files_hold(runs, name):
    root, manifest = runs[name]
    found = audit(root, manifest)
    assert found["records_written"] == manifest["records_written"] == SMALL["records"]
    assert found["duplicates_injected"] == {k: v for k, v in manifest["duplicates_injected"].items() if v}
    assert found["expected_rejected"] == {k: v for k, v in manifest["malformed_injected"].items() if v}
    assert manifest["expected_rejected"] == manifest["malformed_injected"]
    assert found["expected_rated"] == manifest["expected_rated"]
    assert sum(manifest["expected_rated_by_service"].values()) == manifest["expected_rated"]
    # Every kind of anomaly is present at these rates, and both kinds of duplicates.
    kinds = set(manifest["malformed_injected"])
    assert ("MALFORMED_RECORD" in kinds) == (name == "jsonl")
    assert all(manifest["malformed_injected"][k] > 0 for k in kinds)
    assert manifest["duplicates_injected"]["same_file"] > 0 and manifest["duplicates_injected"]["cross_file"] > 0
    assert sum(manifest["malformed_injected"].values()) == round(SMALL["records"] * SMALL["malformed_rate"])
    assert sum(manifest["duplicates_injected"].values()) == round(SMALL["records"] * SMALL["duplicate_rate"])


def test_files_are_time_sorted_slices_except_resent_duplicates(runs):
    root, manifest = runs["parquet"]
    seen = set()
    for entry in manifest["files"]:
        table = pq.read_table(root / entry["path"])
        start = table["start_time"].cast(pa.int64()).to_numpy()
        keys = list(zip(table["source"].to_pylist(), table["record_id"].to_pylist()))
        first = np.array([not (k in seen or seen.add(k)) for k in keys])
        lo, hi = (int(iso_to_us(entry[k])) for k in ("slice_start", "slice_end"))
        assert np.all(np.diff(start[first]) >= 0)
        assert np.all((start[first] >= lo) & (start[first] < hi))


def iso_to_us(text: str) -> int:
    return (dt.datetime.fromisoformat(text) - EPOCH) // dt.timedelta(microseconds=1)


def test_same_config_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    a = generate(_config(tmp_path / "a", records=6_000))
    b = generate(_config(tmp_path / "b", records=6_000))
    c = generate(_config(tmp_path / "c", records=6_000, seed=2))
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    assert a != c
    for relative in ("cdrs/cdrs-0000.avro", "reference/subscriptions.csv"):
        assert (tmp_path / "a" / relative).read_bytes() != (tmp_path / "c" / relative).read_bytes()


def test_progress_reports_every_chunk_up_to_the_total(tmp_path):
    calls = []
    generate(_config(tmp_path, records=12_000), progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 3
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (12_000, 12_000)


def test_rerun_replaces_earlier_output_but_not_foreign_files(tmp_path):
    generate(_config(tmp_path, records=3_000, files=4))
    generate(_config(tmp_path, records=3_000, files=2))
    assert sorted(p.name for p in (tmp_path / "cdrs").iterdir()) == ["cdrs-0000.avro", "cdrs-0001.avro"]
    (tmp_path / "cdrs" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        generate(_config(tmp_path, records=3_000))


@pytest.mark.parametrize("overrides, message", [
    ({"duplicate_rate": 0.4, "malformed_rate": 0.2}, "too few valid records"),
    ({"schema_version": "v4"}, "schema_version"),
    ({"avro_codec": "snappy"}, "avro_codec"),
    ({"seed": -1}, "seed"),
    ({"fmt": "csv"}, "format"),
])
def test_bad_options_are_rejected_with_the_flag_name(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **overrides)


def test_reference_data_loads_with_zero_issues(runs):
    check = pytest.importorskip("rating.reference", reason="rating.reference (the loader) is not written yet")
    root, manifest = runs["avro"]
    assert check.check_reference(root / "reference") == []
    reference = check.load_reference(root / "reference")
    assert len(reference.plans) >= 4
    assert {a.currency for a in reference.accounts.values()} == {"EUR", "GBP", "USD"}
    assert len({a.bill_cycle_day for a in reference.accounts.values()}) > 20
    assert all(len(t.prefixes) > 2000 for t in reference.zone_tables.values())
    assert manifest["reference"]["plan_changes"] > 0


def test_every_plan_version_has_a_catch_all_rate_per_service(runs):
    root, _ = runs["avro"]
    for path in (root / "reference" / "plans").glob("*.yaml"):
        plan = yaml.safe_load(path.read_text(encoding="utf-8"))
        for version in plan["versions"]:
            keys = {(r["service"], r["zone"], r["band"]) for r in version["rates"]}
            assert {("voice", "*", "*"), ("sms", "*", "*"), ("data", "*", "*")} <= keys, path.name


def test_valid_records_rate_without_rejects_in_the_rating_engine(runs):
    engine_module = pytest.importorskip("rating.engine", reason="rating.engine is not written yet")
    from cdr_schemas.arrow_mapping import usage_batch_schema

    root, manifest = runs["parquet"]
    oracle = Oracle.load(root / "reference")
    tables = [pq.read_table(root / e["path"]) for e in manifest["files"]]
    table = pa.concat_tables(tables)
    rows = table.to_pylist()
    for row in rows:
        row["start_time"] = (row["start_time"] - EPOCH) // dt.timedelta(microseconds=1)
    keep = [oracle.reason(row) is None for row in rows]
    valid = table.filter(pa.array(keep))
    _, first = np.unique(np.array([f"{s}\0{r}" for s, r in zip(valid["source"].to_pylist(),
                                                               valid["record_id"].to_pylist())]), return_index=True)
    valid = valid.take(pa.array(np.sort(first)))
    extra = {"rat_type": pa.nulls(valid.num_rows, pa.string()),
             "partial_sequence": pa.array(np.zeros(valid.num_rows, np.int32)),
             "usage_type": pa.nulls(valid.num_rows, pa.string()), "quantity": pa.nulls(valid.num_rows, pa.int64()),
             "subscriber": pa.nulls(valid.num_rows, pa.string()),
             "subscriber_kind": pa.nulls(valid.num_rows, pa.string()),
             "input_file": pa.array(["x"] * valid.num_rows), "input_position": pa.array(np.arange(valid.num_rows))}
    schema = usage_batch_schema()
    columns = [valid[f.name].combine_chunks() if f.name in valid.column_names else extra[f.name] for f in schema]
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    engine = engine_module.RatingEngine.load(str(root / "reference"))
    rated, rejected = engine.rate(batch)
    assert rejected.num_rows == 0, Counter(rejected.column("reason").to_pylist())
    assert rated.num_rows == manifest["expected_rated"]


# --- the writers ----------------------------------------------------------------------------

_LONG = st.integers(-2**63, 2**63 - 1)
_INT = st.integers(-2**31, 2**31 - 1)
_MICROS = st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999)   # years 1..9999
_TEXT = st.text(max_size=40)


def _row(v2: bool):
    fields = dict(
        record_id=_TEXT, source=_TEXT, service=st.sampled_from(["VOICE", "SMS", "DATA"]), served_msisdn=_TEXT,
        other_party=st.none() | _TEXT, start_time=_MICROS, duration_s=_LONG, bytes_up=_LONG, bytes_down=_LONG,
        message_count=_INT, visited_network=st.none() | _TEXT, cell_id=st.none() | _TEXT,
        imsi=st.none() | _TEXT, apn=st.none() | _TEXT, termination_cause=st.none() | _TEXT)
    if v2:
        fields.update(rat_type=st.none() | _TEXT, partial_sequence=_INT)
    return st.fixed_dictionaries(fields)


def _batch(rows: list[dict]) -> pa.RecordBatch:
    """A generator-shaped batch (all v2 columns) from row dicts (start_time in µs)."""
    schema = record_schema()
    full = [{**{"rat_type": None, "partial_sequence": 0, "usage_type": None, "quantity": None, "subscriber": None,
              "subscriber_kind": None}, **r} for r in rows]
    columns = []
    for field in schema:
        values = [r[field.name] for r in full]
        if field.name == "start_time":
            columns.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            columns.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _expected(rows: list[dict], version: str) -> list[dict]:
    names = [f["name"] for f in usage_avro_schema(version)["fields"]]
    full = [{**{"rat_type": None, "partial_sequence": 0, "usage_type": None, "quantity": None, "subscriber": None,
              "subscriber_kind": None}, **r} for r in rows]
    return [{k: (EPOCH + dt.timedelta(microseconds=r[k]) if k == "start_time" else r[k]) for k in names}
            for r in full]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), version=st.sampled_from(["v1", "v2"]), codec=st.sampled_from(["null", "deflate"]),
       engine=st.sampled_from(["numba", "numpy"]))
def test_avro_files_read_back_identically_with_fastavro(tmp_path, data, version, codec, engine):
    rows = data.draw(st.lists(_row(version == "v2"), max_size=30))
    split = data.draw(st.integers(0, len(rows)))
    path = tmp_path / f"t-{version}-{codec}-{engine}.avro"
    batches = [_batch(rows[:split]), _batch(rows[split:])]
    assert write_usage_file(path, batches, "avro", version, avro_codec=codec, engine=engine) == len(rows)
    with open(path, "rb") as f:
        got = list(fastavro.reader(f))
    assert got == _expected(rows, version)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(_row(True), min_size=1, max_size=30), version=st.sampled_from(["v1", "v2"]))
def test_numba_and_numpy_engines_encode_the_same_bytes(rows, version):
    batch = _batch(rows)
    fields = usage_avro_schema(version)
    assert encode_avro_datums(batch, fields, engine="numba").equals(encode_avro_datums(batch, fields, engine="numpy"))
    for newline in (False, True):
        assert encode_jsonl_lines(batch, fields, newline, engine="numba").equals(
            encode_jsonl_lines(batch, fields, newline, engine="numpy"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row(True), min_size=1, max_size=20))
def test_json_lines_parse_back_with_nulls_left_out(tmp_path, rows):
    path = tmp_path / "t.jsonl"
    write_usage_file(path, [_batch(rows)], "jsonl", "v2")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(rows) + 1
    for line, row in zip(lines, _expected(rows, "v2")):
        parsed = json.loads(line)
        assert dt.datetime.fromisoformat(parsed.pop("start_time")) == row.pop("start_time")
        assert parsed == {k: v for k, v in row.items() if v is not None}


def test_parquet_files_hold_the_schema_version_columns(tmp_path):
    rows = [dict(record_id="1", source="MSC", service="SMS", served_msisdn="4915100000001", other_party="0151",
                 start_time=1_767_225_600_000_000, duration_s=0, bytes_up=0, bytes_down=0, message_count=2,
                 visited_network=None, cell_id="c", imsi=None, apn=None, termination_cause=None)]
    for version in ("v1", "v2"):
        write_usage_file(tmp_path / f"{version}.parquet", [_batch(rows)], "parquet", version)
        table = pq.read_table(tmp_path / f"{version}.parquet")
        assert table.column_names == [f["name"] for f in usage_avro_schema(version)["fields"]]
        assert table["start_time"].cast(pa.int64()).to_pylist() == [1_767_225_600_000_000]
        assert table["message_count"].to_pylist() == [2]


def test_iso_strings_are_utc_with_z_and_fractions_only_when_needed():
    assert iso_utc_strings(np.array([0, 1_767_225_605_000_000])).to_pylist() == [
        "1970-01-01T00:00:00Z", "2026-01-01T00:00:05Z"]
    assert iso_utc_strings(np.array([-1, 951_782_400_000_123])).to_pylist() == [
        "1969-12-31T23:59:59.999999Z", "2000-02-29T00:00:00.000123Z"]


def test_writers_refuse_records_avro_cannot_hold(tmp_path):
    good = dict(record_id="1", source="MSC", service="VOICE", served_msisdn="49151", other_party=None,
                start_time=0, duration_s=1, bytes_up=0, bytes_down=0, message_count=0, visited_network=None,
                cell_id=None, imsi=None, apn=None, termination_cause=None)
    fax = _batch([{**good, "service": "FAX"}])
    with pytest.raises(ValueError, match=r"column 'service'.*not symbols"):
        write_usage_file(tmp_path / "a.avro", [fax], "avro")
    missing = _batch([good]).set_column(3, "served_msisdn", pa.array([None], pa.string()))
    for fmt in ("avro", "parquet"):
        with pytest.raises(ValueError, match=r"column 'served_msisdn'.*not nullable"):
            write_usage_file(tmp_path / f"b.{fmt}", [missing], fmt)
    # JSON lines is the loose edge format: the key is simply left out.
    write_usage_file(tmp_path / "b.jsonl", [missing, fax], "jsonl")
    lines = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert "served_msisdn" not in lines[0] and lines[1]["service"] == "FAX"
    with pytest.raises(ValueError, match="no column 'source'"):
        write_usage_file(tmp_path / "c.avro", [_batch([good]).drop_columns(["source"])], "avro")


def test_jsonl_writer_takes_prepared_lines_only_one_per_newline(tmp_path):
    with UsageFileWriter(tmp_path / "x.jsonl", "jsonl") as writer:
        writer.write_jsonl_lines(pa.array([b'{"a":1}\n', b'{"broken\n']))
        with pytest.raises(ValueError, match="one newline"):
            writer.write_jsonl_lines(pa.array([b'{"a":1}']))
        with pytest.raises(ValueError, match="one newline"):
            writer.write_jsonl_lines(pa.array([b'{"a":\n1}\n']))
    assert (tmp_path / "x.jsonl").read_bytes() == b'{"a":1}\n{"broken\n'
