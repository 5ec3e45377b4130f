"""Decoders: every format decodes good files exactly, bad records become rejects, nothing is lost."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import json
import tempfile
import zlib
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_schemas import load_schema, rejected_schema, usage_batch_schema
from cdr_schemas.decoders import DecodedBatch, InputFileError, decode_file, detect_format
from cdr_schemas.decoders import avro, jsonl
from cdr_schemas.registry import USAGE_V1, USAGE_V2
from cdr_schemas.validate import validate_usage

USAGE_FIELDS = [f["name"] for f in load_schema(USAGE_V2)["fields"]]
V1_FIELDS = [f["name"] for f in load_schema(USAGE_V1)["fields"]]
START_US = 1_767_600_900_250_000  # 2026-01-05T08:15:00.250Z
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1


# --- building inputs ---------------------------------------------------------------------------


def record(i: int = 0, **overrides) -> dict:
    """A complete v2 usage record; start_time in epoch microseconds."""
    service = ("VOICE", "SMS", "DATA")[i % 3]
    value = {
        "record_id": f"r{i}", "source": "msc-1", "service": service,
        "served_msisdn": f"4477009{i:05d}", "other_party": None if service == "DATA" else f"0207{i:07d}",
        "start_time": START_US + i * 1_000_000, "duration_s": 60 + i, "bytes_up": 10 * i,
        "bytes_down": 20 * i, "message_count": 1 if service == "SMS" else 0,
        "visited_network": "20801" if i % 4 == 0 else None, "cell_id": f"cell-{i}", "imsi": None,
        "apn": "internet" if service == "DATA" else None, "termination_cause": "normalRelease",
        "rat_type": "EUTRAN", "partial_sequence": i % 2,
    }
    value.update(overrides)
    return value


def iso(micros: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=micros)
    return moment.isoformat().replace("+00:00", "Z")


def write_avro(path: Path, records: list[dict], *, schema: str = USAGE_V2, codec: str = "null",
               sync_interval: int = 16000) -> Path:
    parsed = fastavro.parse_schema(load_schema(schema))
    with open(path, "wb") as out:
        fastavro.writer(out, parsed, records, codec=codec, sync_interval=sync_interval)
    return path


def usage_table(records: list[dict], fields: list[str] = USAGE_FIELDS) -> pa.Table:
    schema = pa.schema([usage_batch_schema().field(name) for name in fields])
    return pa.Table.from_pylist([{k: r[k] for k in fields} for r in records], schema=schema)


def write_parquet(path: Path, table: pa.Table, **kwargs) -> Path:
    pq.write_table(table, path, **kwargs)
    return path


def json_line(rec: dict, *, start_time_as: str = "iso") -> str:
    value = dict(rec)
    if start_time_as == "iso":
        value["start_time"] = iso(rec["start_time"])
    return json.dumps(value)


def write_jsonl(path: Path, lines: list[str | bytes], *, newline: bytes = b"\n") -> Path:
    data = newline.join(line if isinstance(line, bytes) else line.encode() for line in lines) + newline
    data = {".gz": gzip.compress, ".bz2": bz2.compress}.get(path.suffix.lower(), bytes)(data)
    path.write_bytes(data)
    return path


def decode_all(path, **kwargs) -> tuple[pa.Table, pa.Table, list[DecodedBatch]]:
    batches = list(decode_file(str(path), **kwargs))
    for batch in batches:
        assert batch.usage.schema.equals(usage_batch_schema())
        assert batch.rejected.schema.equals(rejected_schema())
    usage = pa.Table.from_batches([b.usage for b in batches], schema=usage_batch_schema())
    rejected = pa.Table.from_batches([b.rejected for b in batches], schema=rejected_schema())
    return usage, rejected, batches


def usage_values(usage: pa.Table) -> list[dict]:
    """The usage rows as dicts of the Avro fields, start_time back in epoch microseconds."""
    rows = usage.select(USAGE_FIELDS)
    rows = rows.set_column(rows.schema.get_field_index("start_time"), "start_time",
                           rows.column("start_time").cast(pa.int64()))
    return rows.to_pylist()


def rejects_by_position(rejected: pa.Table) -> dict[int, dict]:
    return {row["input_position"]: row for row in rejected.to_pylist()}


def assert_every_record_once(usage: pa.Table, rejected: pa.Table, positions) -> None:
    seen = usage.column("input_position").to_pylist() + rejected.column("input_position").to_pylist()
    assert sorted(seen) == sorted(positions)


# --- good files decode exactly -----------------------------------------------------------------


RECORDS = [record(i) for i in range(12)]


def _write_good(fmt: str, directory: Path, records: list[dict]) -> Path:
    if fmt == "avro":
        return write_avro(directory / "good.avro", records, codec="deflate")
    if fmt == "parquet":
        return write_parquet(directory / "good.parquet", usage_table(records))
    return write_jsonl(directory / "good.jsonl", [json_line(r) for r in records])


@pytest.mark.parametrize("fmt", ["avro", "parquet", "jsonl"])
def test_good_file_decodes_to_exactly_its_records(fmt, tmp_path):
    path = _write_good(fmt, tmp_path, RECORDS)
    usage, rejected, _ = decode_all(path)
    assert rejected.num_rows == 0
    assert usage_values(usage) == RECORDS
    assert usage.column("input_file").to_pylist() == [str(path)] * len(RECORDS)
    first = 1 if fmt == "jsonl" else 0
    assert usage.column("input_position").to_pylist() == list(range(first, first + len(RECORDS)))


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_optional_text = st.none() | _text
_valid_records = st.fixed_dictionaries({
    "record_id": _text, "source": _text, "service": st.sampled_from(["VOICE", "SMS", "DATA"]),
    "served_msisdn": _text, "other_party": _optional_text,
    # Within Python's datetime range so that JSON can carry it as ISO 8601.
    "start_time": st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),
    "duration_s": st.integers(-(1 << 63), INT64_MAX), "bytes_up": st.integers(0, INT64_MAX),
    "bytes_down": st.integers(-5, 5), "message_count": st.integers(-(1 << 31), INT32_MAX),
    "visited_network": _optional_text, "cell_id": _optional_text, "imsi": _optional_text,
    "apn": _optional_text, "termination_cause": _optional_text, "rat_type": _optional_text,
    "partial_sequence": st.integers(-(1 << 31), INT32_MAX),
})


@settings(max_examples=25, deadline=None)
@given(records=st.lists(_valid_records, max_size=8), batch_size=st.integers(1, 5),
       start_time_as=st.sampled_from(["iso", "int"]))
def test_random_valid_records_decode_identically_from_every_format(records, batch_size, start_time_as):
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        paths = [
            write_avro(directory / "r.avro", records),
            write_parquet(directory / "r.parquet", usage_table(records)),
            write_jsonl(directory / "r.jsonl", [json_line(r, start_time_as=start_time_as) for r in records]),
        ]
        for path in paths:
            usage, rejected, batches = decode_all(path, batch_size=batch_size)
            assert rejected.num_rows == 0, rejected.to_pylist()
            assert usage_values(usage) == records, path.suffix
            assert all(b.num_records <= batch_size for b in batches)


def test_json_start_time_forms_are_the_same_instant(tmp_path):
    forms = ['"2026-01-05T08:15:00.250Z"', '"2026-01-05T09:15:00.250+01:00"', '"2026-01-05T03:15:00.25-05:00"',
             str(START_US)]
    lines = [json_line(record(0)).replace(f'"{iso(START_US)}"', form) for form in forms]
    usage, rejected, _ = decode_all(write_jsonl(tmp_path / "t.jsonl", lines))
    assert rejected.num_rows == 0
    assert usage.column("start_time").cast(pa.int64()).to_pylist() == [START_US] * len(forms)


def test_json_fields_with_defaults_may_be_absent_or_null(tmp_path):
    minimal = {"record_id": "a", "source": "s", "service": "SMS", "served_msisdn": "1",
               "start_time": "2026-01-05T08:15:00Z", "duration_s": 0}
    lines = [json.dumps(minimal), json.dumps(dict(minimal, bytes_up=None, message_count=None, other_party=None)),
             json.dumps(dict(minimal, unknown_field={"nested": [1, 2]}, input_file="ignored"))]
    usage, rejected, _ = decode_all(write_jsonl(tmp_path / "d.jsonl", lines))
    assert rejected.num_rows == 0
    for row in usage_values(usage):
        assert (row["bytes_up"], row["bytes_down"], row["message_count"], row["partial_sequence"]) == (0, 0, 1, 0)
        assert row["other_party"] is None and row["rat_type"] is None
    assert usage.column("input_file").to_pylist() == [str(tmp_path / "d.jsonl")] * 3


def test_json_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path):
    lines = [json_line(record(0)), "", "   \t", json_line(record(1)), ""]
    usage, rejected, _ = decode_all(write_jsonl(tmp_path / "b.jsonl", lines, newline=b"\r\n"))
    assert rejected.num_rows == 0
    assert usage.column("input_position").to_pylist() == [1, 4]
    assert usage_values(usage) == [record(0), record(1)]


def test_json_last_line_without_newline_and_bom_are_read(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json_line(record(0)).encode() + b"\n" + json_line(record(1)).encode())
    usage, rejected, _ = decode_all(path)
    assert usage_values(usage) == [record(0), record(1)] and rejected.num_rows == 0


@pytest.mark.parametrize("read_bytes", [1, 7, 100])
def test_json_lines_split_across_reads_decode_the_same(read_bytes, tmp_path, monkeypatch):
    lines = [json_line(r) for r in RECORDS[:5]] + ["", "oops", json_line(RECORDS[5])]
    path = write_jsonl(tmp_path / "r.jsonl", lines, newline=b"\r\n")
    expected_usage, expected_rejected, _ = decode_all(path, batch_size=3)
    monkeypatch.setattr(jsonl, "_READ_BYTES", read_bytes)
    usage, rejected, _ = decode_all(path, batch_size=3)
    assert usage.equals(expected_usage) and rejected.equals(expected_rejected)
    assert rejected.column("input_position").to_pylist() == [7]
    assert rejected.column("raw").to_pylist() == [b"oops"]


@pytest.mark.parametrize("name", ["g.jsonl.gz", "b.ndjson.bz2", "G.JSON.GZ"])
def test_compressed_json_lines_decode(name, tmp_path):
    path = write_jsonl(tmp_path / name, [json_line(r) for r in RECORDS])
    usage, _, _ = decode_all(path)
    assert usage_values(usage) == RECORDS


def test_concatenated_gzip_members_are_one_file(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    halves = [RECORDS[:5], RECORDS[5:]]
    path.write_bytes(b"".join(gzip.compress("".join(json_line(r) + "\n" for r in half).encode()) for half in halves))
    usage, _, _ = decode_all(path)
    assert usage_values(usage) == RECORDS


def test_avro_v1_file_resolves_to_v2_with_defaults(tmp_path):
    v1_records = [{k: r[k] for k in V1_FIELDS} for r in RECORDS]
    path = write_avro(tmp_path / "v1.avro", v1_records, schema=USAGE_V1, codec="deflate", sync_interval=200)
    usage, rejected, _ = decode_all(path)
    assert rejected.num_rows == 0
    assert usage_values(usage) == [dict(r, rat_type=None, partial_sequence=0) for r in v1_records]


def test_parquet_v1_columns_take_v2_defaults_and_safe_casts_apply(tmp_path):
    table = usage_table(RECORDS, V1_FIELDS)
    table = table.set_column(table.schema.get_field_index("duration_s"), "duration_s",
                             table.column("duration_s").cast(pa.int32()))
    table = table.set_column(table.schema.get_field_index("message_count"), "message_count",
                             table.column("message_count").cast(pa.int64()))
    table = table.set_column(table.schema.get_field_index("start_time"), "start_time",
                             table.column("start_time").cast(pa.timestamp("ms", tz="Europe/Paris")))
    usage, rejected, _ = decode_all(write_parquet(tmp_path / "v1.parquet", table))
    assert rejected.num_rows == 0
    expected = [dict(r, rat_type=None, partial_sequence=0, start_time=r["start_time"] // 1000 * 1000)
                for r in RECORDS]
    assert usage_values(usage) == expected


# --- malformed records become rejects ----------------------------------------------------------


def test_json_bad_lines_become_rejects_with_reason_raw_and_line_number(tmp_path):
    good = record(0)
    bad = {
        2: (b'{"record_id": "x", "source": ', "MALFORMED_RECORD", "not valid JSON"),
        3: (b"[1, 2, 3]", "MALFORMED_RECORD", "JSON array, not an object"),
        4: (json.dumps({k: v for k, v in json.loads(json_line(good)).items() if k != "duration_s"}).encode(),
            "MISSING_FIELD", "duration_s is absent or null"),
        5: (json_line(dict(good, duration_s=None)).encode(), "MISSING_FIELD", "duration_s is absent or null"),
        6: (json_line(good).replace('"duration_s": 60', '"duration_s": "60"').encode(),
            "INVALID_FIELD", "duration_s must be"),
        7: (json_line(good).replace('"duration_s": 60', '"duration_s": 60.5').encode(),
            "INVALID_FIELD", "duration_s must be"),
        8: (json_line(dict(good, service="FAX")).encode(), "INVALID_FIELD", "service 'FAX'"),
        9: (json_line(good).replace('Z"', '"').encode(), "INVALID_FIELD", "start_time"),
        10: (json_line(good).replace("2026-01-05", "2026-02-30").encode(), "INVALID_FIELD", "start_time"),
        11: (json_line(good).replace('"message_count": 0', '"message_count": 3000000000').encode(),
             "INVALID_FIELD", "message_count must be an integer (32-bit)"),
        12: (json_line(good).encode() + b" " + json_line(good).encode(), "MALFORMED_RECORD", "Extra data"),
        13: (json_line(good).replace('"r0"', '"r\xff"').encode("latin-1"), "MALFORMED_RECORD", "not valid UTF-8"),
        14: (b'{"record_id": "a", "record_id": "b"}', "MALFORMED_RECORD", "appears twice"),
        15: (json_line(good).replace('"source": "msc-1"', '"source": 7').encode(),
             "INVALID_FIELD", "source must be a string"),
    }
    lines = [json_line(good).encode()] + [bad[n][0] for n in sorted(bad)] + [json_line(record(1)).encode()]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    usage, rejected, _ = decode_all(path)
    assert usage.column("input_position").to_pylist() == [1, len(lines)]
    assert usage_values(usage) == [good, record(1)]
    rejects = rejects_by_position(rejected)
    assert sorted(rejects) == sorted(bad)
    for line_number, (raw, reason, detail) in bad.items():
        reject = rejects[line_number]
        assert (reject["reason"], reject["raw"], reject["input_file"]) == (reason, raw, str(path))
        assert detail in reject["detail"], reject["detail"]
    assert rejects[4]["record_id"] == "r0" and rejects[4]["source"] == "msc-1"
    assert rejects[4]["start_time"] == dt.datetime(2026, 1, 5, 8, 15, 0, 250000, tzinfo=dt.timezone.utc)


def test_json_record_with_several_problems_is_rejected_for_the_first_field(tmp_path):
    line = json.dumps({"record_id": None, "source": "s", "service": "FAX", "served_msisdn": "1",
                       "start_time": "yesterday", "duration_s": 1})
    _, rejected, _ = decode_all(write_jsonl(tmp_path / "m.jsonl", [line]))
    assert rejected.column("detail").to_pylist() == ["record_id is absent or null"]


_line_pieces = st.sampled_from([
    json_line(record(0)), json_line(record(1), start_time_as="int"), json_line(record(2)).replace("Z", "+02:00"),
    json_line(dict(record(3), service="FAX")), json_line(dict(record(4), record_id=None)),
    json_line(record(5)).replace("2026-01-05", "2026-02-30"), json_line(record(6)).replace('"r6"', "6"),
    json_line(record(7)).replace('"duration_s": 67', '"duration_s": 6.7'), '{"record_id": ', "", "  ", "[]",
    json_line(record(8)) + json_line(record(8)), json_line(record(9)).replace("Z", ""), "null",
    json_line(record(10)).replace('"bytes_up": 100', '"bytes_up": null'), '{"service": "SMS"}',
    json_line(record(11)).replace('"message_count": 0', '"message_count": 1e2'),
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line_pieces, max_size=60), batch_size=st.integers(1, 70))
def test_json_fast_path_gives_the_same_batches_as_line_by_line(lines, batch_size):
    data = ("\n".join(lines) + "\n").encode()
    fast = list(jsonl.decode_jsonl("f.jsonl", io.BytesIO(data), batch_size))
    slow = list(jsonl.decode_jsonl("f.jsonl", io.BytesIO(data), batch_size, fast=False))
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert a.usage.equals(b.usage) and a.rejected.equals(b.rejected)
    records = sum(1 for line in lines if line.strip())
    assert sum(b.num_records for b in fast) == records
    assert all(b.num_records <= batch_size for b in fast)


def test_json_fast_path_copes_with_many_bad_lines_in_a_large_chunk():
    rows = [json_line(record(i)) for i in range(5000)]
    for i in range(0, 5000, 97):
        rows[i] = rows[i].replace('"duration_s": ', '"duration_s": 0.5 + ')  # invalid JSON
    for i in range(13, 5000, 101):
        rows[i] = rows[i].replace('"source": "msc-1"', '"source": 1')      # wrong type
    data = ("\n".join(rows) + "\n").encode()
    fast = list(jsonl.decode_jsonl("f.jsonl", io.BytesIO(data), 65536))
    slow = list(jsonl.decode_jsonl("f.jsonl", io.BytesIO(data), 65536, fast=False))
    assert fast[0].usage.equals(slow[0].usage) and fast[0].rejected.equals(slow[0].rejected)
    assert fast[0].rejected.num_rows == len(set(range(0, 5000, 97)) | set(range(13, 5000, 101)))


@settings(max_examples=200, deadline=None)
@given(text=st.from_regex(jsonl._ISO_ANCHORED, fullmatch=True))
def test_arrow_and_python_read_iso_timestamps_alike(text):
    micros, invalid = jsonl._fast_start_time(pa.array([text]))
    expected = jsonl._start_time_or_none(text)
    if expected is None:
        assert invalid[0]
    else:
        assert not invalid[0] and micros.cast(pa.int64())[0].as_py() == expected


def test_parquet_null_in_required_column_is_missing_field_with_row_as_json(tmp_path):
    table = usage_table(RECORDS[:4])
    schema = table.schema
    services = table.column("service").to_pylist()
    table = table.set_column(schema.get_field_index("service"), schema.field("service").with_nullable(True),
                             pa.array([services[0], None, services[2], services[3]]))
    table = table.set_column(schema.get_field_index("duration_s"), schema.field("duration_s").with_nullable(True),
                             pa.array([None, 2, 3, None], pa.int64()))
    usage, rejected, _ = decode_all(write_parquet(tmp_path / "n.parquet", table))
    assert usage.column("input_position").to_pylist() == [2]
    rejects = rejects_by_position(rejected)
    assert {p: r["detail"] for p, r in rejects.items()} == {
        0: "duration_s is null", 1: "service is null", 3: "duration_s is null"}
    raw = json.loads(rejects[1]["raw"])
    assert raw["record_id"] == "r1" and raw["service"] is None
    assert raw["start_time"] == iso(RECORDS[1]["start_time"])
    assert all(r["reason"] == "MISSING_FIELD" for r in rejects.values())


@pytest.mark.parametrize("column", ["duration_s", "bytes_up", "bytes_down"])
def test_parquet_uint64_beyond_int64_rejects_that_row_only(column, tmp_path):
    table = usage_table(RECORDS[:4])
    values = [5, 2**64 - 1, 2**63, INT64_MAX]
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.uint64()))
    usage, rejected, _ = decode_all(write_parquet(tmp_path / "u.parquet", table))
    assert usage.column("input_position").to_pylist() == [0, 3]
    assert usage.column(column).to_pylist() == [5, INT64_MAX]
    assert rejected.column("input_position").to_pylist() == [1, 2]
    assert set(rejected.column("reason").to_pylist()) == {"INVALID_FIELD"}
    assert f"{column} {2**64 - 1} does not fit int64" in rejected.column("detail")[0].as_py()
    assert json.loads(rejected.column("raw")[1].as_py())[column] == 2**63
    assert set(rejected.column("input_file").to_pylist()) == {str(tmp_path / "u.parquet")}


@pytest.mark.parametrize("unit, ticks, bad", [
    ("ms", [1_767_225_600_000, INT64_MAX, 1_767_225_660_000], "9223372036854775807 ms"),  # beyond int64 µs
    ("ns", [1_767_225_600 * 10**9, 1_767_225_600 * 10**9 + 1, 1_767_225_660 * 10**9], "1767225600000000001 ns"),
], ids=["milliseconds-beyond-microseconds", "nanoseconds-below-a-microsecond"])
def test_parquet_start_time_microseconds_cannot_hold_rejects_that_row_only(unit, ticks, bad, tmp_path):
    """One instant that timestamp[us] cannot hold exactly refused the whole file (found by the fuzzer)."""
    table = usage_table(RECORDS[:3])
    start = pa.array(ticks, pa.int64()).cast(pa.timestamp(unit, "UTC"))
    table = table.set_column(table.schema.get_field_index("start_time"), "start_time", start)
    usage, rejected, _ = decode_all(write_parquet(tmp_path / "t.parquet", table))
    assert usage.column("input_position").to_pylist() == [0, 2]
    assert rejected.column("input_position").to_pylist() == [1]
    assert rejected.column("reason").to_pylist() == ["INVALID_FIELD"]
    assert f"start_time {bad} does not fit timestamp[us, tz=UTC]" in rejected.column("detail")[0].as_py()


def test_parquet_integer_too_big_for_its_field_is_invalid_field(tmp_path):
    table = usage_table(RECORDS[:3])
    table = table.set_column(table.schema.get_field_index("message_count"), "message_count",
                             pa.array([1, 1 << 40, 2], pa.int64()))
    usage, rejected, _ = decode_all(write_parquet(tmp_path / "i.parquet", table))
    assert usage.column("message_count").to_pylist() == [1, 2]
    assert rejected.column("reason").to_pylist() == ["INVALID_FIELD"]
    assert "message_count 1099511627776" in rejected.column("detail")[0].as_py()
    assert json.loads(rejected.column("raw")[0].as_py())["message_count"] == 1 << 40


def _datum_offsets(records: list[dict], schema: str = USAGE_V2) -> list[int]:
    """Byte offset of each datum within an uncompressed block holding ``records``."""
    parsed = fastavro.parse_schema(load_schema(schema))
    offsets, position = [], 0
    for rec in records:
        offsets.append(position)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, rec)
        position += len(out.getvalue())
    return offsets


def _block_data_start(path: Path, records: list[dict]) -> int:
    """Offset in the file of the first block's data (null codec, one block)."""
    data = path.read_bytes()
    datum = io.BytesIO()
    fastavro.schemaless_writer(datum, fastavro.parse_schema(load_schema(USAGE_V2)), records[0])
    return data.index(datum.getvalue())


