"""The streaming job on the store, in process, its Pub/Sub pull path replaced by a feed of messages
(``_Feed``): out-of-order usage and corrections, restarts and redeliveries, a batch run in between,
closed cycles, billing at close. The real emulator, kills and signals are tests/test_streaming.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import random
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines.cli import main
from pipelines.streaming import StreamConfig, StreamJob, decode_messages
from rating.engine import RatingEngine
from rating.reference import load_reference
from sinks.iceberg import IcebergStore
from tests.month_cdrs import UNKNOWN, cdr, month_rows, write_jsonl
from tests.paths import DIRECT, REFERENCE_EXAMPLES, REFERENCE_MIN
from tests.usage_rows import mixed_events, usage_batch, usage_row

SUBSCRIPTION = "projects/test-project/subscriptions/usage"
COMPARED = ["source", "record_id", "account_id", "service_cycle", "zone", "band", "tier", "charged_units",
            "free_units", "charge_micros"]


@dataclasses.dataclass(frozen=True)
class _Message:
    ack_id: str
    message_id: str
    data: bytes
    attributes: dict


def _json(number: int, record: dict) -> _Message:
    return _Message(f"ack-{number}", str(number), json.dumps(record).encode(), {"content-type": "application/json"})


class _Feed:
    """Serves one group of messages a pull, the next only once the last is acknowledged (each group is
    then one micro-batch); sets ``stop`` when every group is acknowledged."""

    def __init__(self, groups: list[list[_Message]], stop: threading.Event):
        self._groups = [g for g in groups if g]
        self._stop = stop
        self._waiting: set[str] = set()
        self.acked: list[str] = []

    def pull(self, max_messages: int, timeout_s: float = 1.0) -> list:
        if self._waiting:
            time.sleep(0.001)
            return []
        if not self._groups:
            self._stop.set()
            return []
        group = self._groups.pop(0)
        self._waiting = {m.ack_id for m in group}
        return group

    def ack(self, ack_ids: list[str]) -> int:
        self.acked += ack_ids
        self._waiting -= set(ack_ids)
        return 0


class _FirstAckFails(_Feed):
    """A feed whose first acknowledgement fails (Pub/Sub timed out): those messages come again next."""

    def __init__(self, groups: list[list[_Message]], stop: threading.Event):
        super().__init__(groups, stop)
        self._served: list[_Message] = []
        self.failed = False

    def pull(self, max_messages: int, timeout_s: float = 1.0) -> list:
        group = super().pull(max_messages, timeout_s)
        self._served = group or self._served
        return group

    def ack(self, ack_ids: list[str]) -> int:
        if self.failed:
            return super().ack(ack_ids)
        self.failed = True
        self._waiting.clear()
        self._groups.insert(0, self._served)   # redelivered, as Pub/Sub does once the deadline passes
        return len(ack_ids)


def _stream(out: Path, groups: list[list[_Message]], reference: Path = REFERENCE_MIN, feed_class=None) -> dict:
    stop = threading.Event()
    feed = (feed_class or _Feed)(groups, stop)
    config = StreamConfig(SUBSCRIPTION, str(reference), str(out), commit_interval_s=0.05)
    totals = StreamJob(config, puller=feed, log=lambda text: None).run(stop)
    assert sorted(feed.acked) == sorted(m.ack_id for g in groups for m in g)   # every message acknowledged
    return totals


def _table(out: Path, name: str) -> pl.DataFrame:
    return pl.from_arrow(IcebergStore.open(str(out), create=False).read(name))


def _rated(out: Path) -> pl.DataFrame:
    return _table(out, "rated").select(COMPARED).sort(["source", "record_id"])


def _batch_store(tmp_path: Path, rows: list[dict], name: str = "batch", reference: Path = REFERENCE_MIN) -> Path:
    write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / f"{name}-out"
    assert main(["batch", "--input", str(tmp_path / f"{name}.jsonl"), "--reference", str(reference),
                 "--output", str(out), "--shards", "2", *DIRECT]) == 0
    return out


def _call(record_id: str, start: str, seconds: int, msisdn="491510000002", other="015112345678") -> dict:
    return {"record_id": record_id, "source": "sw1", "service": "VOICE", "served_msisdn": msisdn,
            "other_party": other, "start_time": start, "duration_s": seconds}


def test_an_allowance_taken_by_a_later_call_moves_to_the_earlier_one_when_it_arrives(tmp_path):
    # The 10:00 call arrives first and takes the 100 s bundle (docs/tariffs.md E17); the 09:00 call next.
    later, earlier = _call("b-later", "2026-01-05T10:00:00+01:00", 70), _call("a-earlier", "2026-01-05T09:00:00+01:00", 47)
    out = tmp_path / "out"
    totals = _stream(out, [[_json(1, later)], [_json(2, earlier)]], REFERENCE_EXAMPLES)
    rated = _table(out, "rated").sort("record_id")
    assert rated["record_id"].to_list() == ["a-earlier", "b-later"]      # one row a record: the correction replaced it
    engine = RatingEngine.from_reference(load_reference(str(REFERENCE_EXAMPLES)))
    expected, _ = engine.rate(usage_batch([usage_row(i, **{k: v for k, v in r.items() if k != "source"})
                                           for i, r in enumerate([earlier, later])]))
    columns = ["record_id", "charge_micros", "free_units", "charged_units"]
    assert rated.select(columns).equals(pl.from_arrow(expected).sort("record_id").select(columns))
    assert rated.filter(pl.col("record_id") == "b-later")["charge_micros"][0] == 36_000
    assert rated.filter(pl.col("record_id") == "b-later")["revision"][0] == 1
    assert totals["corrections"] == 1 and totals["rated"] == 2 and totals["commits"] == 2 and totals["balanced"]


def test_out_of_order_arrival_without_a_changed_rating_corrects_nothing(tmp_path):
    out = tmp_path / "out"
    totals = _stream(out, [[_json(1, _call("n2", "2026-01-05T11:00:00+01:00", 61, other="030123456"))],
                           [_json(2, _call("n1", "2026-01-05T10:00:00+01:00", 61, other="030123456"))]],
                     REFERENCE_EXAMPLES)
    rated = _table(out, "rated")
    assert rated["revision"].to_list() == [0, 0] and sorted(rated["charge_micros"].to_list()) == [290_000, 290_000]
    assert totals["corrections"] == 0


def _record(row: dict) -> dict:
    """A usage row (tests.usage_rows) as the JSON record a message carries."""
    record = {k: row[k] for k in ("record_id", "source", "service", "served_msisdn", "other_party", "duration_s",
                                  "bytes_down", "message_count")}
    start = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=row["start_time"])
    return {**record, "start_time": start.isoformat().replace("+00:00", "Z")}


@pytest.mark.parametrize("seed", [5, 11])
def test_shuffled_usage_over_restarts_and_redeliveries_gives_the_batch_answer(tmp_path, seed):
    rows = mixed_events()[:160]
    messages = [_json(i, _record(r)) for i, r in enumerate(rows)]
    rnd = random.Random(seed)
    rnd.shuffle(messages)
    out = tmp_path / "out"
    groups = [messages[k:k + 20] for k in range(0, len(messages), 20)]
    first = _stream(out, groups[:4], REFERENCE_EXAMPLES)
    # Restarted: the last group of the first run comes again (committed, its acknowledgement lost).
    second = _stream(out, [groups[3]] + groups[4:], REFERENCE_EXAMPLES)
    assert second["redelivered"] == 20 and second["records_in"] == len(rows) and second["balanced"]
    assert first["commits"] == 4 and second["commits"] == 4 + 1 + len(groups[4:])
    assert second["corrections"] > 0          # shuffled: some calls arrived before earlier ones of their cycle
    engine = RatingEngine.from_reference(load_reference(str(REFERENCE_EXAMPLES)))
    expected, _ = engine.rate(usage_batch(rows))
    columns = ["record_id", "charge_micros", "free_units", "charged_units", "tier"]
    got = _table(out, "rated").sort("record_id").select(columns)
    assert got.equals(pl.from_arrow(expected).sort("record_id").select(columns))


def _month_messages(rows: list[dict], offset: int = 0) -> list[_Message]:
    return [_json(offset + i, r) for i, r in enumerate(rows)]


def test_stream_then_batch_then_stream_equals_one_batch_and_close_bills_it_alike(tmp_path):
    """A stream run, a batch run of other files on the same store, a second stream run (with resends
    of records the batch rated and a record of an unknown subscriber): the store equals one batch over
    every record, and close-cycle --reference bills the stream-fed cycles as that batch billed them."""
    rows = month_rows()
    rnd = random.Random(3)
    rnd.shuffle(rows)
    third = len(rows) // 3
    first, middle, last = rows[:third], rows[third:2 * third], rows[2 * third:]
    resent = middle[:5]
    unknown = cdr(990, UNKNOWN, "2026-01-20T08:00:00Z", duration_s=30)
    out = tmp_path / "out"
    _stream(out, [_month_messages(first[:10]), _month_messages(first[10:], 100)])
    write_jsonl(tmp_path / "middle.jsonl", middle)
    assert main(["batch", "--input", str(tmp_path / "middle.jsonl"), "--reference", str(REFERENCE_MIN),
                 "--output", str(out), "--shards", "2", *DIRECT]) == 0
    totals = _stream(out, [_month_messages(last + resent + [unknown], 1000)])
    assert totals["duplicates"] == len(resent) and totals["records_balanced"]   # cumulative over the stream runs

    once = _batch_store(tmp_path, rows + [unknown])
    assert _rated(out).equals(_rated(once))
    duplicates = _table(out, "duplicates")
    assert sorted(duplicates["original_input_file"].to_list()) == [str(tmp_path / "middle.jsonl")] * len(resent)
    assert duplicates["original_run_id"].null_count() == 0
    rejects = ["source", "record_id", "reason"]
    assert _table(out, "rejected").select(rejects).sort(rejects).equals(_table(once, "rejected").select(rejects).sort(rejects))
    assert _table(out, "rejected").height == 2      # month_rows' record of an unknown subscriber, and this one

    assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01"]) == 1   # the stream fed it: --reference
    assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01", "--reference", str(REFERENCE_MIN)]) == 0
    closed = IcebergStore.open(str(out), create=False).runs()[-1]
    assert closed.kind == "close" and all(c["money_balanced"] for c in closed.control_totals["billed"].values())
    for table, keys in (("charges", ["account_id", "billing_cycle", "service_cycle", "line_type", "service", "zone",
                                     "band", "item"]), ("invoices", ["account_id", "billing_cycle"])):
        billed = sorted(closed.control_totals["billed"])
        mine = _table(out, table).filter(pl.col("billing_cycle").is_in(billed)).sort(keys)
        theirs = _table(once, table).filter(pl.col("billing_cycle").is_in(billed)).sort(keys)
        assert mine.height > 0 and mine.equals(theirs), table


def test_usage_of_a_closed_cycle_is_rejected_with_its_raw_record_not_lost(tmp_path):
    rows = [r for r in month_rows() if r["served_msisdn"] != UNKNOWN]
    january = [r for r in rows if r["start_time"] < "2026-01-20"]
    out = tmp_path / "out"
    _stream(out, [_month_messages(january)])
    assert main(["close-cycle", "--output", str(out), "--cycle", "2026-01", "--reference", str(REFERENCE_MIN)]) == 0
    late = cdr(991, rows[0]["served_msisdn"], "2026-01-21T08:00:00Z", duration_s=30)
    totals = _stream(out, [[_json(5000, late)]])
    rejected = _table(out, "rejected")
    assert rejected["reason"].to_list() == ["CYCLE_CLOSED"] and rejected["record_id"].to_list() == ["000991"]
    assert json.loads(rejected["raw"][0])["record_id"] == "000991"
    assert totals["records_balanced"] and totals["rejected"] == {"CYCLE_CLOSED": 1}


def test_a_message_without_an_id_is_labelled_alike_in_every_process():
    # input_file of a message's rows names the message; without a message id it comes from the body.
    # Python's hash() is salted per process: two workers or two runs must still give the same label.
    import os
    import subprocess
    import sys

    body = b'{"record_id": "r1", "source": "sw1", "service": "VOICE", "start_time": "not a time"}'
    script = (
        "import json, types\n"
        "from pipelines.streaming import decode_messages\n"
        f"message = types.SimpleNamespace(message_id='', data={body!r}, attributes={{'content-type': 'application/json'}})\n"
        "_, rejected, _ = decode_messages([message])\n"
        "print(json.dumps(sorted(set(rejected.column('input_file').to_pylist()))))\n")
    labels = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True)
        labels.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert labels[0] == labels[1] == [f"pubsub:{hashlib.blake2b(body, digest_size=6).hexdigest()}"]


def test_every_message_form_decodes_as_the_files_do():
    record = _call("r1", "2026-01-05T10:00:00Z", 30)
    usage, rejected, records = decode_messages([_json(1, record), _Message("a2", "2", b"{not json", {"content-type":
                                                                                                      "application/json"}),
                                                _Message("a3", "3", b"x", {})])
    assert records == 3 and usage.num_rows == 1 and usage.column("input_file").to_pylist() == ["pubsub:1"]
    assert sorted(rejected.column("reason").to_pylist()) == ["MALFORMED_RECORD", "MALFORMED_RECORD"]


def test_a_project_id_pubsub_refuses_is_named_before_the_job_starts():
    with pytest.raises(ValueError, match="project id 'strm' is not one Pub/Sub accepts"):
        StreamConfig("projects/strm/subscriptions/s", str(REFERENCE_MIN), "out")
    with pytest.raises(ValueError, match="--rated-topic"):
        StreamConfig(SUBSCRIPTION, str(REFERENCE_MIN), "out", rated_topic="projects/x/topics/t")


def test_json_messages_decoded_together_give_what_each_alone_gives():
    """decode_messages joins one-record JSON messages into one decoder pass: rows and rejects (labels,
    positions, reasons, raw records) must be those of decoding and validating each message alone."""
    import pyarrow as pa

    from cdr_schemas.messages import decode_message
    from cdr_schemas.validate import validate_usage

    good = _call("r1", "2026-01-05T10:00:00Z", 30)
    payloads = [json.dumps(good).encode(), b"\xef\xbb\xbf" + json.dumps(dict(good, record_id="r2")).encode(),
                json.dumps(dict(good, record_id="r3"), indent=1).encode(),      # a record over several lines
                b"{not json", json.dumps(dict(good, record_id="r4", duration_s=-5)).encode(),   # invalid field
                json.dumps(dict(good, record_id="r5", start_time=None)).encode(), b"[1, 2]", b"   ", b"",
                json.dumps(dict(good, record_id="r6")).encode()]
    messages = [_Message(f"a{i}", str(i), p, {"content-type": "application/json"}) for i, p in enumerate(payloads)]
    usage, rejected, records = decode_messages(messages)
    alone_usage, alone_rejected = [], []
    for m in messages:
        for d in decode_message(m.data, m.attributes, f"pubsub:{m.message_id}"):
            alone_rejected.append(pa.Table.from_batches([d.rejected]))
            if d.usage.num_rows:
                valid, invalid = validate_usage(d.usage)
                alone_usage.append(pa.Table.from_batches([valid]))
                alone_rejected.append(pa.Table.from_batches([invalid]))
    assert records == len(payloads)
    assert usage.equals(pa.concat_tables(alone_usage).combine_chunks())
    order = [("input_file", "ascending")]
    assert rejected.sort_by(order).equals(pa.concat_tables(alone_rejected).sort_by(order))
    assert usage.column("record_id").to_pylist() == ["r1", "r2", "r3", "r6"]


def test_a_batch_run_committed_while_the_stream_rates_makes_it_read_the_store_again(s3_bucket, tmp_path):
    """A store on S3 (no lock): a batch run commits after the stream read the store and before its
    next commit. That commit must fail and the stream rate the same messages again from the store as
    it now is: resends of the batch's records are duplicates, not charged twice."""
    rows = month_rows()
    random.Random(5).shuffle(rows)
    third = len(rows) // 3
    first, middle, last = rows[:third], rows[third:2 * third], rows[2 * third:]
    write_jsonl(tmp_path / "middle.jsonl", middle)
    remote, catalog = f"s3://{s3_bucket}/store", f"sqlite:///{tmp_path}/catalog.db"

    class _CutIn(_Feed):
        def pull(self, max_messages, timeout_s=1.0):
            if len(self._groups) == 1 and not self._waiting:   # before the second group: another writer
                assert main(["batch", "--input", str(tmp_path / "middle.jsonl"), "--reference", str(REFERENCE_MIN),
                             "--output", remote, "--catalog-uri", catalog, "--shards", "2", *DIRECT]) == 0
            return super().pull(max_messages, timeout_s)

    stop = threading.Event()
    groups = [_month_messages(first), _month_messages(last + middle[:5], 1000)]
    feed = _CutIn(groups, stop)
    config = StreamConfig(SUBSCRIPTION, str(REFERENCE_MIN), remote, catalog_uri=catalog, commit_interval_s=0.05)
    said = []
    totals = StreamJob(config, puller=feed, log=said.append).run(stop)
    assert totals["duplicates"] == 5 and totals["records_balanced"]
    store = IcebergStore.open(remote, catalog, create=False)
    assert [run.kind for run in store.runs()] == ["create", "stream", "batch", "stream"]
    once = _batch_store(tmp_path, rows)
    assert pl.from_arrow(store.read("rated")).select(COMPARED).sort(["source", "record_id"]).equals(_rated(once))


