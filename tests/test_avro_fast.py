"""The Avro fast path (Numba kernel) gives exactly the batches of the per-datum path, for every
writer schema the project reads, and falls back to it for anything it cannot decode."""

from __future__ import annotations

import copy
import datetime as dt
import io
import sys
import zlib
from unittest import mock

import fastavro
import fastavro.read
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cdr_schemas import load_schema, usage_batch_schema
from cdr_schemas.decoders import avro, avro_kernel as kernel, decode_file
from cdr_schemas.decoders.avro_columns import ColumnBuffers
from cdr_schemas.decoders.common import InputFileError
from cdr_schemas.decoders.avro_program import UnsupportedSchema, compile_program
from tests.avro_twin import decode_block_twin
from cdr_schemas.registry import USAGE_V1, USAGE_V2
from synth.writers import write_usage_file

V2 = load_schema(USAGE_V2)
V2_FIELDS = [f["name"] for f in V2["fields"]]
DEFAULTS = {f["name"]: f.get("default") for f in V2["fields"]}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# --- writer schemas ------------------------------------------------------------------------------


def _with_fields(schema: dict, fields: list[dict]) -> dict:
    return dict(copy.deepcopy(schema), fields=fields)


def _string_first(schema: dict) -> dict:
    """Every ["null", T] union written as [T, "null"] (defaults dropped: they must match T)."""
    fields = []
    for f in copy.deepcopy(schema["fields"]):
        if isinstance(f["type"], list):
            f["type"] = [t for t in f["type"] if t != "null"] + ["null"]
            f.pop("default", None)
        fields.append(f)
    return _with_fields(schema, fields)


def _millis(schema: dict) -> dict:
    fields = copy.deepcopy(schema["fields"])
    for f in fields:
        if f["name"] == "start_time":
            f["type"] = {"type": "long", "logicalType": "timestamp-millis"}
    return _with_fields(schema, fields)


def _service_symbols(schema: dict, symbols: list[str]) -> dict:
    fields = copy.deepcopy(schema["fields"])
    for f in fields:
        if f["name"] == "service":
            f["type"] = {"type": "enum", "name": "Service", "symbols": symbols}
    return _with_fields(schema, fields)


EXTRA_FIELDS = [  # fields the reader does not have, with a value for record i
    ({"name": "x_bool", "type": "boolean"}, lambda i: i % 2 == 0),
    ({"name": "x_double", "type": "double"}, lambda i: i / 7),
    ({"name": "x_bytes", "type": "bytes"}, lambda i: bytes([i % 256]) * (i % 5)),
    ({"name": "x_fixed", "type": {"type": "fixed", "name": "Four", "size": 4}}, lambda i: b"abcd"),
    ({"name": "x_enum", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
     lambda i: "GREEN" if i % 3 else "RED"),
    ({"name": "x_union", "type": ["null", "long", "string", "float"]}, lambda i: [None, -i, f"s{i}", 0.5][i % 4]),
    ({"name": "x_micros", "type": {"type": "long", "logicalType": "timestamp-micros"}}, lambda i: i),
    ({"name": "x_null", "type": "null"}, lambda i: None),
]


def _with_extras(schema: dict) -> dict:
    """Extra fields between the usage fields, and the usage fields in reverse order."""
    fields = list(reversed(copy.deepcopy(schema["fields"])))
    for n, (extra, _) in enumerate(EXTRA_FIELDS):
        fields.insert(2 * n, copy.deepcopy(extra))
    return _with_fields(schema, fields)


WRITERS = {
    "v1": load_schema(USAGE_V1),
    "v2": V2,
    "v2 [T, null] unions": _string_first(V2),
    "v1 [T, null] unions": _string_first(load_schema(USAGE_V1)),
    "v2 timestamp-millis": _millis(V2),
    "v1 service symbols reordered": _service_symbols(load_schema(USAGE_V1), ["DATA", "SMS", "VOICE"]),
    "v2 extra fields, reordered": _with_extras(V2),
}


def _plain(schema: dict, names: dict[str, str]) -> dict:
    """The fields ``names`` written with the plain type given (e.g. a nullable field as "string")."""
    return _with_fields(schema, [{"name": f["name"], "type": names[f["name"]]} if f["name"] in names else f
                                 for f in copy.deepcopy(schema["fields"])])


# Writers whose fields cannot hold every generated record: for the fixed records only.
CLEAN_WRITERS = dict(WRITERS, **{
    "v2 nullable fields as plain strings, longs as ints": _plain(V2, {
        "cell_id": "string", "termination_cause": "string", "duration_s": "int", "bytes_up": "int"}),
})


def writer_record(record: dict, writer: dict, i: int) -> dict:
    """``record`` (v2 values) as the writer schema has it."""
    names = {f["name"] for f in writer["fields"]}
    out = {k: v for k, v in record.items() if k in names}
    for extra, value in EXTRA_FIELDS:
        if extra["name"] in names:
            out[extra["name"]] = value(i)
    return out


def expected_row(record: dict, writer: dict) -> dict:
    """What the reader (v2) makes of ``record`` written with ``writer``: start_time in µs."""
    names = {f["name"] for f in writer["fields"]}
    row = {name: record[name] if name in names else DEFAULTS[name] for name in V2_FIELDS}
    if _is_millis(writer):
        row["start_time"] = record["start_time"] * 1000
    return row


def _is_millis(writer: dict) -> bool:
    (start,) = [f for f in writer["fields"] if f["name"] == "start_time"]
    return isinstance(start["type"], dict) and start["type"].get("logicalType") == "timestamp-millis"


# --- records -------------------------------------------------------------------------------------

_longs = st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 1, 63, 64, -65, INT32_MIN, INT32_MAX]) | st.integers(
    INT64_MIN, INT64_MAX)