def test_avro_corrupt_datum_rejects_rest_of_block_and_keeps_count(tmp_path):
    records = [record(i) for i in range(10)]
    path = write_avro(tmp_path / "c.avro", records)
    data = bytearray(path.read_bytes())
    start = _block_data_start(path, records) + _datum_offsets(records)[3]
    data[start:start + 4] = b"\xff\xff\xff\xff"  # record_id length becomes a runaway varint
    path.write_bytes(bytes(data))
    usage, rejected, _ = decode_all(path)
    assert usage_values(usage) == records[:3]
    assert rejected.column("input_position").to_pylist() == list(range(3, 10))
    assert set(rejected.column("reason").to_pylist()) == {"MALFORMED_RECORD"}
    raws = rejected.column("raw").to_pylist()
    assert raws[0] == bytes(data[start:len(data) - 16])  # the block's bytes from the bad datum on
    assert raws[1:] == [b""] * 6
    assert "record boundaries are unknown" in rejected.column("detail")[0].as_py()


def test_avro_invalid_utf8_rejects_only_that_record(tmp_path):
    records = [record(i) for i in range(5)]
    path = write_avro(tmp_path / "u.avro", records)
    data = bytearray(path.read_bytes())
    start = _block_data_start(path, records) + _datum_offsets(records)[2]
    data[start + 1] = 0xFF  # first byte of "r2" (after its length byte)
    path.write_bytes(bytes(data))
    usage, rejected, _ = decode_all(path)
    assert usage.column("input_position").to_pylist() == [0, 1, 3, 4]
    (reject,) = rejected.to_pylist()
    assert reject["input_position"] == 2 and reject["reason"] == "MALFORMED_RECORD"
    assert "UTF-8" in reject["detail"] and reject["raw"].startswith(b"\x04\xff2")