def test_a_failed_acknowledgement_stops_nothing_and_counts_nothing_twice(tmp_path):
    """Pub/Sub failing an acknowledgement after the commit: the job goes on, the messages come back
    and are recognised as committed (redelivered), and the store is as if the ack had worked."""
    rows = mixed_events()[:60]
    groups = [[_json(i, _record(r)) for i, r in enumerate(rows)][k:k + 20] for k in range(0, 60, 20)]
    totals = _stream(tmp_path / "failed-ack", groups, REFERENCE_EXAMPLES, feed_class=_FirstAckFails)
    assert totals["redelivered"] == 20 and totals["records_in"] == 60 and totals["balanced"]
    _stream(tmp_path / "acked", groups, REFERENCE_EXAMPLES)
    columns = ["record_id", "charge_micros", "free_units", "charged_units", "revision"]
    assert _table(tmp_path / "failed-ack", "rated").sort("record_id").select(columns).equals(
        _table(tmp_path / "acked", "rated").sort("record_id").select(columns))


def test_the_puller_reports_acknowledgements_pub_sub_failed_instead_of_raising():
    from google.api_core import exceptions as gexc

    from sinks.pubsub_pull import Puller

    class TimingOut:
        def acknowledge(self, request):
            raise gexc.DeadlineExceeded("the emulator is busy")

        def modify_ack_deadline(self, request):
            pass

    puller = Puller(SUBSCRIPTION, client=TimingOut())
    try:
        assert puller.ack([f"ack-{i}" for i in range(1500)]) == 1500   # two requests, both failed
    finally:
        puller.close()