_ints = st.sampled_from([INT32_MIN, INT32_MAX, 0, -1]) | st.integers(INT32_MIN, INT32_MAX)
_text = st.sampled_from(["", "a", "é", "日本", "😀", "\x00"]) | st.text(
    st.characters(exclude_categories=("Cs",)), max_size=12)
_optional_text = st.none() | _text
_millis_values = st.integers(kernel.MILLIS_MIN, kernel.MILLIS_MAX)

_records = st.fixed_dictionaries({
    "record_id": _text, "source": _text, "service": st.sampled_from(["VOICE", "SMS", "DATA"]),
    "served_msisdn": _text, "other_party": _optional_text, "start_time": _longs, "duration_s": _longs,
    "bytes_up": _longs, "bytes_down": _longs, "message_count": _ints, "visited_network": _optional_text,
    "cell_id": _optional_text, "imsi": _optional_text, "apn": _optional_text,
    "termination_cause": _optional_text, "rat_type": _optional_text, "partial_sequence": _ints,
})


def simple_record(i: int, **overrides) -> dict:
    value = {
        "record_id": f"r{i}", "source": "msc-1", "service": ("VOICE", "SMS", "DATA")[i % 3],
        "served_msisdn": f"4477009{i:05d}", "other_party": None if i % 3 == 2 else f"0207{i:07d}",
        "start_time": 1_767_600_900_250_000 + i, "duration_s": 60 + i, "bytes_up": 10 * i, "bytes_down": 20 * i,
        "message_count": i % 2, "visited_network": "20801" if i % 4 == 0 else None, "cell_id": f"cell-{i}",
        "imsi": None, "apn": "internet" if i % 3 == 2 else None, "termination_cause": "normalRelease",
        "rat_type": "NR" if i % 2 else None, "partial_sequence": i % 3,
    }
    value.update(overrides)
    return value


# --- writing and decoding ------------------------------------------------------------------------


def avro_bytes(writer: dict, records: list[dict], *, codec: str = "null", sync_interval: int = 16000) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(copy.deepcopy(writer)),
                    [writer_record(r, writer, i) for i, r in enumerate(records)],
                    codec=codec, sync_interval=sync_interval)
    return out.getvalue()


def outcome(data: bytes, batch_size: int, *, fast: bool):
    """The batches decode_avro yields, or the error it raises (type and message)."""
    try:
        return list(avro.decode_avro("f.avro", io.BytesIO(data), batch_size, fast=fast))
    except Exception as error:  # the reference path's own failures must be reproduced exactly
        return type(error), str(error)


def assert_same(fast, slow) -> None:
    if not isinstance(slow, list):
        assert fast == slow
        return
    assert isinstance(fast, list), fast
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert a.usage.schema.equals(usage_batch_schema())
        assert a.usage.equals(b.usage)
        assert a.rejected.equals(b.rejected)


