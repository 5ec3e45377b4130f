"""Structure-aware corruptions of whole files: Avro blocks, Parquet pages and footers, JSON lines
text and gzip streams.

Each corruption takes a random generator and a freshly written file and returns a
:class:`Damage`: the corrupted bytes, a note saying exactly what changed, and what a correct
decoder may do with them: refuse the whole file (``InputFileError``), and if it does not, how many
records it must account for and which record positions are untouched (they must still be rated).
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np

from tests.fuzz.encode import SYNC_SIZE, Container, encode_datum, varint
from tests.fuzz.values import INT64_MAX, pick


@dataclasses.dataclass(frozen=True)
class Damage:
    data: bytes
    note: str
    may_refuse: bool              # InputFileError for the whole file is a correct answer
    must_refuse: bool = False     # ... and the only correct one
    records_in: int | tuple[int, ...] | None = None  # records the file must account for when not refused
                                                     # (one of them; None: unknown)
    intact: frozenset[int] = frozenset()   # record positions (as written) untouched: they must be rated
    exact_values: bool = True     # rated rows hold exactly the values written (False: bytes may have changed silently)


def _replace(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def _block_positions(container: Container) -> list[range]:
    ranges, first = [], 0
    for block in container.blocks:
        ranges.append(range(first, first + block.count))
        first += block.count
    return ranges


def _outside(ranges: list[range], *skip: int) -> frozenset[int]:
    return frozenset(p for i, r in enumerate(ranges) if i not in skip for p in r)


# --- Avro container files --------------------------------------------------------------------------

def avro_block_count(rng, c: Container, n: int) -> Damage:
    """One block's record count replaced: off by one, doubled, zero, or far beyond its bytes."""
    b = int(rng.integers(len(c.blocks)))
    block = c.blocks[b]
    count = pick(rng, (block.count + 1, block.count - 1, block.count * 2, 0, block.count + 1000, 2**20, 2**31,
                       2**40, 2**62, INT64_MAX, -1, -(2**40)))
    data = _replace(c.data, block.count_at, block.size_at, varint(count))
    return Damage(data, f"block {b} record count {block.count} -> {count}", may_refuse=True,
                  records_in=None, intact=_outside(_block_positions(c), b))


def avro_block_size(rng, c: Container, n: int) -> Damage:
    """One block's byte size replaced (the payload is not): the framing after it is lost."""
    b = int(rng.integers(len(c.blocks)))
    block = c.blocks[b]
    size = pick(rng, (block.payload_size + 1, block.payload_size - 1, 0, block.payload_size * 2, 2**31, 2**40,
                      INT64_MAX, -1, block.payload_size + SYNC_SIZE))
    if size == block.payload_size:
        size += 1
    data = _replace(c.data, block.size_at, block.payload_at, varint(size))
    return Damage(data, f"block {b} byte size {block.payload_size} -> {size}", may_refuse=True, must_refuse=True)


def avro_sync(rng, c: Container, n: int) -> Damage:
    """One byte of a block's sync marker (or the header's) flipped."""
    b = int(rng.integers(-1, len(c.blocks)))
    at = (c.header_end - SYNC_SIZE if b < 0 else c.blocks[b].sync_at) + int(rng.integers(SYNC_SIZE))
    data = bytearray(c.data)
    data[at] ^= 1 << int(rng.integers(8))
    where = "header" if b < 0 else f"block {b}"
    return Damage(bytes(data), f"{where} sync marker byte {at} flipped", may_refuse=True, must_refuse=True)


