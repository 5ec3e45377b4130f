"""Write fuzz records as Avro, Parquet and JSON lines bytes, including values no writer accepts.

The project's writers (``synth.writers``) refuse what a schema cannot hold, which is right
for them and wrong here: the fuzzer must put a long of 70 bits, an enum index of 9 or invalid UTF-8
on the wire. So this module has its own small Avro encoder (arbitrary-size integers, raw bytes for
strings) and returns each container's block layout, so that structural mutations can change one
count, size, payload or sync marker. Parquet goes through pyarrow with chosen column types; JSON
lines through ``json.dumps`` (Python ints of any size, ``NaN``) or raw line bytes.

A record is a dict of usage field -> stored value: ``start_time`` is the long as written (epoch
microseconds, or milliseconds under :data:`MILLIS` schemas), a ``bytes`` value is written as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import zlib

import pyarrow as pa
import pyarrow.parquet as pq

from cdr_schemas.decoders.common import format_micros
from cdr_schemas.registry import USAGE_V1, USAGE_V2, load_schema

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MILLIS = "usage_record_v2_millis"   # v2 with start_time as timestamp-millis (a writer schema some switches use)
SCHEMAS = (USAGE_V1, USAGE_V2, MILLIS)


def writer_schema(name: str) -> dict:
    """The Avro writer schema ``name`` (one of :data:`SCHEMAS`)."""
    if name == MILLIS:
        schema = copy.deepcopy(load_schema(USAGE_V2))
        for field in schema["fields"]:
            if field["name"] == "start_time":
                field["type"] = {"type": "long", "logicalType": "timestamp-millis"}
        return schema
    return load_schema(name)


def varint(value: int) -> bytes:
    """Zig-zag varint of any Python int (more than 10 bytes beyond the int64 range)."""
    n = 2 * value if value >= 0 else -2 * value - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(value) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return varint(len(data)) + data


def encode_datum(record: dict, schema: dict) -> bytes:
    """One Avro binary datum of ``record`` under ``schema`` (a flat usage record schema).

    Values are written whatever they are: an int field takes any int, a string field takes str or
    bytes, the enum takes a symbol (an unknown one is written as index 99), a union writes null
    for None and its non-null branch otherwise. A missing field is written as its default.
    """
    out = bytearray()
    for field in schema["fields"]:
        value = record.get(field["name"], field.get("default"))
        out += _encode_value(value, field["type"])
    return bytes(out)


def _encode_value(value, avro_type) -> bytes:
    if isinstance(avro_type, list):                        # ["null", T] or [T, "null"]
        null_index = avro_type.index("null")
        if value is None:
            return varint(null_index)
        return varint(1 - null_index) + _encode_value(value, avro_type[1 - null_index])
    if isinstance(avro_type, dict):
        if avro_type["type"] == "enum":
            symbols = avro_type["symbols"]
            return varint(symbols.index(value) if value in symbols else 99)
        avro_type = avro_type["type"]
    if avro_type in ("long", "int"):
        return varint(int(value or 0))
    if avro_type == "string":
        return _avro_bytes(value if value is not None else b"")
    raise ValueError(f"the fuzz encoder does not write Avro type {avro_type!r}")


@dataclasses.dataclass(frozen=True)
class Block:
    """Where one block sits in a container file (byte offsets) and how many records it holds."""

    count: int
    count_at: int
    size_at: int
    payload_at: int
    payload_size: int
    sync_at: int

    @property
    def end(self) -> int:
        return self.sync_at + SYNC_SIZE


@dataclasses.dataclass(frozen=True)
class Container:
    data: bytes
    header_end: int          # offset of the first block
    sync: bytes
    blocks: tuple[Block, ...]
    codec: str


def avro_container(datums: list[bytes], block_records: list[int], schema: dict, codec: str = "null",
                   sync: bytes = b"fuzz-sync-marker") -> Container:
    """A container file of ``datums`` in blocks of ``block_records`` records (their sum is the
    number of datums), codec ``null`` or ``deflate``."""
    assert sum(block_records) == len(datums) and len(sync) == SYNC_SIZE
    meta = {b"avro.schema": json.dumps(schema).encode(), b"avro.codec": codec.encode()}
    out = bytearray(MAGIC) + varint(len(meta))
    for key, value in meta.items():
        out += _avro_bytes(key) + _avro_bytes(value)
    out += varint(0) + sync
    header_end = len(out)
    blocks = []
    first = 0
    for count in block_records:
        payload = b"".join(datums[first:first + count])
        first += count
        if codec == "deflate":
            compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
            payload = compressor.compress(payload) + compressor.flush()
        count_at = len(out)
        out += varint(count)
        size_at = len(out)
        out += varint(len(payload))
        payload_at = len(out)
        out += payload
        blocks.append(Block(count, count_at, size_at, payload_at, len(payload), len(out)))
        out += sync
    return Container(bytes(out), header_end, sync, tuple(blocks), codec)


def jsonl_line(record: dict, *, iso_start: bool = True) -> bytes:
    """One JSON line of ``record``; start_time as ISO 8601 ``Z`` text when ``iso_start`` and it is
    an int inside datetime's range, else as written. A bytes value makes the line raw bytes."""
    items = []
    for key, value in record.items():
        if key == "start_time" and iso_start and isinstance(value, int) and not isinstance(value, bool):
            value = format_micros(value)
        if isinstance(value, bytes):
            items.append(json.dumps(key).encode() + b":\"" + value + b"\"")
        else:
            items.append(json.dumps(key).encode() + b":" + json.dumps(value, ensure_ascii=False).encode(
                "utf-8", "surrogatepass"))
    return b"{" + b",".join(items) + b"}"


def parquet_bytes(records: list[dict], types: dict[str, pa.DataType], *, row_group_size: int = 1024,
                  data_page_size: int = 4096, compression: str = "zstd") -> bytes:
    """A Parquet file of ``records`` with one column per key of ``types`` (its Arrow type).

    Integer start_time values are epoch microseconds, converted to the column's timestamp unit
    (rounded down for coarser units).
    """
    columns = {}
    for name, arrow_type in types.items():
        values = [r.get(name) for r in records]
        if pa.types.is_timestamp(arrow_type):
            per_us = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[arrow_type.unit]
            stored = [None if v is None else (v * 1000 if per_us is None else v // per_us) for v in values]
            columns[name] = pa.array(stored, pa.int64()).cast(arrow_type)
        elif pa.types.is_dictionary(arrow_type):
            columns[name] = pa.array(values, arrow_type.value_type).dictionary_encode()
        else:
            columns[name] = pa.array(values, arrow_type)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, row_group_size=row_group_size, data_page_size=data_page_size,
                   compression=compression)
    return buffer.getvalue()
