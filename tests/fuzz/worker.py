"""The process that runs fuzz cases, one request per line on stdin, one answer per line on stdout.

    python -m tests.fuzz.worker OPERATOR_DIR WORK_DIR

It loads the operator's reference data and rates its CDR files once (the baseline), then for each
request ``{"kind": ..., "seed": ..., "records": null, "keep_dir": null}`` builds the case, answers
``{"event": "start", "description": ..., "records": ...}`` at once (so a case that then hangs or
eats memory is still named) and ``{"event": "done", "checks": {...}, ...}`` when it is checked.
The parent (``tests.fuzz.runner``) enforces the time and memory limits by killing this process,
which is why cases run here and not in the parent.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import pyarrow as pa

from cdr_schemas.decoders import InputFileError, decode_file
from cdr_schemas.decoders import avro as avro_decoder
from cdr_schemas.messages import decode_message
from rating.engine import RatingEngine
from tests.fuzz.cases import Case, Pool
from tests.fuzz.checks import evaluate, refusal_checks
from tests.fuzz.kinds import build_case
from tests.fuzz.library import Decoded, Outcome, rate_and_bill
from tests.usage_rows import usage_batch

REFERENCE_LABEL = "fuzz-reference"   # input_file of the unmutated added records in a reference run


class Session:
    """The operator, its engine and its baseline run, held for every case."""

    def __init__(self, operator_dir: str, work_dir: str):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.engine = RatingEngine.load(str(Path(operator_dir) / "reference"))
        self.engine.warm_up()
        avro_decoder.warm_up()
        self.baseline_files = sorted(str(p) for p in (Path(operator_dir) / "cdrs").iterdir())
        self.baseline = [Decoded.of(decode_file(path)) for path in self.baseline_files]
        self.baseline_outcome = rate_and_bill(self.engine, self.baseline)
        self.pool = Pool(self._rated_templates())

    def _rated_templates(self) -> list[dict]:
        """The baseline's valid usage rows that it rated, start_time as epoch microseconds."""
        rated = self.baseline_outcome.rated
        keys = set(zip(rated.column("source").to_pylist(), rated.column("record_id").to_pylist()))
        rows = []
        for batch in (b for d in self.baseline for b in d.usage):
            start = batch.column("start_time").cast(pa.int64())
            batch = batch.set_column(batch.schema.get_field_index("start_time"), "start_time", start)
            rows.extend(r for r in batch.to_pylist() if (r["source"], r["record_id"]) in keys)
        return rows

    def run(self, request: dict, announce) -> dict:
        case = build_case(request["kind"], request["seed"], self.pool, request.get("records"))
        announce({"event": "start", "description": case.description, "records": case.records,
                  "mutated": case.mutated})
        case_dir = self.work_dir / f"case-{case.seed}"
        case_dir.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            checks, library = self._check(case, case_dir)
        finally:
            elapsed = time.monotonic() - started
            if request.get("keep_dir") and case.file_name:
                Path(request["keep_dir"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(case_dir / case.file_name, Path(request["keep_dir"]) / case.file_name)
            shutil.rmtree(case_dir, ignore_errors=True)
        return {"event": "done", "checks": checks, "library": library, "elapsed_s": round(elapsed, 4),
                "file_name": case.file_name}

    def _check(self, case: Case, case_dir: Path) -> tuple[dict, dict]:
        try:
            if case.file_name is not None:
                path = str(case_dir / case.file_name)
                Path(path).write_bytes(case.file_bytes)
                labels = [path]
                try:
                    added = [Decoded.of(decode_file(path))]
                except InputFileError as error:
                    return refusal_checks(case, error, path), {"refused": str(error)}
            else:
                labels = [f"pubsub://fuzz/{case.seed}/msg-{i:05d}" for i in range(len(case.messages))]
                added = [Decoded.of(decode_message(m.payload, m.attributes, label))
                         for m, label in zip(case.messages, labels)]
            outcome = rate_and_bill(self.engine, self.baseline + added)
            reference = self._reference(case)
            checks = evaluate(case, labels, {label: d.records_in for label, d in zip(labels, added)},
                              set(self.baseline_files), reference, outcome)
            opened = sorted(set(outcome.period.billed) - set(reference.period.billed))
            return checks, {**_totals(outcome), "opened_cycles": opened}
        except Exception as error:  # any other exception is what the no_crash check reports
            return {"no_crash": _crash(error)}, {"crash": _crash(error)}

    def _reference(self, case: Case) -> Outcome:
        """The run without the case's mutations: the baseline plus the unmutated added records."""
        if not case.reference_rows:
            return self.baseline_outcome
        rows = [{**row, "input_file": REFERENCE_LABEL, "input_position": i}
                for i, row in enumerate(case.reference_rows)]
        return rate_and_bill(self.engine, self.baseline + [Decoded.of_usage(usage_batch(rows))])


def _totals(outcome: Outcome) -> dict:
    """What the CLI's control totals must match."""
    return {"records_in": outcome.records_in, "rated": outcome.rated.num_rows,
            "duplicates": outcome.duplicates.num_rows,
            "rejected": dict(sorted(Counter(outcome.rejected.column("reason").to_pylist()).items())),
            "charge_micros": int(sum(outcome.rated.column("charge_micros").to_pylist()))}


def _crash(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    text = str(error)
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''} (at {where})"


def main(argv: list[str]) -> int:
    operator_dir, work_dir = argv
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)   # anything else printed goes to the log, not into the answers

    def send(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    session = Session(operator_dir, work_dir)
    send({"event": "ready", "baseline_records": session.baseline_outcome.records_in,
          "accounts": len(session.engine.compiled.account_ids),
          "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            send(session.run(request, send))
        except Exception:  # a bug of the harness itself, not of the code under test
            send({"event": "done", "harness_error": traceback.format_exc()[-2000:], "checks": {}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