def avro_payload(rng, c: Container, n: int) -> Damage:
    """Bytes of one block's (compressed) payload flipped, inserted or deleted; its size updated."""
    b = int(rng.integers(len(c.blocks)))
    block = c.blocks[b]
    payload = bytearray(c.data[block.payload_at:block.payload_at + block.payload_size])
    how = pick(rng, ("flip", "insert", "delete", "cut", "zero"))
    at = int(rng.integers(max(len(payload), 1)))
    if how == "flip" and payload:
        for _ in range(int(rng.integers(1, 4))):
            payload[int(rng.integers(len(payload)))] ^= 1 << int(rng.integers(8))
    elif how == "insert":
        payload[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
    elif how == "delete":
        del payload[at:at + int(rng.integers(1, 9))]
    elif how == "cut":
        del payload[at:]
    else:
        payload[at:at + 8] = bytes(len(payload[at:at + 8]))
    data = c.data[:block.size_at] + varint(len(payload)) + bytes(payload) + c.data[block.sync_at:]
    # The decoder cannot tell a payload cut short from a count made too big: a block whose bytes
    # cannot hold its count may become one reject (issue 12.3) instead of one per record.
    return Damage(data, f"block {b} ({c.codec}) payload: {how} at byte {at}, {block.payload_size} -> "
                        f"{len(payload)} bytes", may_refuse=True, records_in=(n, n - block.count + 1),
                  intact=_outside(_block_positions(c), b), exact_values=False)


def avro_datum(rng, c: Container, n: int, records: list[dict], schema: dict) -> Damage:
    """One datum of a null-codec block rewritten with impossible bytes (a long of 11 bytes, enum
    index 99, a negative or huge string length, union branch 7); its block size updated.

    The records before it in its block and every other block are untouched.
    """
    b = int(rng.integers(len(c.blocks)))
    ranges = _block_positions(c)
    position = int(rng.choice(list(ranges[b])))
    datums = [encode_datum(records[p], schema) for p in ranges[b]]
    fields = [f["name"] for f in schema["fields"]]
    how = int(rng.integers(5))
    good = datums[position - ranges[b].start]
    if how == 0:      # duration_s as a varint that does not end within 64 bits
        bad, note = _splice_field(good, records[position], schema, "duration_s", b"\xff" * 10 + b"\x01"), \
            "duration_s varint of 11 bytes"
    elif how == 1:
        bad, note = _splice_field(good, records[position], schema, "service", varint(99)), "service enum index 99"
    elif how == 2:
        bad, note = _splice_field(good, records[position], schema, "record_id", varint(-5)), "record_id length -5"
    elif how == 3:
        bad, note = _splice_field(good, records[position], schema, "served_msisdn", varint(2**40)), \
            "served_msisdn length 2^40"
    else:
        name = pick(rng, [f for f in ("other_party", "visited_network", "apn") if f in fields])
        bad, note = _splice_field(good, records[position], schema, name, varint(7)), f"{name} union branch 7"
    datums[position - ranges[b].start] = bad
    payload = b"".join(datums)
    block = c.blocks[b]
    data = c.data[:block.size_at] + varint(len(payload)) + payload + c.data[block.sync_at:]
    intact = _outside(ranges, b) | frozenset(range(ranges[b].start, position))
    return Damage(data, f"block {b} datum {position}: {note}", may_refuse=False, records_in=n, intact=intact)


def _splice_field(datum: bytes, record: dict, schema: dict, name: str, new_prefix: bytes) -> bytes:
    """``datum`` with the encoding of field ``name`` replaced by ``new_prefix`` (the rest kept)."""
    start = 0
    for field in schema["fields"]:
        encoded = encode_datum({field["name"]: record.get(field["name"], field.get("default"))},
                               {"fields": [field]})
        if field["name"] == name:
            return datum[:start] + new_prefix + datum[start + len(encoded):]
        start += len(encoded)
    raise KeyError(name)


def avro_truncate(rng, c: Container, n: int) -> Damage:
    """The file cut at a random byte (sometimes exactly at a block's end: a shorter, valid file)."""
    ends = [block.end for block in c.blocks[:-1]]
    if ends and rng.random() < 0.2:
        cut = int(rng.choice(ends))
        k = ends.index(cut) + 1
        kept = sum(block.count for block in c.blocks[:k])
        return Damage(c.data[:cut], f"cut after block {k - 1} at byte {cut} of {len(c.data)}", may_refuse=False,
                      records_in=kept, intact=frozenset(range(kept)))
    cut = int(rng.integers(1, len(c.data)))
    if cut in ends:
        cut -= 1
    return Damage(c.data[:cut], f"cut at byte {cut} of {len(c.data)}", may_refuse=True, must_refuse=True)


def avro_header(rng, c: Container, n: int) -> Damage:
    """The header broken: magic, schema JSON, codec name, metadata count, or cut inside it."""
    how = int(rng.integers(5))
    data = c.data
    if how == 0:
        data, note = b"Obj\x02" + data[4:], "magic Obj\\x02"
    elif how == 1:
        at = data.index(b'"fields"')
        data, note = data[:at] + b"{" + data[at + 1:], "writer schema JSON broken"
    elif how == 2:
        at = data.index(c.codec.encode(), data.index(b"avro.codec"))
        data, note = data[:at] + b"zzzz"[:len(c.codec)] + data[at + len(c.codec):], "codec renamed"
    elif how == 3:
        data, note = data[:4] + varint(2**40) + data[5:], "metadata map count 2^40"
    else:
        cut = int(rng.integers(1, c.header_end))
        data, note = data[:cut], f"cut inside the header at byte {cut}"
    return Damage(data, f"header: {note}", may_refuse=True, must_refuse=True)


AVRO = {"avro_block_count": avro_block_count, "avro_block_size": avro_block_size, "avro_sync": avro_sync,
        "avro_payload": avro_payload, "avro_truncate": avro_truncate, "avro_header": avro_header}


# --- Parquet ----------------------------------------------------------------------------------------

def parquet_corrupt(rng, data: bytes, n: int) -> Damage:
    """Bytes of the pages or the footer flipped, the footer length or magic broken, or the file cut."""
    footer_len = int.from_bytes(data[-8:-4], "little")
    footer_start = len(data) - 8 - footer_len
    how = pick(rng, ("pages", "pages", "footer", "footer_length", "magic", "cut"))
    out = bytearray(data)
    if how == "pages":
        for _ in range(int(rng.integers(1, 6))):
            out[int(rng.integers(4, footer_start))] ^= 1 << int(rng.integers(8))
        note = "page bytes flipped"
    elif how == "footer":
        at = int(rng.integers(footer_start, len(data) - 8))
        out[at] ^= 1 << int(rng.integers(8))
        note = f"footer byte {at - footer_start} of {footer_len} flipped"
    elif how == "footer_length":
        value = pick(rng, (footer_len + 1, footer_len - 1, 0, 2**31 - 1, len(data)))
        out[-8:-4] = value.to_bytes(4, "little")
        note = f"footer length {footer_len} -> {value}"
    elif how == "magic":
        out[-4:] = b"PAR0"
        note = "trailing magic PAR0"
    else:
        cut = int(rng.integers(1, len(data)))
        return Damage(data[:cut], f"cut at byte {cut} of {len(data)}", may_refuse=True, must_refuse=True)
    return Damage(bytes(out), note, may_refuse=True, records_in=n, exact_values=False)


# --- JSON lines and gzip ------------------------------------------------------------------------------

def _line_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line's content; end is the offset of its newline (or of the end)."""
    spans, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        spans.append((start, end))
        start = end + 1
    return spans


def records_in_text(data: bytes) -> int:
    """Records a JSON lines decoder must account for: its non-blank lines (BOM at the start ignored)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return sum(1 for line in data.split(b"\n") if line.strip(b" \t\r"))


def jsonl_truncate(rng, data: bytes, n: int) -> Damage:
    """The text cut at a random byte: the lines before the cut are whole records, the cut line a reject."""
    cut = int(rng.integers(1, len(data)))
    intact = frozenset(i for i, (_, end) in enumerate(_line_spans(data)) if end <= cut)
    return Damage(data[:cut], f"cut at byte {cut} of {len(data)}", may_refuse=False,
                  records_in=records_in_text(data[:cut]), intact=intact)


def jsonl_bytes(rng, data: bytes, n: int) -> Damage:
    """A few bytes anywhere replaced (newlines and quotes among them): each line still one record."""
    out = bytearray(data)
    hits = sorted(int(rng.integers(len(data))) for _ in range(int(rng.integers(1, 6))))
    for at in hits:
        out[at] = int(pick(rng, (0x0A, 0x22, 0x7B, 0x7D, 0x5C, 0x00, 0xFF, 0x30, 0x20, 0x2C)))
    intact = frozenset(i for i, (start, end) in enumerate(_line_spans(data))
                       if not any(start - 1 <= at <= end for at in hits))
    return Damage(bytes(out), f"bytes at {hits} replaced", may_refuse=False,
                  records_in=records_in_text(bytes(out)), intact=intact, exact_values=False)


def gzip_corrupt(rng, text: bytes, n: int) -> Damage:
    """The gzip stream of the text cut short, or a byte of its compressed body or trailer flipped:
    a corrupt gzip stream is fatal for the file (docs/input-formats.md)."""
    data = gzip.compress(text, compresslevel=6, mtime=0)
    if rng.random() < 0.6:
        cut = int(rng.integers(11, len(data)))
        return Damage(data[:cut], f"gzip stream cut at byte {cut} of {len(data)}", may_refuse=True, must_refuse=True)
    out = bytearray(data)
    at = int(rng.integers(10, len(data)))
    out[at] ^= 1 << int(rng.integers(8))
    part = "trailer (CRC-32, size)" if at >= len(data) - 8 else "deflate body"
    return Damage(bytes(out), f"gzip {part} byte {at} of {len(data)} flipped", may_refuse=True, must_refuse=True)
