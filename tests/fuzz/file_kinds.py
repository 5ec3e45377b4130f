"""File kinds: valid records written into a file or messages whose structure is then damaged.

What a correct pipeline may do depends on the damage (``tests.fuzz.structure.Damage``): refuse the
file as a whole naming it, or account for its records (exactly, when the damage leaves the count
known) with the records the damage did not touch still rated. Pub/Sub messages are never refused:
a payload that cannot be read is one reject. Each builder is ``(kind, seed, rng, pool, n) -> Case``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cdr_schemas.messages import AVRO_CONTAINER, AVRO_DATUM, JSON
from cdr_schemas.registry import USAGE_V1, USAGE_V2
from tests.fuzz import structure
from tests.fuzz.cases import (MICROS, V1, Case, Message, avro_file, block_sizes, file_case, jsonl_text, make_added,
                              parquet_types)
from tests.fuzz.encode import avro_container, encode_datum, jsonl_line, parquet_bytes, writer_schema
from tests.fuzz.values import pick


def avro_damaged(name: str):
    """A builder for Avro damage ``name`` (a key of ``structure.AVRO``, or ``avro_datum``)."""
    def build(kind, seed, rng, pool, n):
        schema_name = pick(rng, (USAGE_V1, USAGE_V2))
        storage = V1 if schema_name == USAGE_V1 else MICROS
        added = make_added(rng, pool, seed, n, storage, None)
        codec = "null" if name == "avro_datum" else pick(rng, ("null", "deflate"))
        container, schema = avro_file(rng, added.stored, schema_name, codec)
        if name == "avro_datum":
            damage = structure.avro_datum(rng, container, n, added.stored, schema)
        else:
            damage = structure.AVRO[name](rng, container, n)
        return file_case(kind, seed, added, damage, "fuzz-added.avro",
                         f"avro {schema_name} {codec}, {len(container.blocks)} blocks of {n} records", storage)
    return build


def parquet_corrupt(kind, seed, rng, pool, n):
    added = make_added(rng, pool, seed, n, MICROS, None)
    types = parquet_types(rng, added.stored, "us")
    data = parquet_bytes(added.stored, types, row_group_size=int(rng.integers(7, 500)), data_page_size=512,
                         compression=pick(rng, ("zstd", "snappy", "none")))
    return file_case(kind, seed, added, structure.parquet_corrupt(rng, data, n), "fuzz-added.parquet",
                     f"parquet of {n} records")


# Column types a file may have instead of the schema's: (field, type or None: column left out,
# refused as a whole?, values read back exactly?).
_SCHEMA_TWISTS = (
    ("duration_s", pa.float64(), True, True), ("served_msisdn", pa.binary(), True, True),
    ("start_time", pa.timestamp("us"), True, True), ("record_id", None, True, True),
    ("start_time", pa.int64(), True, True), ("service", pa.int32(), True, True),
    ("bytes_up", None, False, False), ("apn", pa.null(), False, False), ("rat_type", None, False, True),
    ("bytes_down", pa.uint64(), False, True), ("message_count", pa.uint32(), False, True),
    ("partial_sequence", pa.int8(), False, True), ("duration_s", pa.int16(), False, False),
    ("start_time", pa.timestamp("ns", tz="UTC"), False, True), ("extra_column", pa.string(), False, True),
)


def parquet_schema(kind, seed, rng, pool, n):
    """One column of another type than the schema's, or left out, or an extra one."""
    added = make_added(rng, pool, seed, n, MICROS, None)
    field, arrow_type, refused, kept = _SCHEMA_TWISTS[int(rng.integers(len(_SCHEMA_TWISTS)))]
    types = parquet_types(rng, added.stored, "us")
    records = added.stored
    if arrow_type is None:
        del types[field]
    elif arrow_type == pa.null():
        records = [{**r, field: None} for r in records]
    elif field == "service" and pa.types.is_integer(arrow_type):
        records = [{**r, field: ("VOICE", "SMS", "DATA").index(r[field])} for r in records]
    elif pa.types.is_integer(arrow_type) and field != "start_time":
        bits = arrow_type.bit_width
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if pa.types.is_signed_integer(arrow_type) else \
            (0, 2**bits - 1)
        records = [{**r, field: min(max(r[field], low), high)} for r in records]
    elif arrow_type == pa.float64():
        records = [{**r, field: float(r[field])} for r in records]
    elif arrow_type == pa.binary():
        records = [{**r, field: r[field].encode()} for r in records]
    if arrow_type is not None:
        types[field] = arrow_type
    damage = structure.Damage(parquet_bytes(records, types), f"column {field} as {arrow_type or 'missing'}",
                              may_refuse=refused, must_refuse=refused, records_in=n, intact=frozenset(range(n)),
                              exact_values=kept)
    return file_case(kind, seed, added, damage, "fuzz-added.parquet", f"parquet of {n} records")