def test_avro_undecompressable_block_fails_the_file_naming_it(tmp_path):
    """A block the codec reports corrupt means the file was damaged in transit: like a truncated
    .gz, the whole file fails (the run exits 1 and publishes nothing), never a partial read."""
    records = [record(i) for i in range(9)]
    path = write_avro(tmp_path / "z.avro", records, codec="deflate", sync_interval=1)  # one record per block
    with open(path, "rb") as f:
        blocks = [(b.offset, b.size) for b in fastavro.block_reader(f)]
    data = bytearray(path.read_bytes())
    offset, size = blocks[4]
    # Block = count varint (1 byte), size varint (<= 2 bytes), payload, 16-byte sync marker.
    data[offset + 3:offset + size - 16] = b"\xff" * (size - 19)  # garbage deflate stream, framing kept
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=r"z\.avro: Avro block 4 at byte \d+ could not be decompressed "
                                             r"with codec 'deflate'.*the file is damaged"):
        decode_all(path)


def test_avro_enum_symbol_unknown_to_the_reader_rejects_only_that_record(tmp_path):
    schema = load_schema(USAGE_V2)
    fields = [dict(f, type={"type": "enum", "name": "Service", "symbols": ["VOICE", "SMS", "DATA", "MMS"]})
              if f["name"] == "service" else f for f in schema["fields"]]
    records = [record(0), record(1, service="MMS"), record(2)]
    path = tmp_path / "mms.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(dict(schema, fields=fields)), records)
    usage, rejected, _ = decode_all(path)
    assert usage_values(usage) == [records[0], records[2]]
    (reject,) = rejected.to_pylist()
    assert (reject["input_position"], reject["reason"], reject["record_id"]) == (1, "INVALID_FIELD", "r1")
    assert "does not resolve to usage_record_v3" in reject["detail"] and reject["raw"]


