"""The streaming job: Pub/Sub usage messages in; rated events, running charges, rejects and
control totals out — with the same decode, validate, dedup, enrich and rate code as the batch job.

    messages -> decode + validate -> dedup (state per record-key shard) -> rate (state per account
    shard: in-order records from carried balances, out-of-order ones by re-rating the account's
    cycle and emitting corrections) -> files and topics

Arrival time is the element timestamp (the Pub/Sub publish time, or the timestamp attribute when
``--timestamp-attribute`` names one). Every timer is an event-time timer relative to arrival
times, so the job behaves the same under TestStream as on a live subscription (whose watermark
follows publish times). See docs/streaming.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.gcp.pubsub import PROJECT_ID_REGEXP, ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from cdr_schemas.messages import decode_message
from pipelines.counters import add_counters, empty_totals, finish_totals
from pipelines.decode import COUNTS, REJECTED, USAGE, validated_outputs
from pipelines.dedup import SplitByRecordKey
from pipelines.rate import KeyByAccount
from rating.dedup import table_to_batch
from rating.engine import EngineRef, RatingEngine
from rating.stream_dedup import SeenKeys
from rating.stream_rater import ShardState
from sinks.files import write_json, write_part
from sinks.pubsub import ChargeTotalsMessages, DeadLetterMessages, RatedEventMessages

DUPLICATES = "duplicates"
TOTALS = "totals"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> int:
    """'45s', '30m', '6h', '2d' -> seconds; ValueError naming the value otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"duration {text!r}: expected a number and a unit s, m, h or d, e.g. 2d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    subscription: str
    reference_dir: str
    output_dir: str
    rated_topic: str | None = None
    charges_topic: str | None = None
    dead_letter_topic: str | None = None
    allowed_lateness_s: int = 2 * 86400
    shards: int = 16
    batch_size: int = 65_536
    totals_interval_s: float = 2.0
    control_interval_s: float = 5.0
    timestamp_attribute: str | None = None

    def __post_init__(self):
        for name in ("rated_topic", "charges_topic", "dead_letter_topic"):
            topic = getattr(self, name)
            if topic is not None and not re.match(r"^projects/[^/]+/topics/[^/]+$", topic):
                raise ValueError(f"--{name.replace('_', '-')} {topic!r}: expected projects/PROJECT/topics/TOPIC")
            if topic is not None:
                _check_project(f"--{name.replace('_', '-')}", topic)
        if not re.match(r"^projects/[^/]+/subscriptions/[^/]+$", self.subscription):
            raise ValueError(f"--subscription {self.subscription!r}: expected projects/PROJECT/subscriptions/NAME")
        _check_project("--subscription", self.subscription)
        if self.allowed_lateness_s < 0:
            raise ValueError("--allowed-lateness must not be negative")
        if not 1 <= self.shards <= 4096:
            raise ValueError(f"--shards must be between 1 and 4096, got {self.shards}")

    @property
    def allowed_lateness_us(self) -> int:
        return self.allowed_lateness_s * 1_000_000


def _check_project(flag: str, name: str) -> None:
    """ValueError, before Beam's own one-line refusal deep in the pipeline, when the project id of
    ``name`` (projects/PROJECT/...) is not one Beam's Pub/Sub connector accepts."""
    project = name.split("/")[1]
    if not re.match(PROJECT_ID_REGEXP, project):
        raise ValueError(f"{flag} {name!r}: project id {project!r} is not one Pub/Sub accepts: 6 to 63 characters, "
                         f"a lowercase letter first, then lowercase letters, digits, hyphens, dots or colons, and a "
                         f"letter or digit last (e.g. my-project; with the emulator any such id works)")


def _micros(timestamp) -> int:
    return int(timestamp.micros)


def message_label(message) -> str:
    """``input_file`` of a message's rows: ``pubsub:MESSAGE_ID``, or for a message without an id
    ``pubsub:`` and 12 hex digits of a BLAKE2b digest of its body (the same in every process and run,
    unlike Python's salted ``hash``)."""
    if getattr(message, "message_id", None):
        return f"pubsub:{message.message_id}"
    return f"pubsub:{hashlib.blake2b(message.data, digest_size=6).hexdigest()}"


class _DecodeMessage(beam.DoFn):
    def __init__(self, batch_size: int):
        self._batch_size = batch_size

    def process(self, message):
        yield from validated_outputs(decode_message(message.data, message.attributes or {}, message_label(message),
                                                    self._batch_size))


class _CoalesceBundle(beam.DoFn):
    """Concatenate the usage batches of one bundle (many small messages) into one batch, stamped
    with the latest arrival of the bundle: fewer, larger batches for the stateful steps."""

    def start_bundle(self):
        self._batches = []
        self._latest = None

    def process(self, batch, timestamp=beam.DoFn.TimestampParam):
        self._batches.append(batch)
        self._latest = timestamp if self._latest is None else max(self._latest, timestamp)

    def finish_bundle(self):
        if self._batches:
            table = pa.Table.from_batches(self._batches).combine_chunks()
            yield WindowedValue(table_to_batch(table), self._latest, [GlobalWindow()])
        self._batches = []


