"""What a fuzz case is, and how its added records are made and written.

A case adds records to the operator's valid input. They are copies of records the baseline run
rated, from one to three subscribers, with fresh record ids ("companions"); the record kinds
(``tests.fuzz.record_kinds``) change some of them with the mutators of ``tests.fuzz.values``, the
file kinds (``tests.fuzz.file_kinds``) damage the written file with ``tests.fuzz.structure``. The
:class:`Case` says what a correct pipeline must do with it: refuse the file or not, how many
records it accounts for, which added records must still be rated, and (record kinds) the rows of
the same input without its mutated records, for the reference run.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pyarrow as pa

from cdr_schemas.decoders.common import usage_fields
from tests.fuzz import structure
from tests.fuzz.encode import avro_container, encode_datum, jsonl_line, writer_schema
from tests.fuzz.values import INT64_MAX, pick

FIELDS = tuple(f.name for f in usage_fields())


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a rated row of an added record must hold (None: not known exactly)."""

    raw_units: int | None
    start_us: int | None


@dataclasses.dataclass(frozen=True)
class Message:
    """One Pub/Sub message of a case and the records it must account for."""

    payload: bytes
    attributes: dict | None
    records_in: int | tuple[int, ...] | None   # one of these; None: unknown (a damaged container)
    may_reject_whole: bool          # one MALFORMED_RECORD reject for the whole payload is correct
    max_records_in: int


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    seed: int
    description: str
    records: int                    # records written into the mutated input (what the budget counts)
    mutated: int                    # records changed on purpose (record kinds), or 1 damaged file/message
    file_name: str | None = None    # a file case: name and bytes
    file_bytes: bytes | None = None
    messages: tuple[Message, ...] = ()
    may_refuse: bool = False        # InputFileError naming the file is a correct outcome
    must_refuse: bool = False
    records_in: int | tuple[int, ...] | None = None   # records the input accounts for when not refused (one of)
    intact: frozenset[str] = frozenset()   # record ids that must be rated
    exact_values: bool = True       # rated added rows must hold the values written (``expected``)
    expected: dict[str, Expected] = dataclasses.field(default_factory=dict)
    reference_rows: tuple[dict, ...] | None = None   # record kinds: the added input without its mutations

    @property
    def max_records_in(self) -> int:
        """No input yields more records than it has bytes (each message at least one)."""
        if self.file_bytes is not None:
            return len(self.file_bytes) + 1
        return sum(m.max_records_in for m in self.messages)


class Pool:
    """Valid records the baseline rated, by subscriber: what added records are copied from."""

    def __init__(self, templates: list[dict]):
        by_subscriber: dict[str, list[dict]] = defaultdict(list)
        for row in templates:
            by_subscriber[row["served_msisdn"]].append({k: row[k] for k in FIELDS})
        self._by_subscriber = dict(by_subscriber)
        self.subscribers = tuple(sorted(by_subscriber))
        self._by_service: dict[str, list[dict]] = defaultdict(list)
        for subscriber in self.subscribers:
            for row in self._by_subscriber[subscriber]:
                self._by_service[row["service"]].append(row)

    def choose(self, rng) -> tuple[str, ...]:
        count = int(rng.integers(1, 4))
        return tuple(self.subscribers[int(i)] for i in rng.choice(len(self.subscribers), count, replace=False))

    def record(self, rng, subscribers: tuple[str, ...], service: str | None = None) -> dict:
        """A copy of a template of ``subscribers`` (of ``service`` when given; another subscriber's
        when theirs have none)."""
        rows = [r for s in subscribers for r in self._by_subscriber[s] if service in (None, r["service"])]
        if not rows:
            rows = self._by_service[service]
        return dict(rows[int(rng.integers(len(rows)))])


# --- how records are stored and what the decoders must make of them ------------------------------

@dataclasses.dataclass(frozen=True)
class Storage:
    """A format's stored form of start_time, and the fields its writer schema lacks."""

    start_per_us: int = 1           # 1000: timestamp-millis; 1_000_000: a Parquet timestamp in seconds
    start_scale: int = 1            # stored value * scale = microseconds
    missing: tuple[str, ...] = ()   # fields taking their defaults (an Avro v1 writer has no rat_type)

    def store(self, row: dict) -> dict:
        stored = dict(row)
        stored["start_time"] = row["start_time"] // self.start_per_us * self.start_per_us // self.start_scale
        for name in self.missing:
            stored.pop(name, None)
        return stored

    def decoded(self, stored: dict) -> dict:
        """The usage row an unmutated stored record decodes to."""
        row = {name: stored.get(name, _DEFAULTS[name]) for name in FIELDS}
        row["start_time"] = stored["start_time"] * self.start_scale
        return row


_DEFAULTS = {f.name: f.default for f in usage_fields()}
MICROS = Storage()
V1 = Storage(missing=("rat_type", "partial_sequence"))   # an Avro v1 writer has no rat_type
MILLIS_STORAGE = Storage(start_per_us=1000, start_scale=1000)


def expected_of(stored: dict, storage: Storage) -> Expected:
    """Raw units and start of a record as written, when they are plain integers (else None)."""
    def integer(name, default):
        value = stored.get(name, default)
        value = default if value is None else value
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    service = stored.get("service")
    if service == "VOICE":
        raw = integer("duration_s", None)
    elif service == "SMS":
        raw = integer("message_count", 1)
    elif service == "DATA":
        up, down = integer("bytes_up", 0), integer("bytes_down", 0)
        raw = None if up is None or down is None else up + down
    else:
        raw = None
    start = integer("start_time", None)
    return Expected(raw, None if start is None else start * storage.start_scale)


# --- added records ------------------------------------------------------------------------------

