"""The fuzzing harness (``tests/fuzz/``) on a short, seed-fixed budget, plus the cases it found.

One run (a module fixture) adds mutated files and Pub/Sub messages to a small generated operator's
input and checks every case (see ``tests/fuzz/checks.py``); two more cases go through
``usage-rating batch``. Each test below is one check over all cases, so a failure names the check
and lists its cases as KIND:SEED with the mutation; replay one with

    python perf/fuzz.py --replay KIND:SEED

``perf/fuzz.py --records 1000000`` runs the same harness on a million mutated records.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cdr_schemas.messages import AVRO_DATUM, JSON, decode_message
from tests.fuzz.cases import Case
from tests.fuzz.checks import CHECKS, evaluate
from tests.fuzz.encode import encode_datum, writer_schema
from tests.fuzz.kinds import KINDS, build_case
from tests.fuzz.runner import CLI_DESCRIPTIONS, FuzzConfig, ensure_operator, run_fuzz

SEED = 12
RECORDS = 15_000
CLI_CASES = 2   # the first two of runner.CLI_KINDS: one file accepted, one refused as a whole

# Cases the harness found, kept as a corpus (kind, seed under the current generators): each failed
# on the code it was found on and must hold from now on.
FOUND = (
    ("jsonl_values", 1798679648),         # bytes_up + bytes_down wrapped to -2^63 and was rated (issue 12.1)
    ("jsonl_gzip", 1002),                 # a .jsonl.gz cut at 71% was read as far as it went (12.2)
    ("avro_block_count", 912038535),      # block count 2^31: a numpy MemoryError naming no file (12.3)
    ("avro_block_count", 1514137511),     # block count 2^62: ValueError "array is too big" (12.3)
    ("avro_millis_values", 1946426679),   # a timestamp-millis past 9999 rejected the rest of its block (12.4)
    ("parquet_values", 22),               # a uint64 above int64: ArrowInvalid for the whole file (12.10)
    ("parquet_values", 14),               # a seconds timestamp beyond int64 microseconds refuses the whole
                                          # file (found after 12.10's fix: the same rule, for timestamps)
    ("pubsub_attributes", 1384964914),    # empty and blank JSON messages vanished: 0 records, not 1 reject
    ("pubsub_datum_values", 1632340338),  # 85 one-datum messages held 13 MB of buffers each (1.1 GB)
)


@pytest.fixture(scope="module")
def operator_dir(tmp_path_factory):
    return ensure_operator(tmp_path_factory.mktemp("fuzz-operator") / "operator")


@pytest.fixture(scope="module")
def report(operator_dir):
    return run_fuzz(FuzzConfig(records=RECORDS, seed=SEED, work_dir=operator_dir.parent, replay=FOUND,
                               cli_cases=CLI_CASES, case_timeout_s=20))


def test_the_budget_ran_every_kind(report):
    print(report.format())
    assert not report.harness_errors, report.harness_errors[0]
    assert set(report.cases) == set(KINDS)
    assert sum(report.records.values()) >= RECORDS


@pytest.mark.parametrize("check", CHECKS + tuple(CLI_DESCRIPTIONS))
def test_check_holds_on_every_case(report, check):
    failures = [f for f in report.failures if f.check == check]
    assert not failures, f"{check} failed in {len(failures)} case(s):\n" + "\n".join(
        f"  --replay {f.replay()}\n    mutation: {f.description}\n    {f.message}" for f in failures)
    assert report.held[check] > 0, f"no case exercised {check}"


@pytest.fixture(scope="module")
def session(operator_dir):
    from tests.fuzz.worker import Session

    return Session(str(operator_dir), str(operator_dir.parent / "in-process"))


def test_a_case_is_the_same_bytes_from_its_seed(session):
    for kind in ("avro_block_count", "parquet_values", "pubsub_json_values", "jsonl_gzip"):
        first, second = build_case(kind, 7, session.pool), build_case(kind, 7, session.pool)
        assert (first.description, first.file_bytes, first.messages) == \
            (second.description, second.file_bytes, second.messages), kind
        assert first.description != build_case(kind, 8, session.pool).description


def test_the_blast_radius_checks_see_one_moved_micro(session):
    """The checks are not vacuous: one micro-unit moved on a record or a charge line of an account
    no added record reached is reported, naming it."""
    baseline = session.baseline_outcome
    case = Case(kind="none", seed=0, description="", records=0, mutated=0, file_name="none.jsonl", file_bytes=b"",
                records_in=0)
    files = set(session.baseline_files)
    assert all(v is None for v in evaluate(case, ["none.jsonl"], {"none.jsonl": 0}, files, baseline, baseline).values())

    charge = baseline.rated.column("charge_micros").to_pylist()
    charge[0] += 1
    moved_record = dataclasses.replace(baseline, rated=baseline.rated.set_column(
        baseline.rated.schema.get_field_index("charge_micros"), "charge_micros", pa.array(charge, pa.int64())))
    problems = evaluate(case, ["none.jsonl"], {"none.jsonl": 0}, files, baseline, moved_record)
    assert "charge_micros" in problems["originals_unchanged"]

    amounts = baseline.lines.column("amount_micros").to_pylist()
    amounts[-1] += 1
    account = baseline.lines.column("account_id")[len(amounts) - 1].as_py()
    moved_line = dataclasses.replace(baseline, lines=baseline.lines.set_column(
        baseline.lines.schema.get_field_index("amount_micros"), "amount_micros", pa.array(amounts, pa.int64())))
    problems = evaluate(case, ["none.jsonl"], {"none.jsonl": 0}, files, baseline, moved_line)
    assert account in problems["charges_unchanged"]


def _datum_message(record_id: str) -> tuple[bytes, dict]:
    record = {"record_id": record_id, "source": "MSC-1", "service": "VOICE", "served_msisdn": "491511234567",
              "other_party": "0301234567", "start_time": 1_767_225_600_000_000, "duration_s": 60}
    return encode_datum(record, writer_schema("usage_record_v2")), {"content-type": AVRO_DATUM,
                                                                    "schema": "usage_record_v2"}


@pytest.mark.parametrize("payload", [b"", b" \n\t\r\n"])
def test_an_empty_json_message_is_one_reject_not_nothing(payload):
    """Found by the fuzzer: a JSON message with no content was acknowledged without a trace."""
    decoded = list(decode_message(payload, {"content-type": JSON}, "pubsub:m1"))
    assert sum(d.num_records for d in decoded) == 1
    rejected = pa.Table.from_batches([d.rejected for d in decoded])
    assert rejected.column("reason").to_pylist() == ["MALFORMED_RECORD"]
    assert rejected.column("raw").to_pylist() == [payload]
    assert "empty JSON message" in rejected.column("detail")[0].as_py()


def test_one_datum_messages_do_not_hold_a_file_sized_buffer_each():
    """Found by the fuzzer: each decoded one-record Avro message kept column buffers sized for
    65,536 rows (about 13 MB) alive, so a bundle of 85 such messages held over 1 GB."""
    payload, attributes = _datum_message("warm-up")
    list(decode_message(payload, attributes, "pubsub:warm-up"))
    tracemalloc.start()
    try:
        kept = [list(decode_message(*_datum_message(f"r{i}"), f"pubsub:m{i}")) for i in range(20)]
        held_mb = tracemalloc.get_traced_memory()[0] / 2**20
    finally:
        tracemalloc.stop()
    assert sum(b.usage.num_rows for batches in kept for b in batches) == 20
    assert pc.sum(pa.chunked_array([b.usage.column("duration_s") for bs in kept for b in bs])).as_py() == 1200
    assert held_mb < 10, f"20 one-record messages hold {held_mb:.0f} MB"