def jsonl_damaged(name: str):
    """A builder for JSON lines damage ``name`` (``jsonl_truncate``, ``jsonl_bytes`` or ``jsonl_gzip``)."""
    def build(kind, seed, rng, pool, n):
        added = make_added(rng, pool, seed, n, MICROS, None)
        text = jsonl_text(rng, added)
        if name == "jsonl_gzip":
            return file_case(kind, seed, added, structure.gzip_corrupt(rng, text, n), "fuzz-added.jsonl.gz",
                             f"jsonl.gz of {n} records")
        return file_case(kind, seed, added, getattr(structure, name)(rng, text, n), "fuzz-added.jsonl",
                         f"jsonl of {n} records")
    return build


def pubsub_container(kind, seed, rng, pool, n):
    """Records in 1-3 Avro container messages; one message's container damaged (``structure.AVRO``)."""
    added = make_added(rng, pool, seed, n, MICROS, None)
    parts = np.array_split(np.arange(n), int(rng.integers(1, 4)))
    damaged_part = int(rng.integers(len(parts)))
    schema = writer_schema(USAGE_V2)
    messages, intact, notes = [], set(), []
    for index, part in enumerate(parts):
        records = [added.stored[int(i)] for i in part]
        container = avro_container([encode_datum(r, schema) for r in records], block_sizes(rng, len(records)),
                                   schema, pick(rng, ("null", "deflate")))
        if index != damaged_part or not records:
            messages.append(Message(container.data, {"content-type": AVRO_CONTAINER}, len(records), False,
                                    len(container.data) + 1))
            intact.update(r["record_id"] for r in records)
            continue
        name = pick(rng, sorted(structure.AVRO))
        damage = structure.AVRO[name](rng, container, len(records))
        notes.append(f"message {index} ({len(records)} records, {len(container.blocks)} blocks, {container.codec}): "
                     f"{name}: {damage.note}")
        messages.append(Message(damage.data, {"content-type": AVRO_CONTAINER},
                                1 if damage.must_refuse else damage.records_in, damage.may_refuse,
                                len(damage.data) + 1))
        if not damage.may_refuse:
            intact.update(records[p]["record_id"] for p in damage.intact)
    return Case(kind=kind, seed=seed, description="; ".join(notes) or "no damage", records=n, mutated=1,
                messages=tuple(messages), intact=frozenset(intact), exact_values=False)


# Attributes and payloads a publisher may get wrong: (label, attributes, body); each message must
# still be exactly one record (a reject when it cannot be read).
_ODD_MESSAGES = (
    ("no content-type", None, "json"), ("content-type ''", {"content-type": ""}, "json"),
    ("content-type application/JSON", {"content-type": "application/JSON"}, "json"),
    ("content-type text/plain", {"content-type": "text/plain"}, "json"),
    ("avro-datum without schema", {"content-type": AVRO_DATUM}, "datum"),
    ("avro-datum schema usage_record_v3", {"content-type": AVRO_DATUM, "schema": "usage_record_v3"}, "datum"),
    ("v2 datum labelled v1", {"content-type": AVRO_DATUM, "schema": USAGE_V1}, "datum"),
    ("JSON payload as an Avro container", {"content-type": AVRO_CONTAINER}, "json"),
    ("Avro datum as JSON", {"content-type": JSON}, "datum"),
    ("two JSON objects in one message", {"content-type": JSON}, "two"),
    ("empty JSON message", {"content-type": JSON}, "empty"),
    ("empty Avro datum", {"content-type": AVRO_DATUM, "schema": USAGE_V2}, "empty"),
    ("empty Avro container", {"content-type": AVRO_CONTAINER}, "empty"),
    ("whitespace JSON message", {"content-type": JSON}, "blank"),
)


def pubsub_attributes(kind, seed, rng, pool, n):
    added = make_added(rng, pool, seed, n, MICROS, None)
    schema = writer_schema(USAGE_V2)
    messages, notes = [], []
    for record in added.stored:
        label, attributes, body = _ODD_MESSAGES[int(rng.integers(len(_ODD_MESSAGES)))]
        payload = {"datum": encode_datum(record, schema), "json": jsonl_line(record),
                   "two": jsonl_line(record) + b"\n" + jsonl_line(record), "empty": b"",
                   "blank": b" \n\t\r\n"}[body]
        messages.append(Message(payload, attributes, 1, True, len(payload) + 1))
        notes.append(label)
    counts = {label: notes.count(label) for label in sorted(set(notes))}
    return Case(kind=kind, seed=seed, description="; ".join(f"{v} x {k}" for k, v in counts.items()), records=n,
                mutated=n, messages=tuple(messages), exact_values=False)