def usage_rows(batches) -> list[dict]:
    table = pa.Table.from_batches([b.usage for b in batches], schema=usage_batch_schema())
    table = table.set_column(table.schema.get_field_index("start_time"), "start_time",
                             table.column("start_time").cast(pa.int64()))
    return table.select(V2_FIELDS).to_pylist()


def fastavro_rows(data: bytes) -> list[dict]:
    """fastavro's own reading of the file with the v2 reader schema, start_time in µs (as the
    decoders, fastavro keeps timestamp-micros as the long it is; millis become datetimes)."""
    as_long = {"long-timestamp-micros": lambda value, *schemas: value}
    with mock.patch.dict(fastavro.read.LOGICAL_READERS, as_long):
        rows = list(fastavro.reader(io.BytesIO(data), reader_schema=fastavro.parse_schema(copy.deepcopy(V2))))
    for row in rows:
        if isinstance(row["start_time"], dt.datetime):
            row["start_time"] = (row["start_time"] - EPOCH) // dt.timedelta(microseconds=1)
    return rows


@pytest.fixture
def datum_path_calls(monkeypatch) -> list[int]:
    """Block numbers the per-datum path decodes (the fast path should leave it alone)."""
    calls = []
    original = avro._DatumReader.decode_block

    def spy(self, data, count, first_position, block_number):
        calls.append(block_number)
        return original(self, data, count, first_position, block_number)

    monkeypatch.setattr(avro._DatumReader, "decode_block", spy)
    return calls


# --- good files ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_records, max_size=25), writer_name=st.sampled_from(sorted(WRITERS)),
       codec=st.sampled_from(["null", "deflate"]), sync_interval=st.sampled_from([1, 200, 1 << 20]),
       batch_size=st.integers(1, 30), millis=st.lists(_millis_values, min_size=25, max_size=25))
def test_fast_path_gives_the_datum_paths_batches_and_fastavros_values(records, writer_name, codec, sync_interval,
                                                                     batch_size, millis):
    writer = WRITERS[writer_name]
    if _is_millis(writer):
        records = [dict(r, start_time=m) for r, m in zip(records, millis)]
    data = avro_bytes(writer, records, codec=codec, sync_interval=sync_interval)
    fast = outcome(data, batch_size, fast=True)
    assert_same(fast, outcome(data, batch_size, fast=False))
    expected = [expected_row(r, writer) for r in records]
    assert usage_rows(fast) == expected
    assert usage_rows(fast) == fastavro_rows(data)
    assert all(b.rejected.num_rows == 0 for b in fast)
    starts = range(0, len(records), batch_size)
    assert [b.num_records for b in fast] == [min(batch_size, len(records) - s) for s in starts]


@pytest.mark.parametrize("writer_name", sorted(CLEAN_WRITERS))
def test_clean_files_never_use_the_datum_path(writer_name, datum_path_calls):
    writer = CLEAN_WRITERS[writer_name]
    records = [simple_record(i, start_time=i) for i in range(300)]
    data = avro_bytes(writer, records, codec="deflate", sync_interval=500)
    batches = list(avro.decode_avro("f.avro", io.BytesIO(data), 64))
    assert datum_path_calls == []
    assert usage_rows(batches) == [expected_row(r, writer) for r in records]
    assert [b.usage.column("input_position")[0].as_py() for b in batches] == list(range(0, 300, 64))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_generator_files_decode_like_the_datum_path(version, tmp_path, datum_path_calls):
    """The project's own writer (8192-record blocks): batches cut across blocks, rows carried over."""
    records = [simple_record(i, record_id="x" * (i % 40), apn=None if i % 5 else "é" * (i % 7))
               for i in range(9_000)]
    schema = pa.schema([usage_batch_schema().field(name) for name in V2_FIELDS])
    path = tmp_path / f"gen_{version}.avro"
    write_usage_file(path, pa.Table.from_pylist(records, schema=schema).to_batches(), "avro", version,
                     engine="numpy")   # the same bytes as the numba engine, without its compile
    data = path.read_bytes()
    for batch_size in (1000, 5000, 65536):   # batches inside a block, across blocks, the whole file
        fast = outcome(data, batch_size, fast=True)
        assert datum_path_calls == []
        assert_same(fast, outcome(data, batch_size, fast=False))
        datum_path_calls.clear()
        assert usage_rows(fast) == [expected_row(r, WRITERS[version]) for r in records]


