"""The streaming job against a real Pub/Sub emulator: same answers as the batch job."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import time
from collections import Counter
from pathlib import Path

import fastavro
import polars as pl
import pytest

from cdr_schemas.registry import load_schema
from pipelines.batch import run_batch
from synth import GeneratorConfig, generate
from pipelines.options import BatchConfig
from pipelines.streaming import StreamConfig, run_stream
from tests import store_reads

PROJECT = "usage-rating-test"
DIRECT = ["--runner=DirectRunner"]


def _admin(host):
    from google.cloud import pubsub_v1
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def _topic_and_subscription(name: str):
    publisher, subscriber = _admin(None)
    topic = publisher.topic_path(PROJECT, name)
    subscription = subscriber.subscription_path(PROJECT, f"{name}-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    return topic, subscription


# The stream judges lateness by arrival (wall-clock) time. The usage is generated for two days ago
# and every stream here allows a week of lateness: a cycle ends after its usage, so no cycle ended
# more than about two and a half days (two days plus a timezone offset) before the records arrive,
# and no record is late whatever the date and time of day the tests run (with the default two days
# of lateness, records were late from 06:00 UTC on some days).
LATENESS_S = 7 * 86400


@pytest.fixture(scope="module")
def day_of_usage(tmp_path_factory):
    """A generated day of usage (two days ago, so the cycles are open) as JSON lines, rated by batch."""
    root = tmp_path_factory.mktemp("stream")
    start = dt.date.today() - dt.timedelta(days=2)
    manifest = generate(GeneratorConfig(out_dir=root / "gen", subscribers=150, records=2_500, days=1, files=2,
                                        fmt="jsonl", seed=21, start=start, duplicate_rate=0.01, malformed_rate=0.01))
    batch_out = root / "batch"
    run_batch(BatchConfig(input_glob=str(root / "gen" / "cdrs" / "*"), reference_dir=str(root / "gen" / "reference"),
                          output_dir=str(batch_out), shards=4), DIRECT)
    lines = [line for path in sorted((root / "gen" / "cdrs").iterdir()) for line in path.read_bytes().splitlines()
             if line.strip()]
    return root, manifest, lines, batch_out


def _avro_container(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(load_schema("usage_record_v1")), rows, codec="deflate")
    return buffer.getvalue()


def _avro_row(line: bytes) -> dict | None:
    """The JSON line as an Avro usage_record_v1 dict, or None when it is not a clean record."""
    try:
        row = json.loads(line)
        start = dt.datetime.fromisoformat(row["start_time"].replace("Z", "+00:00"))
        row["start_time"] = int(start.timestamp()) * 1_000_000 + start.microsecond
        fields = {f["name"]: f for f in load_schema("usage_record_v1")["fields"]}
        out = {name: row.get(name, field.get("default")) for name, field in fields.items()}
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(load_schema("usage_record_v1")), out)
        return out
    except Exception:  # anything odd goes as a JSON message instead, exactly as written
        return None


def _messages(lines: list[bytes], seed: int) -> list[tuple[bytes, dict]]:
    """The lines in shuffled order as a mix of Avro containers, Avro datums and JSON messages."""
    rnd = random.Random(seed)
    lines = lines[:]
    rnd.shuffle(lines)
    messages, container = [], []
    schema = fastavro.parse_schema(load_schema("usage_record_v1"))
    for line in lines:
        row = _avro_row(line)
        kind = rnd.random()
        if row is None or kind < 0.02:
            messages.append((line, {"content-type": "application/json"}))
        elif kind < 0.04:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, schema, row)
            messages.append((buffer.getvalue(), {"content-type": "application/avro-datum", "schema": "usage_record_v1"}))
        else:
            container.append(row)
            if len(container) == 250:
                messages.append((_avro_container(container), {"content-type": "application/avro"}))
                container = []
    if container:
        messages.append((_avro_container(container), {"content-type": "application/avro"}))
    rnd.shuffle(messages)
    return messages


def _publish(topic: str, messages: list[tuple[bytes, dict]]) -> None:
    publisher, _ = _admin(None)
    futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
    for future in futures:
        future.result(timeout=60)


def _wait_for(output: Path, records: int, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    totals = {}
    while time.monotonic() < deadline:
        path = output / "control" / "totals.json"
        if path.exists():
            totals = json.loads(path.read_text())
            done = totals["rated"] + totals.get("rejected_total", 0) + totals["duplicates"]
            if totals["records_in"] >= records and done >= totals["records_in"]:
                time.sleep(3)  # let the last running totals and files land
                return json.loads(path.read_text())
        time.sleep(1)
    raise AssertionError(f"the streaming job did not account for {records} records in {timeout_s} s: {totals}")


def _latest_rated(output: Path) -> pl.DataFrame:
    frame = pl.read_parquet(sorted((output / "rated").rglob("*.parquet")), hive_partitioning=False)
    return frame.sort("revision").group_by(["source", "record_id"], maintain_order=True).last()


COMPARED = ["source", "record_id", "account_id", "service_cycle", "zone", "band", "tier", "charged_units",
            "free_units", "charge_micros"]


def _read(folder: Path) -> pl.DataFrame:
    files = sorted(folder.rglob("*.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame()


def test_stream_gives_the_batch_answers(pubsub_host, day_of_usage, tmp_path):
    root, manifest, lines, batch_out = day_of_usage
    topic, subscription = _topic_and_subscription("usage-a")
    rated_topic, rated_sub = _topic_and_subscription("rated-a")
    charges_topic, charges_sub = _topic_and_subscription("charges-a")
    dead_topic, dead_sub = _topic_and_subscription("dead-a")
    output = tmp_path / "stream"
    config = StreamConfig(subscription=subscription, reference_dir=str(root / "gen" / "reference"),
                          output_dir=str(output), rated_topic=rated_topic, charges_topic=charges_topic,
                          dead_letter_topic=dead_topic, shards=4, totals_interval_s=1.0, control_interval_s=1.0,
                          allowed_lateness_s=LATENESS_S)
    result = run_stream(config, DIRECT)
    try:
        garbage = [(b"not a record", {"content-type": "text/plain"})]
        _publish(topic, _messages(lines, seed=1) + garbage)
        totals = _wait_for(output, manifest["records_written"] + 1)
    finally:
        result.cancel()

    assert totals["records_in"] == manifest["records_written"] + 1
    assert totals["records_balanced"]
    batch_rated = pl.from_arrow(store_reads.table(batch_out, "rated")).select(COMPARED).sort(["source", "record_id"])
    stream_rated = _latest_rated(output).select(COMPARED).sort(["source", "record_id"])
    assert stream_rated.equals(batch_rated)
    batch_rejects = Counter(zip(*pl.from_arrow(store_reads.table(batch_out, "rejected")).select(["reason", "raw"])
                                .to_dict(as_series=False).values()))
    stream_rejects = Counter(zip(*_read(output / "rejected").select(["reason", "raw"]).to_dict(as_series=False).values()))
    assert stream_rejects - batch_rejects == Counter({("MALFORMED_RECORD", b"not a record"): 1})
    assert batch_rejects - stream_rejects == Counter()
    batch_dups = set(pl.from_arrow(store_reads.table(batch_out, "duplicates")).select(["source", "record_id"])
                     .iter_rows())
    stream_dups = set(_read(output / "duplicates").select(["source", "record_id"]).iter_rows())
    assert stream_dups == batch_dups and len(batch_dups) == sum(manifest["duplicates_injected"].values())

    _, subscriber = _admin(None)
    rated_messages = subscriber.pull(subscription=rated_sub, max_messages=50, timeout=30).received_messages
    assert rated_messages, "rated events reach the rated topic"
    message = rated_messages[0].message
    records = list(fastavro.reader(io.BytesIO(message.data)))
    assert records and all(r["account_id"] == message.attributes["account"] for r in records)
    charges = subscriber.pull(subscription=charges_sub, max_messages=50, timeout=30).received_messages
    assert charges and "charge_micros" in json.loads(charges[0].message.data)
    dead = subscriber.pull(subscription=dead_sub, max_messages=100, timeout=30).received_messages
    assert any(m.message.data == b"not a record" for m in dead)


def test_redelivered_messages_are_not_charged_twice(pubsub_host, day_of_usage, tmp_path):
    root, manifest, lines, batch_out = day_of_usage
    topic, subscription = _topic_and_subscription("usage-b")
    output = tmp_path / "stream"
    config = StreamConfig(subscription=subscription, reference_dir=str(root / "gen" / "reference"),
                          output_dir=str(output), shards=4, control_interval_s=1.0, allowed_lateness_s=LATENESS_S)
    result = run_stream(config, DIRECT)
    try:
        messages = _messages(lines[:600], seed=2)
        _publish(topic, messages)
        _publish(topic, messages)  # the whole feed again, as after a redelivery storm
        totals = _wait_for(output, 1200)
    finally:
        result.cancel()
    assert totals["records_balanced"] and totals["records_in"] == 1200
    rated = _read(output / "rated")
    assert rated.filter(pl.col("revision") == 0).height == rated.select(["source", "record_id"]).unique().height
    assert totals["duplicates"] >= 600 - totals["rejected_total"] // 2