def _zigzag_varint(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        value |= (data[pos] & 0x7F) << shift
        pos += 1
        if data[pos - 1] < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def _avro_blocks(data: bytes) -> tuple[bytes, list[list]]:
    """(header, [[byte offset, count, payload], ...]) of an Avro container file."""
    sync = data[-16:]
    pos = data.index(sync) + 16
    header, blocks = data[:pos], []
    while pos < len(data):
        offset = pos
        count, pos = _read_varint(data, pos)
        size, pos = _read_varint(data, pos)
        blocks.append([offset, count, data[pos:pos + size]])
        pos += size + 16
    return header, blocks


def _avro_file(header: bytes, blocks: list[list]) -> bytes:
    sync = header[-16:]
    return header + b"".join(_zigzag_varint(count) + _zigzag_varint(len(payload)) + payload + sync
                             for _, count, payload in blocks)


@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("claimed", [2**40, 2_004_686, 10_000])
def test_avro_block_count_its_bytes_cannot_hold_is_one_reject(codec, claimed, tmp_path):
    """A corrupt record count is checked against the block's bytes before anything is allocated:
    the block is one reject (file, block, byte offset), the other blocks decode, positions go on."""
    records = [record(i) for i in range(30)]
    path = write_avro(tmp_path / "n.avro", records, codec=codec, sync_interval=600)
    header, blocks = _avro_blocks(path.read_bytes())
    assert len(blocks) >= 3
    offset, count, payload = blocks[1]
    blocks[1][1] = claimed
    path.write_bytes(_avro_file(header, blocks))
    usage, rejected, _ = decode_all(path, batch_size=7)
    kept = [r for k, r in enumerate(records) if not blocks[0][1] <= k < blocks[0][1] + count]
    assert usage_values(usage) == kept
    (reject,) = rejected.to_pylist()
    assert (reject["reason"], reject["input_file"], reject["input_position"]) == \
        ("MALFORMED_RECORD", str(path), blocks[0][1])
    assert f"Avro block 1 at byte {offset} claims {claimed} records" in reject["detail"]
    assert "the count is corrupt" in reject["detail"]
    assert reject["raw"] == (payload if codec == "null" else zlib.decompress(payload, -15))
    # The records after the block count it as one: every record is accounted for, in order.
    assert_every_record_once(usage, rejected, range(len(records) - count + 1))


def test_avro_block_claiming_no_records_but_holding_bytes_is_one_reject(tmp_path):
    records = [record(i) for i in range(10)]
    path = write_avro(tmp_path / "z.avro", records, sync_interval=1)  # one record per block
    header, blocks = _avro_blocks(path.read_bytes())
    blocks[3][1] = 0
    path.write_bytes(_avro_file(header, blocks))
    usage, rejected, _ = decode_all(path)
    assert usage_values(usage) == records[:3] + records[4:]
    (reject,) = rejected.to_pylist()
    assert reject["input_position"] == 3 and "claims no records but holds" in reject["detail"]


def test_avro_undecompressable_block_with_an_impossible_count_fails_the_file(tmp_path):
    records = [record(i) for i in range(6)]
    path = write_avro(tmp_path / "u.avro", records, codec="deflate", sync_interval=1)
    header, blocks = _avro_blocks(path.read_bytes())
    blocks[2][1:] = [2**40, b"\xff" * 40]   # nothing is allocated for the 2^40 records it claims
    path.write_bytes(_avro_file(header, blocks))
    with pytest.raises(InputFileError, match="block 2 at byte .* could not be decompressed"):
        decode_all(path)


def test_avro_truncated_deflate_block_fails_the_file(tmp_path):
    """A deflate stream cut short inside its block (framing intact): the codec tells, so the file
    fails instead of being decoded as far as the stream goes."""
    records = [record(i) for i in range(30)]
    path = write_avro(tmp_path / "t.avro", records, codec="deflate", sync_interval=600)
    header, blocks = _avro_blocks(path.read_bytes())
    blocks[1][2] = blocks[1][2][:len(blocks[1][2]) * 6 // 10]
    path.write_bytes(_avro_file(header, blocks))
    with pytest.raises(InputFileError, match="block 1 at byte .* could not be decompressed.*ends before its final block"):
        decode_all(path)


def _millis_schema() -> dict:
    schema = load_schema(USAGE_V2)
    fields = [dict(f, type={"type": "long", "logicalType": "timestamp-millis"}) if f["name"] == "start_time" else f
              for f in schema["fields"]]
    return dict(schema, fields=fields)


@pytest.mark.parametrize("fast", [True, False])
def test_avro_out_of_range_timestamp_millis_rejects_only_that_record(fast, tmp_path):
    """One timestamp-millis beyond year 9999 in a single-block file: only that record is rejected."""
    records = [record(i, start_time=START_US // 1000 + i) for i in range(200)]
    records[57]["start_time"] = 253_402_300_800_000   # 10000-01-01T00:00:00Z
    path = tmp_path / "ms.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(_millis_schema()), records, sync_interval=1 << 20)
    with open(path, "rb") as f:
        assert len(list(fastavro.block_reader(f))) == 1
    with open(path, "rb") as stream:
        batches = list(avro.decode_avro(str(path), stream, 64, fast=fast))
    usage = pa.Table.from_batches([b.usage for b in batches], schema=usage_batch_schema())
    rejected = pa.Table.from_batches([b.rejected for b in batches], schema=rejected_schema())
    expected = [dict(r, start_time=r["start_time"] * 1000) for k, r in enumerate(records) if k != 57]
    assert usage_values(usage) == expected
    (reject,) = rejected.to_pylist()
    assert (reject["input_position"], reject["reason"], reject["record_id"]) == (57, "INVALID_FIELD", "r57")
    assert "timestamp-millis" in reject["detail"] and reject["raw"]


def test_avro_out_of_range_timestamp_micros_costs_only_that_record(tmp_path):
    records = [record(i) for i in range(100)]
    records[40]["start_time"] = INT64_MAX
    records[41]["start_time"] = -(1 << 63)
    usage, rejected, _ = decode_all(write_avro(tmp_path / "us.avro", records, sync_interval=1 << 20))
    assert rejected.num_rows == 0 and usage_values(usage) == records
    valid, invalid = validate_usage(usage.combine_chunks().to_batches()[0])
    assert invalid.column("input_position").to_pylist() == [40, 41]
    assert set(invalid.column("reason").to_pylist()) == {"INVALID_FIELD"}
    assert valid.num_rows == 98


@settings(max_examples=60, deadline=None)
@given(corruption=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_avro_any_corruption_inside_a_block_keeps_the_record_count(corruption):
    records = [record(i) for i in range(20)]
    with tempfile.TemporaryDirectory() as directory:
        path = write_avro(Path(directory) / "f.avro", records, sync_interval=600)
        with open(path, "rb") as f:
            blocks = [(b.offset, b.size) for b in fastavro.block_reader(f)]
        data = bytearray(path.read_bytes())
        first_block_data = _block_data_start(path, records)
        block_data_end = blocks[0][0] + blocks[0][1] - 16
        for fraction, byte in corruption:
            data[first_block_data + int(fraction * (block_data_end - first_block_data))] = byte
        path.write_bytes(bytes(data))
        usage, rejected, _ = decode_all(path, batch_size=7)
    assert_every_record_once(usage, rejected, range(20))


# --- whole-file errors -------------------------------------------------------------------------


def test_missing_file_is_an_input_file_error_naming_the_path(tmp_path):
    path = tmp_path / "absent.avro"
    with pytest.raises(InputFileError, match=f"cannot open {path}"):
        decode_all(path)


def test_not_an_avro_file_is_an_input_file_error(tmp_path):
    path = tmp_path / "text.avro"
    path.write_bytes(b"hello, world")
    with pytest.raises(InputFileError, match=rf"cannot open {path}: not an Avro container file \(bad magic\)"):
        decode_all(path)


def test_avro_of_another_record_type_is_an_input_file_error(tmp_path):
    path = tmp_path / "other.avro"
    schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), [{"x": 1}])
    with pytest.raises(InputFileError, match="is not a usage record"):
        decode_all(path)


def test_avro_writer_schema_lacking_a_required_field_is_an_input_file_error(tmp_path):
    schema = load_schema(USAGE_V1)
    schema = dict(schema, fields=[f for f in schema["fields"] if f["name"] != "duration_s"])
    path = tmp_path / "nodur.avro"
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), [{k: v for k, v in record(0).items() if k in V1_FIELDS}])
    with pytest.raises(InputFileError, match="no field 'duration_s'"):
        decode_all(path)


def test_truncated_avro_file_is_an_input_file_error(tmp_path):
    path = write_avro(tmp_path / "t.avro", RECORDS)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputFileError, match="cut short"):
        decode_all(path)