def test_strings_growing_from_block_to_block_fill_new_buffers_exactly(datum_path_calls):
    records = [simple_record(i, record_id="é" * (i * i % 3000), cell_id="c" * (5 * i)) for i in range(200)]
    data = avro_bytes(V2, records, sync_interval=2000)
    for batch_size in (7, 64, 10_000):
        fast = outcome(data, batch_size, fast=True)
        assert datum_path_calls == []
        assert_same(fast, outcome(data, batch_size, fast=False))
        datum_path_calls.clear()
        assert usage_rows(fast) == records


def test_decode_file_uses_the_fast_path(tmp_path, datum_path_calls):
    path = tmp_path / "f.avro"
    records = [simple_record(i) for i in range(50)]
    path.write_bytes(avro_bytes(load_schema(USAGE_V1), records, codec="deflate", sync_interval=300))
    batches = list(decode_file(str(path), batch_size=16))
    assert datum_path_calls == []
    assert [b.num_records for b in batches] == [16, 16, 16, 2]
    assert usage_rows(batches) == [expected_row(r, load_schema(USAGE_V1)) for r in records]
    assert all(b.usage.column("input_file").to_pylist() == [str(path)] * b.num_records for b in batches)


# --- bad blocks: the datum path decides, for that block only -------------------------------------


def _payload_ranges(data: bytes) -> list[tuple[int, int]]:
    """(start, end) in the file of each block's payload."""
    sync = data[-16:]
    pos = data.index(sync) + 16
    ranges = []
    while pos < len(data):
        _, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        ranges.append((pos, pos + size))
        pos += size + 16
    return ranges


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_records, min_size=1, max_size=20), writer_name=st.sampled_from(sorted(WRITERS)),
       codec=st.sampled_from(["null", "null", "deflate"]), batch_size=st.integers(1, 25),
       corruption=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
                                     st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xC3, 0xED, 0xFE, 0xFF])
                                     | st.integers(0, 255)), min_size=1, max_size=3))
def test_corrupt_blocks_give_exactly_the_datum_paths_rejects(records, writer_name, codec, batch_size, corruption):
    writer = WRITERS[writer_name]
    if _is_millis(writer):
        records = [dict(r, start_time=r["message_count"]) for r in records]
    data = bytearray(avro_bytes(writer, records, codec=codec, sync_interval=150))
    ranges = _payload_ranges(bytes(data))
    for block, where, byte in corruption:
        start, end = ranges[int(block * len(ranges))]
        assume(end > start)
        data[start + int(where * (end - start))] = byte
    fast = outcome(bytes(data), batch_size, fast=True)
    assert_same(fast, outcome(bytes(data), batch_size, fast=False))
    if isinstance(fast, list):
        seen = sorted(p for b in fast for p in b.usage.column("input_position").to_pylist()
                      + b.rejected.column("input_position").to_pylist())
        whole_blocks = sum(1 for b in fast for d in b.rejected.column("detail").to_pylist()
                           if "rejected as one record" in d)
        if whole_blocks:  # a corrupt deflate stream may inflate to fewer bytes than its count needs:
            assert seen == list(range(len(seen))) and len(seen) <= len(records)  # one position a block
        else:
            assert seen == list(range(len(records)))


@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("claimed", [2**40, 2**62, 10**6, 0])
def test_a_count_the_block_cannot_hold_is_one_reject_on_both_paths(codec, claimed, datum_path_calls):
    """Checked before either path allocates for the block's records (2**40 rows would be 8 TiB)."""
    records = [simple_record(i) for i in range(24)]
    data = avro_bytes(V2, records, codec=codec, sync_interval=300)
    blocks = list(fastavro.block_reader(io.BytesIO(data)))
    first, count = blocks[0].num_records, blocks[1].num_records
    start, end = _payload_ranges(data)[1]
    count_at = start - len(avro._zigzag(end - start)) - len(avro._zigzag(count))
    data = data[:count_at] + avro._zigzag(claimed) + data[count_at + len(avro._zigzag(count)):]
    fast = outcome(data, 10, fast=True)
    assert datum_path_calls == []   # the kernel took the other blocks and was not given this one
    assert_same(fast, outcome(data, 10, fast=False))
    rejected = pa.Table.from_batches([b.rejected for b in fast])
    assert rejected.column("input_position").to_pylist() == [first]
    assert "the block is rejected as one record" in rejected.column("detail")[0].as_py()
    assert usage_rows(fast) == [expected_row(r, V2) for k, r in enumerate(records) if not first <= k < first + count]