@dataclasses.dataclass
class Added:
    """Added records being made: stored dicts, raw JSON lines where a mutator gave one, notes."""

    stored: list[dict] = dataclasses.field(default_factory=list)
    raw: list[bytes | None] = dataclasses.field(default_factory=list)
    mutated: list[bool] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def describe(self, prefix: str) -> str:
        shown = "; ".join(self.notes[:6]) + (f"; ... ({len(self.notes)} mutated)" if len(self.notes) > 6 else "")
        return f"{prefix}: {shown}" if shown else prefix


def make_added(rng, pool: Pool, seed: int, n: int, storage: Storage, mutators: dict | None) -> Added:
    """``n`` companions of one to three subscribers (ids ``fz<seed>-<i>``), each changed by one of
    ``mutators`` with a probability drawn per case (at least one is; None: none is)."""
    subscribers = pool.choose(rng)

    def like(service):
        return storage.store(pool.record(rng, subscribers, service))

    added = Added()
    rate = pick(rng, (0.03, 0.25, 1.0))
    ids = set()
    for i in range(n):
        record = like(None)
        record["record_id"] = f"fz{seed}-{i:05d}"
        raw = None
        mutate = mutators is not None and (rng.random() < rate or (i == n - 1 and not any(added.mutated)))
        if mutate:
            name = pick(rng, sorted(mutators))
            result = mutators[name](rng, record, like)
            note, raw = result if isinstance(result, tuple) else (result, None)
            if isinstance(record.get("record_id"), str) and record["record_id"] in ids and raw is None:
                record["record_id"] += f"~{i}"   # a mutated id stays unique ("60" twice)
            added.notes.append(f"#{i} {note}")
        if isinstance(record.get("record_id"), str):
            ids.add(record["record_id"])
        added.stored.append(record)
        added.raw.append(raw)
        added.mutated.append(mutate)
    return added


def record_case(kind: str, seed: int, added: Added, storage: Storage, description: str, **fields) -> Case:
    """A record-kind case: its companions must be rated, its reference run holds them alone."""
    ids = [r.get("record_id") for r in added.stored]
    companions = [i for i, m in enumerate(added.mutated) if not m]
    expected = {r["record_id"]: expected_of(r, storage) for r in added.stored
                if isinstance(r.get("record_id"), str)}
    reference = tuple(storage.decoded(added.stored[i]) for i in companions)
    return Case(kind=kind, seed=seed, description=description, records=len(added.stored),
                mutated=sum(added.mutated), intact=frozenset(ids[i] for i in companions), expected=expected,
                reference_rows=reference, **fields)


def file_case(kind, seed, added: Added, damage: structure.Damage, file_name: str, prefix: str,
              storage: Storage = MICROS) -> Case:
    """A file-kind case: the damaged file, and what its damage allows."""
    ids = [r["record_id"] for r in added.stored]
    expected = {r["record_id"]: expected_of(r, storage) for r in added.stored} if damage.exact_values else {}
    return Case(kind=kind, seed=seed, description=f"{prefix}: {damage.note}", records=len(ids), mutated=1,
                file_name=file_name, file_bytes=damage.data, may_refuse=damage.may_refuse,
                must_refuse=damage.must_refuse, records_in=damage.records_in,
                intact=frozenset(ids[p] for p in damage.intact), exact_values=damage.exact_values, expected=expected)


# --- writing them --------------------------------------------------------------------------------

def jsonl_text(rng, added: Added) -> bytes:
    """JSON lines of the records (start_time as ISO text or epoch micros), raw lines as given."""
    lines = [raw if raw is not None else jsonl_line(r, iso_start=bool(rng.random() < 0.7))
             for r, raw in zip(added.stored, added.raw)]
    return b"\n".join(lines) + b"\n"


def avro_file(rng, records: list[dict], schema_name: str, codec: str):
    """(container, writer schema) of the records in blocks of random sizes."""
    schema = writer_schema(schema_name)
    datums = [encode_datum(r, schema) for r in records]
    return avro_container(datums, block_sizes(rng, len(datums)), schema, codec), schema


def block_sizes(rng, n: int) -> list[int]:
    sizes, left = [], n
    per_block = pick(rng, (1, 7, 50, 100, 300, 5000))
    while left:
        size = min(left, int(rng.integers(1, per_block + 1)) if rng.random() < 0.3 else per_block)
        sizes.append(size)
        left -= size
    return sizes


_PARQUET_STRING = ("record_id", "source", "service", "served_msisdn", "other_party", "visited_network", "cell_id",
                   "imsi", "apn", "termination_cause", "rat_type", "usage_type", "subscriber", "subscriber_kind")


def parquet_types(rng, stored: list[dict], unit: str) -> dict[str, pa.DataType]:
    """Arrow column types that hold the stored values: the schema's, widened where a mutation needs
    it (uint64 above int64, int64 for a 32-bit field beyond 32 bits), strings sometimes large or
    dictionary-encoded, start_time in ``unit`` with a time zone."""
    types = {}
    for name in FIELDS:
        if name in _PARQUET_STRING:
            types[name] = pick(rng, (pa.string(), pa.string(), pa.large_string(),
                                     pa.dictionary(pa.int32(), pa.string())))
        elif name == "start_time":
            types[name] = pa.timestamp(unit, tz=pick(rng, ("UTC", "+00:00", "Europe/Berlin")))
        else:
            ints = [r[name] for r in stored if isinstance(r.get(name), int)]
            if any(v > INT64_MAX for v in ints):
                types[name] = pa.uint64()
            elif name in ("message_count", "partial_sequence") and not all(-2**31 <= v < 2**31 for v in ints):
                types[name] = pa.int64()
            else:
                types[name] = pa.int32() if name in ("message_count", "partial_sequence") else pa.int64()
    return types
