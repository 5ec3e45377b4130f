"""Pub/Sub message payloads <-> Arrow batches: the streaming job's adapters at the edge.

A usage message carries records in one of three forms, named by its ``content-type`` attribute:

| content-type | payload | records |
|---|---|---|
| `application/json` | one JSON object, the JSON-lines record form (docs/input-formats.md) | 1 |
| `application/avro-datum` | one Avro binary datum; attribute `schema` names its writer schema (`usage_record_v1`, `_v2` or `_v3`) | 1 |
| `application/avro` | an Avro object container file (any codec the decoders read) | many: the high-throughput form |

Each message is decoded with the same decoders as files, so the same records give the same rows
and the same rejects. A message whose content type is missing or unknown, or whose payload cannot
be read at all, becomes one ``MALFORMED_RECORD`` reject carrying the whole payload: nothing is
dropped and the job keeps running.

``rated_message`` encodes rated events as an Avro container (``rated_event_v1``) for the
rated-events topic.
"""

from __future__ import annotations

import io
import json
from typing import Iterator

import fastavro
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas.arrow_mapping import rated_event_schema, usage_batch_schema
from cdr_schemas.decoders.avro import decode_avro
from cdr_schemas.decoders.common import DecodedBatch, InputFileError, Rejects
from cdr_schemas.decoders.jsonl import BOM, decode_jsonl
from cdr_schemas.reasons import Reason
from cdr_schemas.registry import RATED_EVENT, USAGE_V1, USAGE_V2, USAGE_V3, load_schema

JSON = "application/json"
AVRO_DATUM = "application/avro-datum"
AVRO_CONTAINER = "application/avro"
CONTENT_TYPES = (JSON, AVRO_DATUM, AVRO_CONTAINER)
_DATUM_SCHEMAS = (USAGE_V1, USAGE_V2, USAGE_V3)
_SYNC = b"usage-rating-msg"  # 16 bytes: sync marker of the one-block container wrapped around a datum


def _zigzag(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _avro_bytes(data: bytes) -> bytes:
    return _zigzag(len(data)) + data


def _container_around(datum: bytes, schema_name: str) -> bytes:
    """A one-record, uncompressed Avro container holding ``datum``, so the file decoder reads it."""
    schema = json.dumps(load_schema(schema_name)).encode()
    header = b"Obj\x01" + _zigzag(2) + _avro_bytes(b"avro.schema") + _avro_bytes(schema) + \
        _avro_bytes(b"avro.codec") + _avro_bytes(b"null") + _zigzag(0) + _SYNC
    return header + _zigzag(1) + _avro_bytes(datum) + _SYNC


def _whole_message_reject(label: str, payload: bytes, detail: str) -> DecodedBatch:
    rejects = Rejects()
    rejects.add(Reason.MALFORMED_RECORD, detail, raw=payload, position=0)
    return DecodedBatch(usage=pa.RecordBatch.from_pylist([], schema=usage_batch_schema()),
                        rejected=rejects.to_batch(label))


def decode_message(payload: bytes, attributes: dict[str, str], label: str,
                   batch_size: int = 65_536) -> Iterator[DecodedBatch]:
    """Decode one message's payload into batches (``input_file`` = ``label``, e.g. the message id)."""
    content_type = (attributes or {}).get("content-type")
    if content_type == JSON:
        line = payload.replace(b"\n", b" ")
        if not line.strip(b" \t\r"):  # a blank line is no record in a file; a message must still be one
            yield _whole_message_reject(label, payload, "empty JSON message: expected one JSON object")
            return
        yield from decode_jsonl(label, io.BytesIO(line + b"\n"), batch_size)
        return
    # A message holds few records: the Avro decoder sizes its first column buffers from batch_size,
    # and a batch of a message never holds more records than the payload has bytes.
    batch_size = max(1, min(batch_size, len(payload)))
    if content_type == AVRO_DATUM:
        schema = (attributes or {}).get("schema")
        if schema not in _DATUM_SCHEMAS:
            yield _whole_message_reject(label, payload, f"attribute schema={schema!r}: expected one of "
                                                        f"{', '.join(_DATUM_SCHEMAS)} for an Avro datum")
            return
        yield from decode_avro(label, io.BytesIO(_container_around(payload, schema)), 1)
        return
    if content_type == AVRO_CONTAINER:
        try:
            yield from decode_avro(label, io.BytesIO(payload), batch_size)
        except InputFileError as error:
            yield _whole_message_reject(label, payload, f"unreadable Avro container: {error.reason}")
        return
    yield _whole_message_reject(label, payload, f"content-type attribute {content_type!r}: expected one of "
                                                f"{', '.join(CONTENT_TYPES)}")


def decode_json_messages(payloads: list[bytes], labels: list[str], batch_size: int = 65_536) -> Iterator[DecodedBatch]:
    """Decode many one-record JSON messages at once: the same rows and rejects as ``decode_message``
    gives for each (``input_file`` its label, ``input_position`` 1), in one pass of the JSON-lines
    decoder over their payloads joined as lines (one record a message costs a decoder call otherwise).

    Every payload must hold something besides white space (``decode_message`` rejects the others)."""
    lines = []
    for payload in payloads:
        line = payload[len(BOM):] if payload.startswith(BOM) else payload
        lines.append(line.replace(b"\n", b" "))
    if not lines:
        return
    names = pa.array(labels, pa.string())
    for decoded in decode_jsonl("pubsub:", io.BytesIO(b"\n".join(lines) + b"\n"), batch_size):
        yield DecodedBatch(usage=_relabel(decoded.usage, names), rejected=_relabel(decoded.rejected, names))


def _relabel(batch: pa.RecordBatch, labels: pa.Array) -> pa.RecordBatch:
    """Rows whose input_position is a line of the joined payloads -> that message's label, position 1."""
    if batch.num_rows == 0:
        return batch
    lines = batch.column(batch.schema.get_field_index("input_position"))
    index = pc.subtract(lines, 1)
    columns = list(batch.columns)
    columns[batch.schema.get_field_index("input_file")] = labels.take(index)
    columns[batch.schema.get_field_index("input_position")] = pa.array([1] * batch.num_rows, pa.int64())
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def rated_message(rated: pa.Table | pa.RecordBatch) -> bytes:
    """Rated events as an Avro container file (schema ``rated_event_v1``, deflate)."""
    table = pa.Table.from_batches([rated]) if isinstance(rated, pa.RecordBatch) else rated
    rows = table.cast(rated_event_schema()).to_pylist()
    for row in rows:
        row["start_time"] = int(row["start_time"].timestamp() * 1_000_000) if row["start_time"] else None
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(load_schema(RATED_EVENT)), rows, codec="deflate")
    return buffer.getvalue()