def test_a_snappy_block_whose_crc_does_not_match_cannot_be_decompressed(monkeypatch):
    """Avro's snappy blocks end with the CRC32 of their uncompressed bytes, which fastavro skips."""
    def stored_snappy(framed):   # a stand-in for snappy that stores the bytes as they are
        return io.BytesIO(framed.getvalue()[1:-4])
    monkeypatch.setitem(fastavro.read.BLOCK_READERS, "snappy", stored_snappy)
    block = b"datum bytes"
    assert avro._decompress("snappy", block + zlib.crc32(block).to_bytes(4, "big")) == block
    with pytest.raises(ValueError, match="CRC32"):
        avro._decompress("snappy", block + (zlib.crc32(block) ^ 1).to_bytes(4, "big"))


def test_a_symbol_unknown_to_the_reader_rejects_that_record_only(datum_path_calls):
    writer = _service_symbols(V2, ["MMS", "DATA", "SMS", "VOICE"])
    records = [simple_record(i, service="MMS" if i in (3, 12) else ("VOICE", "SMS", "DATA")[i % 3])
               for i in range(20)]
    data = avro_bytes(writer, records, sync_interval=400)
    fast = outcome(data, 8, fast=True)
    assert len(datum_path_calls) == 2          # only the two blocks holding an MMS record
    assert_same(fast, outcome(data, 8, fast=False))
    rejected = pa.Table.from_batches([b.rejected for b in fast])
    assert rejected.column("input_position").to_pylist() == [3, 12]
    assert set(rejected.column("reason").to_pylist()) == {"INVALID_FIELD"}
    assert rejected.column("record_id").to_pylist() == ["r3", "r12"]


@pytest.mark.parametrize("case, writer, record, reason", [
    ("null for a required field", _with_fields(V2, [dict(f, type=["null", "string"]) if f["name"] == "source" else f
                                                    for f in V2["fields"]]), dict(source=None), "INVALID_FIELD"),
    ("timestamp-millis past year 9999", _millis(V2), dict(start_time=kernel.MILLIS_MAX + 1), "INVALID_FIELD"),
    ("timestamp-millis before year 1", _millis(V2), dict(start_time=kernel.MILLIS_MIN - 1), "INVALID_FIELD"),
])
def test_values_that_do_not_resolve_go_to_the_datum_path(case, writer, record, reason, datum_path_calls):
    records = [simple_record(i, start_time=i) for i in range(6)]
    records[2].update(record)
    data = avro_bytes(writer, records, sync_interval=1)   # one record per block
    fast = outcome(data, 100, fast=True)
    assert datum_path_calls == [2]
    assert_same(fast, outcome(data, 100, fast=False))
    (batch,) = fast
    assert batch.rejected.column("input_position").to_pylist()[0] == 2
    assert batch.rejected.column("reason").to_pylist()[0] == reason


def test_an_int_beyond_32_bits_fails_as_the_datum_path_does():
    """fastavro reads an int field's varint without a range check; the datum path then fails to
    build the int32 column. The fast path refuses the block and so fails the same way."""
    writer = _with_fields(V2, [dict(f, type="long") if f["name"] == "message_count" else f for f in V2["fields"]])
    records = [simple_record(i) for i in range(3)]
    wide = avro_bytes(writer, [dict(r, message_count=2**40 if i == 1 else r["message_count"])
                               for i, r in enumerate(records)])
    narrow = avro_bytes(V2, records)
    # The datums written with message_count as a long, under the v2 header (an int there).
    wide_sync, narrow_sync = wide[-16:], narrow[-16:]
    data = (narrow[:narrow.index(narrow_sync) + 16]
            + wide[wide.index(wide_sync) + 16:].replace(wide_sync, narrow_sync))
    fast, slow = outcome(data, 10, fast=True), outcome(data, 10, fast=False)
    assert_same(fast, slow)
    assert not isinstance(slow, list)          # the reference path raises (not a reject) today