class _StreamDedupShard(beam.DoFn):
    """Per record-key shard: drop records whose (source, record_id) was already let through (state)."""
    SEEN = ReadModifyWriteStateSpec("seen", beam.coders.PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, allowed_lateness_us: int):
        self._lateness = allowed_lateness_us

    def process(self, element, timestamp=beam.DoFn.TimestampParam, seen_state=beam.DoFn.StateParam(SEEN),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        _, batch = element
        seen = seen_state.read() or SeenKeys()
        seen.expire(_micros(timestamp))
        unique, duplicates = seen.filter(batch, self._lateness)
        seen_state.write(seen)
        next_expiry = seen.next_expiry_us()
        if next_expiry is not None:
            expiry.set(Timestamp(micros=next_expiry))
        if unique.num_rows:
            yield unique
        if duplicates.num_rows:
            yield beam.pvalue.TaggedOutput(DUPLICATES, pa.Table.from_batches([duplicates]))

    @on_timer(EXPIRY)
    def expire(self, fired=beam.DoFn.TimestampParam, seen_state=beam.DoFn.StateParam(SEEN),
               expiry=beam.DoFn.TimerParam(EXPIRY)):
        seen = seen_state.read()
        if seen is not None:
            seen.expire(_micros(fired))
            seen_state.write(seen)
            next_expiry = seen.next_expiry_us()
            if next_expiry is not None:
                expiry.set(Timestamp(micros=next_expiry))


class _StreamRateShard(beam.DoFn):
    """Per account shard: rate in event-time order, correct out-of-order arrivals, keep totals (state)."""
    STATE = ReadModifyWriteStateSpec("shard", beam.coders.PickleCoder())
    PENDING = ReadModifyWriteStateSpec("pending_totals", beam.coders.PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, engine: EngineRef, allowed_lateness_us: int, totals_interval_s: float):
        self._engine_ref = engine
        self._lateness = allowed_lateness_us
        self._interval = totals_interval_s
        self._engine = None

    def setup(self):
        self._engine = self._engine_ref.load()

    def process(self, element, timestamp=beam.DoFn.TimestampParam, shard_state=beam.DoFn.StateParam(STATE),
                pending_state=beam.DoFn.StateParam(PENDING), expiry=beam.DoFn.TimerParam(EXPIRY),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, batch = element
        state = shard_state.read() or ShardState()
        state.expire(_micros(timestamp), self._lateness)
        result = state.add(self._engine, batch, _micros(timestamp), self._lateness)
        shard_state.write(state)
        next_expiry = state.next_expiry_us(self._lateness)
        if next_expiry is not None:
            expiry.set(Timestamp(micros=next_expiry))
        if result.totals:
            pending = pending_state.read()
            if pending is None:  # arm the flush once; changes until then are merged
                flush.set(timestamp + self._interval)
                pending = {}
            pending.update(result.totals)
            pending_state.write(pending)
        if result.rated.num_rows:
            yield result.rated
        if result.rejected.num_rows:
            yield beam.pvalue.TaggedOutput(REJECTED, result.rejected)
        yield beam.pvalue.TaggedOutput(COUNTS, {"late_records": result.late_records, "corrections": result.corrections})

    @on_timer(FLUSH)
    def flush_totals(self, pending_state=beam.DoFn.StateParam(PENDING)):
        pending = pending_state.read() or {}
        pending_state.clear()
        for key in sorted(pending):
            yield beam.pvalue.TaggedOutput(TOTALS, pending[key])

    @on_timer(EXPIRY)
    def expire(self, fired=beam.DoFn.TimestampParam, shard_state=beam.DoFn.StateParam(STATE),
               expiry=beam.DoFn.TimerParam(EXPIRY)):
        state = shard_state.read()
        if state is not None and state.expire(_micros(fired), self._lateness):
            shard_state.write(state)
            next_expiry = state.next_expiry_us(self._lateness)
            if next_expiry is not None:
                expiry.set(Timestamp(micros=next_expiry))


class _WriteParts(beam.DoFn):
    """Write each table as new part files; emit what was written as control counters."""

    def __init__(self, output_dir: str, folder: str, partition: str | None = None):
        self._folder = str(Path(output_dir, folder))
        self._partition = partition
        self._kind = folder

    def process(self, table):
        table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        write_part(self._folder, table, partition=self._partition)
        if self._kind == "rated":
            revision = table.column("revision").to_numpy()
            yield {"rated": int((revision == 0).sum()), "rated_revisions": int((revision > 0).sum())}
        elif self._kind == "rejected":
            counts = {}
            for reason in table.column("reason").to_pylist():
                counts[reason] = counts.get(reason, 0) + 1
            yield {"rejected": counts}
        else:
            yield {"duplicates": table.num_rows}


class _ControlTotals(beam.DoFn):
    """Sum every counter on one key; write control/totals.json at most every few seconds."""
    TOTALS = ReadModifyWriteStateSpec("totals", beam.coders.PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", beam.coders.PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, output_dir: str, interval_s: float):
        self._path = str(Path(output_dir, "control", "totals.json"))
        self._interval = interval_s

    def process(self, element, timestamp=beam.DoFn.TimestampParam, totals_state=beam.DoFn.StateParam(TOTALS),
                armed=beam.DoFn.StateParam(ARMED), flush=beam.DoFn.TimerParam(FLUSH)):
        _, counters = element
        totals = totals_state.read() or _stream_totals()
        totals_state.write(add_counters(totals, counters))
        if not armed.read():
            armed.write(True)
            flush.set(timestamp + self._interval)

    @on_timer(FLUSH)
    def write(self, totals_state=beam.DoFn.StateParam(TOTALS), armed=beam.DoFn.StateParam(ARMED)):
        armed.clear()
        totals = finish_totals(totals_state.read() or _stream_totals())
        totals["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(self._path, totals)


def _stream_totals() -> dict:
    totals = empty_totals()
    totals.update(rated_revisions=0, late_records=0, corrections=0)
    return totals


class RateUsageStream(beam.PTransform):
    """Pub/Sub messages -> written outputs; the same transforms as the batch job in the middle."""

    def __init__(self, config: StreamConfig):
        super().__init__()
        self._config = config
        self._engine = EngineRef.of(config.reference_dir)

    def expand(self, messages):
        c = self._config
        decoded = messages | "DecodeMessages" >> beam.ParDo(_DecodeMessage(c.batch_size)).with_outputs(
            REJECTED, COUNTS, main=USAGE)
        deduped = (
            decoded[USAGE]
            | "CoalesceBundle" >> beam.ParDo(_CoalesceBundle())
            | "KeyByRecordId" >> beam.ParDo(SplitByRecordKey(c.shards))
            | "DropDuplicates" >> beam.ParDo(_StreamDedupShard(c.allowed_lateness_us))
            .with_outputs(DUPLICATES, main="unique")
        )
        rated = (
            deduped["unique"]
            | "KeyByAccount" >> beam.ParDo(KeyByAccount(self._engine, c.shards))
            | "RateShard" >> beam.ParDo(_StreamRateShard(self._engine, c.allowed_lateness_us, c.totals_interval_s))
            .with_outputs(REJECTED, COUNTS, TOTALS, main="rated")
        )
        rejected = (decoded[REJECTED], rated[REJECTED]) | "AllRejects" >> beam.Flatten()
        counts = (
            decoded[COUNTS],
            rated[COUNTS],
            rated["rated"] | "WriteRated" >> beam.ParDo(_WriteParts(c.output_dir, "rated", "service_cycle")),
            rejected | "WriteRejects" >> beam.ParDo(_WriteParts(c.output_dir, "rejected")),
            deduped[DUPLICATES] | "WriteDuplicates" >> beam.ParDo(_WriteParts(c.output_dir, "duplicates")),
        ) | "AllCounts" >> beam.Flatten()
        _ = (
            counts
            | "OneKey" >> beam.Map(lambda counters: (0, counters))
            | "ControlTotals" >> beam.ParDo(_ControlTotals(c.output_dir, c.control_interval_s))
        )
        if c.rated_topic:
            _ = (rated["rated"] | "RatedMessages" >> beam.ParDo(RatedEventMessages())
                 | "PublishRated" >> WriteToPubSub(c.rated_topic, with_attributes=True))
        if c.charges_topic:
            _ = (rated[TOTALS] | "TotalsMessages" >> beam.ParDo(ChargeTotalsMessages())
                 | "PublishTotals" >> WriteToPubSub(c.charges_topic, with_attributes=True))
        if c.dead_letter_topic:
            _ = (rejected | "DeadLetters" >> beam.ParDo(DeadLetterMessages())
                 | "PublishDeadLetters" >> WriteToPubSub(c.dead_letter_topic, with_attributes=True))
        return rated["rated"]


def build_stream_pipeline(config: StreamConfig, beam_args: list[str]) -> beam.Pipeline:
    RatingEngine.load(config.reference_dir)  # bad reference data fails before the job starts
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "ReadMessages" >> ReadFromPubSub(subscription=config.subscription, with_attributes=True,
                                           timestamp_attribute=config.timestamp_attribute)
        | "RateUsageStream" >> RateUsageStream(config)
    )
    return pipeline


def run_stream(config: StreamConfig, beam_args: list[str]):
    """Start the job; returns the PipelineResult (call ``wait_until_finish`` or ``cancel``).

    The stream keeps its own folder of Parquet parts (docs/streaming.md), not the Iceberg store of
    the batch jobs: an ``--output`` holding such a store is refused, its files would mix with the
    store's."""
    from sinks.iceberg.catalog import CATALOG_FILE

    if Path(config.output_dir, CATALOG_FILE).exists():
        raise ValueError(f"--output {config.output_dir} is an output store of the batch jobs (Iceberg tables, "
                         f"{CATALOG_FILE}); the stream does not write that store yet: give it a folder of its own")
    for folder in ("rated", "rejected", "duplicates", "control"):
        Path(config.output_dir, folder).mkdir(parents=True, exist_ok=True)
    return build_stream_pipeline(config, beam_args).run()
