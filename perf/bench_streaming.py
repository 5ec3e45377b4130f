"""Streaming throughput and latency on the Pub/Sub emulator, beside the emulator's own speed.

    PYTHONPATH=. python perf/bench_streaming.py --records 200000 --per-message 5000 [--json FILE]

Generates an operator day (yesterday, so cycles are open), publishes it as Avro-container
messages of ``--per-message`` records, runs ``usage-rating stream`` on the DirectRunner, and
measures: sustained records/s (first publish to last rated file), publish->rated latency per
record (p50, p99; a record's latency is the time its rated file appeared minus its message's
publish time), the emulator's own publish->pull rate for the same messages, and the rate of
single-record JSON messages. Starts and stops its own emulator unless PUBSUB_EMULATOR_HOST is set.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import fastavro
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdr_schemas.registry import load_schema  # noqa: E402
from synth import GeneratorConfig, generate  # noqa: E402
from pipelines.streaming import StreamConfig, run_stream  # noqa: E402

PROJECT = "usage-rating-bench"


def _rows(gen_dir: Path) -> list[dict]:
    frame = pl.read_parquet(sorted((gen_dir / "cdrs").glob("*.parquet")))
    fields = [f["name"] for f in load_schema("usage_record_v1")["fields"]]
    frame = frame.select(fields).with_columns(pl.col("start_time").dt.epoch("us"))
    return frame.to_dicts()


def _containers(rows: list[dict], per_message: int) -> list[bytes]:
    schema = fastavro.parse_schema(load_schema("usage_record_v1"))
    out = []
    for i in range(0, len(rows), per_message):
        buffer = io.BytesIO()
        fastavro.writer(buffer, schema, rows[i:i + per_message], codec="deflate")
        out.append(buffer.getvalue())
    return out


def _clients():
    from google.cloud import pubsub_v1
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def _topic(name: str):
    publisher, subscriber = _clients()
    topic = publisher.topic_path(PROJECT, name)
    sub = subscriber.subscription_path(PROJECT, name + "-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=120)
    return topic, sub


def _publish(topic: str, payloads: list[bytes], content_type: str) -> dict[str, float]:
    """Publish; returns message id -> publish time (seconds since the epoch)."""
    publisher, _ = _clients()
    sent = {}
    futures = []
    for data in payloads:
        futures.append((time.time(), publisher.publish(topic, data, **{"content-type": content_type})))
    for at, future in futures:
        sent[future.result(timeout=120)] = at
    return sent


def emulator_rate(payloads: list[bytes]) -> float:
    """Messages/s through the emulator alone: publish all, pull all, same process."""
    topic, sub = _topic(f"raw-{int(time.time() * 1000)}")
    _, subscriber = _clients()
    started = time.monotonic()
    _publish(topic, payloads, "application/avro")
    received = 0
    while received < len(payloads):
        response = subscriber.pull(subscription=sub, max_messages=100, timeout=30)
        if response.received_messages:
            subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in response.received_messages])
        received += len(response.received_messages)
    return len(payloads) / (time.monotonic() - started)


def run_job(gen_dir: Path, out: Path, payloads: list[bytes], records: int, content_type: str,
            timeout_s: float) -> dict:
    topic, sub = _topic(f"usage-{int(time.time() * 1000)}")
    config = StreamConfig(subscription=sub, reference_dir=str(gen_dir / "reference"), output_dir=str(out),
                          shards=4, control_interval_s=1.0)
    result = run_stream(config, ["--runner=DirectRunner"])
    try:
        time.sleep(5)  # let workers start
        sent = _publish(topic, payloads, content_type)
        first = min(sent.values())
        deadline = time.monotonic() + timeout_s
        totals = {}
        while time.monotonic() < deadline:
            path = out / "control" / "totals.json"
            if path.exists():
                totals = json.loads(path.read_text())
                if totals["rated"] + totals.get("rejected_total", 0) + totals["duplicates"] >= records:
                    break
            time.sleep(0.5)
    finally:
        result.cancel()
    latencies = []
    last = first
    for part in (out / "rated").rglob("*.parquet"):
        written = part.stat().st_mtime
        last = max(last, written)
        ids = pl.read_parquet(part, columns=["input_file"])["input_file"].str.replace("pubsub:", "")
        latencies.extend(written - sent[i] for i in ids.to_list() if i in sent)
    done = totals.get("rated", 0) + totals.get("rejected_total", 0) + totals.get("duplicates", 0)
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"records": done, "records_per_s": done / max(last - first, 1e-9),
            "p50_latency_s": float(np.percentile(lat, 50)), "p99_latency_s": float(np.percentile(lat, 99))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=5_000)
    parser.add_argument("--single", type=int, default=500, help="single-record JSON messages to time")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if "PUBSUB_EMULATOR_HOST" not in os.environ:
            from tests.pubsub_emulator import pubsub_emulator
            os.environ["PUBSUB_EMULATOR_HOST"] = stack.enter_context(pubsub_emulator())
            stack.callback(os.environ.pop, "PUBSUB_EMULATOR_HOST", None)
        work = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        gen_dir = work / "gen"
        generate(GeneratorConfig(out_dir=gen_dir, records=args.records, subscribers=max(100, args.records // 50),
                                 days=1, files=1, fmt="parquet", start=dt.date.today() - dt.timedelta(days=2),
                                 duplicate_rate=0.0, malformed_rate=0.0))
        rows = _rows(gen_dir)
        payloads = _containers(rows, args.per_message)
        stream = run_job(gen_dir, work / "out-containers", payloads, len(rows), "application/avro", args.timeout)
        emulator = emulator_rate(payloads)
        singles = [json.dumps({**r, "start_time": int(r["start_time"])}).encode() for r in rows[:args.single]]
        single = run_job(gen_dir, work / "out-single", singles, len(singles), "application/json", args.timeout)
    figures = {
        "records": stream["records"], "per_message": args.per_message,
        "sustained_records_per_s": stream["records_per_s"],
        "p50_latency_s": stream["p50_latency_s"], "p99_latency_s": stream["p99_latency_s"],
        "emulator_messages_per_s": emulator,
        "emulator_records_per_s": emulator * args.per_message,
        "single_record_messages_per_s": single["records_per_s"],
    }
    print(f"streaming {figures['records']:,} records in messages of {args.per_message:,} on the DirectRunner")
    print(f"{'sustained records/s':<34}{figures['sustained_records_per_s']:>14,.0f}   target 200,000")
    print(f"{'p50 publish->rated latency (s)':<34}{figures['p50_latency_s']:>14.2f}")
    print(f"{'p99 publish->rated latency (s)':<34}{figures['p99_latency_s']:>14.2f}   target <= 5")
    print(f"{'emulator publish->pull msgs/s':<34}{emulator:>14,.0f}   ({figures['emulator_records_per_s']:,.0f} records/s)")
    print(f"{'single-record messages/s':<34}{figures['single_record_messages_per_s']:>14,.0f}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