def test_a_refused_block_leaves_the_buffers_as_they_were():
    writer = _service_symbols(V2, ["VOICE", "SMS", "DATA", "MMS"])
    program = compile_program(writer, V2)
    blocks = []
    for first in (0, 5):
        out = io.BytesIO()
        for i in range(first, first + 5):
            record = simple_record(i, service="MMS" if i == 8 else "SMS")
            fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(writer)), record)
        blocks.append(out.getvalue())
    buffers = ColumnBuffers(program, 4, np.zeros(program.n_string))   # too small: both grow
    assert buffers.append_block(blocks[0], 5, 0) is None
    error = buffers.append_block(blocks[1], 5, 5)
    assert (error.record, error.code) == (3, kernel.ERR_UNRESOLVED)
    assert "does not resolve" in str(error)
    assert buffers.rows == 5
    columns = buffers.arrays(5, {f.name: f.type for f in usage_batch_schema()})
    assert columns["record_id"].to_pylist() == [f"r{i}" for i in range(5)]
    assert columns["service"].to_pylist() == ["SMS"] * 5


def test_warm_up_loads_the_kernel():
    avro.warm_up()
    assert kernel.decode_block.signatures


# --- the kernel against its twin -----------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_records, min_size=1, max_size=8), writer_name=st.sampled_from(sorted(WRITERS)),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=3),
       cut=st.integers(-3, 3), column_bytes=st.sampled_from([0, 8, 64, 1 << 12]))
def test_kernel_walks_a_block_like_its_twin(records, writer_name, edits, cut, column_bytes):
    writer = WRITERS[writer_name]
    if _is_millis(writer):
        records = [dict(r, start_time=r["message_count"] * 1000) for r in records]
    parsed = fastavro.parse_schema(copy.deepcopy(writer))
    out = io.BytesIO()
    for i, r in enumerate(records):
        fastavro.schemaless_writer(out, parsed, writer_record(r, writer, i))
    data = bytearray(out.getvalue())
    for where, byte in edits:
        data[int(where * len(data))] = byte
    data = bytes(data[:len(data) + cut] if cut < 0 else data + bytes(cut))
    program = compile_program(writer, V2)
    results = []
    for walk in (kernel.decode_block, decode_block_twin):
        buffers = _buffers(program, len(records), column_bytes)
        walk(np.frombuffer(data, np.uint8), len(records), program.ops, program.n_fields, program.enum_map, 1,
             *buffers)
        results.append(buffers)
    (k_bufs, t_bufs) = results
    assert k_bufs[-1].tolist() == t_bufs[-1].tolist()          # same error, record and offset
    if k_bufs[-1][1] == kernel.ERR_NONE:
        for k_array, t_array in zip(k_bufs[:-1], t_bufs[:-1]):
            np.testing.assert_array_equal(k_array, t_array)


def _buffers(program, rows: int, column_bytes: int):
    """Kernel outputs for ``rows`` records from row 1, filled with a marker; the error array last."""
    def full(shape, dtype):
        return np.full(shape, 7, dtype)
    str_offsets = full((program.n_string, rows + 2), np.int32)
    str_offsets[:, 1] = 3                          # each column continues after 3 bytes
    cap = np.full(program.n_string, column_bytes + 3, np.int64)
    base = np.arange(program.n_string, dtype=np.int64) * (column_bytes + 3)
    return (full((program.n_long, rows + 1), np.int64), full((program.n_int, rows + 1), np.int32),
            full((program.n_enum, rows + 1), np.int32), full((program.n_valid, rows + 1), np.uint8),
            str_offsets, base, cap, full(int(cap.sum()), np.uint8), np.zeros(3, np.int64))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=12) | st.text(max_size=6).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_kernel_utf8_check_agrees_with_python(raw):
    try:
        raw.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert kernel.is_utf8(np.frombuffer(raw, np.uint8), 0, len(raw)) == expected


# --- what the fast path does not take ------------------------------------------------------------


