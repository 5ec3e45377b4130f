"""Avro <-> Arrow schema mapping: the single source of truth for column names and types.

Every Arrow schema the project uses is derived here from an ``.avsc`` file, so a field added to the
Avro schema appears in the batches, the Parquet outputs and the decoders at once.

Mapping (Avro -> Arrow): string -> string, bytes -> binary, int -> int32, long -> int64,
boolean -> bool, float -> float32, double -> float64, enum -> string (its symbol),
long/timestamp-micros -> timestamp[us, UTC], ["null", T] -> T nullable, array -> list,
map -> map<string, V>, record -> struct.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from cdr_schemas.registry import (
    CHARGE_LINE,
    DUPLICATE_RECORD,
    INVOICE_SUMMARY,
    RATED_EVENT,
    REJECTED_RECORD,
    USAGE_LATEST,
    load_schema,
)

# Columns the decoders add to every usage batch so a record can be traced to its input.
PROVENANCE_FIELDS = (
    pa.field("input_file", pa.string(), nullable=False),
    pa.field("input_position", pa.int64(), nullable=False),
)

_PRIMITIVES = {
    "string": pa.string(),
    "bytes": pa.binary(),
    "int": pa.int32(),
    "long": pa.int64(),
    "boolean": pa.bool_(),
    "float": pa.float32(),
    "double": pa.float64(),
}
TIMESTAMP_US_UTC = pa.timestamp("us", tz="UTC")


def _avro_type_to_arrow(avro_type) -> tuple[pa.DataType, bool]:
    """Return (arrow type, nullable) for one Avro type."""
    if isinstance(avro_type, list):
        non_null = [t for t in avro_type if t != "null"]
        if len(non_null) != 1:
            raise ValueError(f"Avro union {avro_type!r}: only [\"null\", T] unions map to Arrow")
        arrow_type, _ = _avro_type_to_arrow(non_null[0])
        return arrow_type, "null" in avro_type
    if isinstance(avro_type, str):
        if avro_type not in _PRIMITIVES:
            raise ValueError(f"Avro type {avro_type!r} has no Arrow mapping")
        return _PRIMITIVES[avro_type], False
    kind = avro_type["type"]
    if avro_type.get("logicalType") == "timestamp-micros" and kind == "long":
        return TIMESTAMP_US_UTC, False
    if kind == "enum":
        return pa.string(), False
    if kind == "array":
        item, item_nullable = _avro_type_to_arrow(avro_type["items"])
        return pa.list_(pa.field("item", item, nullable=item_nullable)), False
    if kind == "map":
        value, _ = _avro_type_to_arrow(avro_type["values"])
        return pa.map_(pa.string(), value), False
    if kind == "record":
        return pa.struct(_record_fields(avro_type)), False
    return _avro_type_to_arrow(kind)


def _record_fields(record: dict) -> list[pa.Field]:
    fields = []
    for field in record["fields"]:
        arrow_type, nullable = _avro_type_to_arrow(field["type"])
        fields.append(pa.field(field["name"], arrow_type, nullable=nullable))
    return fields


def avro_to_arrow(avro_schema: dict) -> pa.Schema:
    """Arrow schema of an Avro record schema (a parsed ``.avsc`` dict)."""
    if avro_schema.get("type") != "record":
        raise ValueError("avro_to_arrow expects an Avro record schema at the top level")
    return pa.schema(_record_fields(avro_schema))


def _arrow_type_to_avro(arrow_type: pa.DataType, name: str):
    if pa.types.is_timestamp(arrow_type):
        return {"type": "long", "logicalType": "timestamp-micros"}
    for avro_name, candidate in _PRIMITIVES.items():
        if arrow_type == candidate:
            return avro_name
    if pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_list(arrow_type):
        return {"type": "array", "items": _arrow_field_to_avro_type(arrow_type.value_field, name + "_item")}
    if pa.types.is_map(arrow_type):
        return {"type": "map", "values": _arrow_type_to_avro(arrow_type.item_type, name + "_value")}
    if pa.types.is_struct(arrow_type):
        return {"type": "record", "name": name,
                "fields": [{"name": f.name, "type": _arrow_field_to_avro_type(f, f.name)} for f in arrow_type]}
    raise ValueError(f"Arrow type {arrow_type} has no Avro mapping")


def _arrow_field_to_avro_type(field: pa.Field, name: str):
    avro_type = _arrow_type_to_avro(field.type, name)
    return ["null", avro_type] if field.nullable else avro_type


def arrow_to_avro(schema: pa.Schema, name: str, namespace: str = "usage_rating.out.v1") -> dict:
    """Avro record schema of an Arrow schema: the inverse of :func:`avro_to_arrow`.

    Enums come back as strings (Arrow has no enum type); everything else round-trips.
    """
    fields = []
    for field in schema:
        entry = {"name": field.name, "type": _arrow_field_to_avro_type(field, field.name)}
        if field.nullable:
            entry["default"] = None
        fields.append(entry)
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields}


@functools.cache
def usage_batch_schema() -> pa.Schema:
    """Schema of the normalised usage batches every decoder produces (latest usage + provenance)."""
    return pa.schema(list(avro_to_arrow(load_schema(USAGE_LATEST))) + list(PROVENANCE_FIELDS))


@functools.cache
def rated_event_schema() -> pa.Schema:
    return avro_to_arrow(load_schema(RATED_EVENT))


@functools.cache
def charge_line_schema() -> pa.Schema:
    return avro_to_arrow(load_schema(CHARGE_LINE))


@functools.cache
def rejected_schema() -> pa.Schema:
    return avro_to_arrow(load_schema(REJECTED_RECORD))


@functools.cache
def duplicate_schema() -> pa.Schema:
    return avro_to_arrow(load_schema(DUPLICATE_RECORD))


@functools.cache
def invoice_summary_schema() -> pa.Schema:
    return avro_to_arrow(load_schema(INVOICE_SUMMARY))