def test_avro_wrong_sync_marker_is_an_input_file_error(tmp_path):
    path = write_avro(tmp_path / "s.avro", RECORDS)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="sync marker"):
        decode_all(path)


def test_not_a_parquet_file_is_an_input_file_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(InputFileError, match=f"cannot open {path}: not a readable Parquet file"):
        decode_all(path)


def test_parquet_missing_required_column_names_it_and_the_fix(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", usage_table(RECORDS).drop_columns(["duration_s"]))
    with pytest.raises(InputFileError, match=r"column .duration_s. is missing.*usage_batch_schema"):
        decode_all(path)


@pytest.mark.parametrize("column, array", [
    ("duration_s", pa.array(["60"] * 12)),
    ("start_time", pa.array([START_US] * 12, pa.timestamp("us"))),  # no time zone: ambiguous
    ("record_id", pa.array([1] * 12)),
])
def test_parquet_column_of_unconvertible_type_is_an_input_file_error(tmp_path, column, array):
    table = usage_table(RECORDS)
    table = table.set_column(table.schema.get_field_index(column), column, array)
    with pytest.raises(InputFileError, match=f"column '{column}' has type"):
        decode_all(write_parquet(tmp_path / "t.parquet", table))


def test_corrupt_gzip_is_an_input_file_error(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputFileError, match="read failed"):
        decode_all(path)


def _many_lines(count: int) -> bytes:
    return "".join(json_line(record(i)) + "\n" for i in range(count)).encode()


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_truncated_compressed_json_lines_are_an_input_file_error(suffix, compress, tmp_path):
    """A compressed file cut short is refused, not read as far as it goes (records silently lost)."""
    data = compress(_many_lines(20_000))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[:len(data) * 6 // 10])
    with pytest.raises(InputFileError, match=rf"cannot open {path}: .*end-of-stream marker"):
        decode_all(path)


def test_gzip_crc_mismatch_is_an_input_file_error(tmp_path):
    data = bytearray(gzip.compress(_many_lines(100)))
    data[-8] ^= 0xFF  # the CRC32 of the uncompressed data, in the gzip trailer
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=rf"cannot open {path}: .*CRC check failed"):
        decode_all(path)


# --- batching and formats ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["avro", "parquet", "jsonl"])
@pytest.mark.parametrize("batch_size", [1, 3, 5, 100])
def test_batches_never_exceed_batch_size_and_cover_every_record(fmt, batch_size, tmp_path):
    records = [record(i) for i in range(11)]
    if fmt == "avro":
        path = write_avro(tmp_path / "b.avro", records, sync_interval=300)
    elif fmt == "parquet":
        path = write_parquet(tmp_path / "b.parquet", usage_table(records), row_group_size=4)
    else:
        lines = [json_line(r) for r in records]
        lines[4] = "not json"
        path = write_jsonl(tmp_path / "b.jsonl", lines)
    usage, rejected, batches = decode_all(path, batch_size=batch_size)
    assert all(0 < b.num_records <= batch_size for b in batches)
    first = 1 if fmt == "jsonl" else 0
    assert_every_record_once(usage, rejected, range(first, first + 11))
    positions = [p for b in batches for p in sorted(b.usage.column("input_position").to_pylist()
                                                    + b.rejected.column("input_position").to_pylist())]
    assert positions == sorted(positions)  # batches come in input order


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        decode_file("x.avro", batch_size=0)


@pytest.mark.parametrize("name, fmt", [
    ("a.avro", "avro"), ("gs://bucket/b.parquet", "parquet"), ("c.jsonl", "jsonl"), ("d.ndjson", "jsonl"),
    ("e.json", "jsonl"), ("f.jsonl.gz", "jsonl"), ("G.JSON.GZ", "jsonl"), (Path("h.AVRO"), "avro"),
    ("i.ndjson.bz2", "jsonl"),
])
def test_detect_format_by_extension(name, fmt):
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["a.csv", "b.avro.gz", "c.parquet.gz", "jsonl", "d.jsonl.zst"])
def test_unknown_extension_is_an_input_file_error(name):
    with pytest.raises(InputFileError, match=f"cannot open {name}: unknown file extension"):
        detect_format(name)


def test_empty_files_yield_no_batches(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b"")
    write_avro(tmp_path / "e.avro", [])
    write_parquet(tmp_path / "e.parquet", usage_table([]))
    for name in ("e.jsonl", "e.avro", "e.parquet"):
        assert list(decode_file(str(tmp_path / name))) == []