@pytest.mark.parametrize("writer", [
    _with_fields(V2, V2["fields"] + [{"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}]),
    _with_fields(V2, V2["fields"] + [{"name": "x", "type": {"type": "int", "logicalType": "date"}}]),
    _with_fields(V2, [dict(f, type="bytes") if f["name"] == "imsi" else f for f in V2["fields"]]),
])
def test_schemas_the_kernel_cannot_read_use_the_datum_path_for_the_whole_file(writer):
    with pytest.raises(UnsupportedSchema):
        compile_program(writer, V2)
    assert avro._fast_program(writer) is None


def test_reader_aliases_are_left_to_the_datum_path():
    reader = _with_fields(V2, [dict(f, aliases=["id"]) if f["name"] == "record_id" else f for f in V2["fields"]])
    with pytest.raises(UnsupportedSchema, match="aliases"):
        compile_program(V2, reader)


def _inflaters() -> list:
    """zlib, and python-isal's isal_zlib where it is installed (the decoder's choice then)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return [zlib]
    return [zlib, isal_zlib]


@pytest.mark.parametrize("inflater", _inflaters(), ids=lambda m: m.__name__)
@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=64)
       | st.builds(lambda n, k: _deflate(n)[:k], st.integers(0, 200), st.integers(0, 80)))
def test_deflate_blocks_decompress_as_fastavro_does_but_a_cut_stream_is_an_error(inflater, payload):
    """fastavro returns what a truncated deflate stream holds; the decoder, like zlib.decompress,
    refuses a stream that ends before its final block (the block's records are then rejects).
    Whichever library inflates, its failures reach the caller as zlib.error."""
    def attempt(read):
        try:
            return read()
        except Exception as error:  # compare the failure, whatever the library raises
            return zlib.error if isinstance(error, inflater.error) else type(error)
    with mock.patch.object(avro, "_INFLATER", inflater):
        ours = attempt(lambda: avro._decompress("deflate", payload))
    assert ours == (attempt(lambda: inflater.decompress(payload, -15)) if payload else b"")
    if isinstance(ours, bytes) and payload and isinstance(attempt(lambda: zlib.decompress(payload, -15)), bytes):
        framed = io.BytesIO(avro._zigzag(len(payload)) + payload)   # fastavro inflates with zlib
        assert ours == fastavro.read.BLOCK_READERS["deflate"](framed).getvalue()


def test_without_isal_the_decoder_inflates_with_zlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "isal", None)   # import isal raises ImportError
    assert avro.raw_inflater() is zlib
    monkeypatch.setattr(avro, "_INFLATER", avro.raw_inflater())   # as chosen when this module is imported
    records = [simple_record(i) for i in range(500)]
    data = avro_bytes(V2, records, codec="deflate", sync_interval=1000)
    assert usage_rows(list(avro.decode_avro("f.avro", io.BytesIO(data), 128))) == records
    start, end = _payload_ranges(data)[1]
    garbage = data[:start] + b"\xff" * (end - start) + data[end:]
    with pytest.raises(InputFileError, match="block 1 at byte .* could not be decompressed with codec 'deflate'"):
        list(avro.decode_avro("f.avro", io.BytesIO(garbage), 128))


def test_isal_and_zlib_inflate_deflate_files_to_the_same_batches(tmp_path, datum_path_calls):
    """The generator's deflate files (8192-record blocks) and fastavro's (small blocks) decode to
    identical batches whichever library inflates them, the zlib fallback included."""
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert avro.raw_inflater() is isal_zlib   # installed: the decoder picks it
    records = [simple_record(i, record_id="x" * (i % 40), apn=None if i % 5 else "é" * (i % 7))
               for i in range(20_000)]
    schema = pa.schema([usage_batch_schema().field(name) for name in V2_FIELDS])
    generated = tmp_path / "gen.avro"
    write_usage_file(generated, pa.Table.from_pylist(records, schema=schema).to_batches(), "avro", "v2",
                     engine="numpy")
    small_blocks = tmp_path / "small.avro"
    small_blocks.write_bytes(avro_bytes(V2, records[:3000], codec="deflate", sync_interval=2000))
    for path in (generated, small_blocks):
        decoded = {}
        for name, inflater in (("isal", isal_zlib), ("zlib", zlib)):
            with mock.patch.object(avro, "_INFLATER", inflater):
                decoded[name] = list(decode_file(str(path), batch_size=4096))
        assert datum_path_calls == []
        assert_same(decoded["isal"], decoded["zlib"])
        assert sum(b.num_records for b in decoded["isal"]) == (20_000 if path == generated else 3000)


def _deflate(n: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(bytes(range(256)) * (n // 50 + 1)) + compressor.flush()
