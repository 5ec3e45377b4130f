"""Drive fuzz cases through a worker process with time and memory limits, and a few through the CLI.

``run_fuzz(FuzzConfig(...))`` generates the small operator (once per work directory), starts
``tests.fuzz.worker``, sends it the ``replay`` cases, then cases round-robin over the kinds until
``records`` records have been written into mutated inputs, then ``cli_cases`` cases through
``usage-rating batch``, and returns a :class:`Report`: per kind what was tried, per check what
held, and every failure with the kind and seed that replay it. A case that runs past
``case_timeout_s`` or whose worker grows by more than ``memory_limit_mb`` is killed (the worker is
restarted) and fails ``no_hang`` or ``memory_bounded``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.fuzz.checks import CHECKS, DESCRIPTIONS
from tests.fuzz.kinds import KINDS, case_seed

REPO = Path(__file__).resolve().parents[2]
OPERATOR = dict(subscribers=60, records=2000, days=31, files=2, fmt="avro", seed=5, duplicate_rate=0.005,
                malformed_rate=0.005)
# File kinds the CLI cases cycle through: one accepted, one refused as a whole first.
CLI_KINDS = ("jsonl_values", "jsonl_gzip", "avro_values", "avro_block_count", "parquet_values", "avro_truncate",
             "avro_millis_values", "parquet_corrupt", "avro_payload", "jsonl_bytes")
_CLI_SEED_OFFSET = 10**6      # CLI cases take seeds of their own, so they never repeat a library case
_CLI_CHECKS = ("cli_exit", "cli_message", "cli_agrees")
CLI_DESCRIPTIONS = {
    "cli_exit": "usage-rating batch exits 0 (balanced), or 1 for a refused file",
    "cli_message": "its final message is its own line naming the file, never a traceback",
    "cli_agrees": "its control totals equal the library path's",
}


@dataclasses.dataclass(frozen=True)
class FuzzConfig:
    records: int                        # records to write into mutated inputs, over all cases
    seed: int = 1
    work_dir: Path | None = None        # None: a temporary directory
    kinds: tuple[str, ...] = tuple(KINDS)
    case_timeout_s: float = 30.0
    memory_limit_mb: int = 512          # growth of the worker's peak RSS during one case
    cli_cases: int = 0
    replay: tuple[tuple[str, int], ...] = ()   # (kind, seed) cases to run before the budget

    def __post_init__(self):
        unknown = [k for k in self.kinds + tuple(k for k, _ in self.replay) if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown fuzz kind(s) {unknown}; expected some of {', '.join(KINDS)}")
        if self.records < 0 or self.cli_cases < 0:
            raise ValueError("records and cli_cases must be >= 0")


@dataclasses.dataclass
class Failure:
    kind: str
    seed: int
    check: str
    message: str
    description: str

    def replay(self) -> str:
        return f"{self.kind}:{self.seed}"


@dataclasses.dataclass
class Report:
    seed: int
    cases: Counter = dataclasses.field(default_factory=Counter)
    records: Counter = dataclasses.field(default_factory=Counter)
    mutated: Counter = dataclasses.field(default_factory=Counter)
    held: Counter = dataclasses.field(default_factory=Counter)
    failed: Counter = dataclasses.field(default_factory=Counter)
    failures: list[Failure] = dataclasses.field(default_factory=list)
    harness_errors: list[str] = dataclasses.field(default_factory=list)
    opened_cycles: list[tuple[str, int, list[str]]] = dataclasses.field(default_factory=list)
    slowest_case: tuple[float, str] = (0.0, "")      # seconds, KIND:SEED
    largest_growth: tuple[float, str] = (0.0, "")    # MB of peak RSS, KIND:SEED
    elapsed_s: float = 0.0
    operator: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.harness_errors

    def add(self, kind: str, seed: int, answer: dict) -> None:
        self.cases[kind] += 1
        self.records[kind] += answer.get("records", 0)
        self.mutated[kind] += answer.get("mutated", 0)
        if "harness_error" in answer:
            self.harness_errors.append(f"{kind}:{seed}: {answer['harness_error']}")
        for check, problem in answer["checks"].items():
            if problem is None:
                self.held[check] += 1
            else:
                self.failed[check] += 1
                self.failures.append(Failure(kind, seed, check, problem, answer.get("description", "")))
        opened = (answer.get("library") or {}).get("opened_cycles")
        if opened:
            self.opened_cycles.append((kind, seed, opened))
        self.slowest_case = max(self.slowest_case, (answer.get("elapsed_s", 0.0), f"{kind}:{seed}"))
        self.largest_growth = max(self.largest_growth, (answer.get("growth_mb", 0.0), f"{kind}:{seed}"))

    def format(self) -> str:
        total_cases, total_records = sum(self.cases.values()), sum(self.records.values())
        lines = [f"fuzz: {total_records:,} records in {total_cases:,} cases, seed {self.seed}, "
                 f"{self.elapsed_s:,.0f} s; operator: {self.operator.get('accounts', '?')} accounts, "
                 f"{self.operator.get('baseline_records', 0):,} baseline records",
                 "", f"{'kind':<22}{'cases':>8}{'records':>12}{'mutated':>10}{'failed':>8}"]
        failed_by_kind = Counter(f.kind for f in self.failures)
        for kind in KINDS:
            if self.cases[kind]:
                lines.append(f"{kind:<22}{self.cases[kind]:>8,}{self.records[kind]:>12,}{self.mutated[kind]:>10,}"
                             f"{failed_by_kind[kind]:>8,}")
        lines += ["", f"{'check':<22}{'held':>8}{'failed':>8}  what it checks"]
        for check in CHECKS + _CLI_CHECKS:
            if self.held[check] or self.failed[check]:
                what = DESCRIPTIONS.get(check) or CLI_DESCRIPTIONS[check]
                lines.append(f"{check:<22}{self.held[check]:>8,}{self.failed[check]:>8,}  {what}")
        lines.append(f"\nslowest case {self.slowest_case[0]:.2f} s ({self.slowest_case[1]}); largest peak-RSS growth "
                     f"in one case {self.largest_growth[0]:,.0f} MB ({self.largest_growth[1]})")
        if self.opened_cycles:  # by design (bill every cycle with usage), shown because every account pays
            far = sorted({c for _, _, cycles in self.opened_cycles for c in cycles})
            kind, seed, cycles = self.opened_cycles[0]
            lines.append(f"note: in {len(self.opened_cycles)} case(s) a rated added record opened a billing cycle "
                         f"the input had no usage in, billing every account's plan fees for it: {', '.join(far[:8])}"
                         f"{' ...' if len(far) > 8 else ''} (e.g. --replay {kind}:{seed}: {', '.join(cycles)})")
        if self.failures:
            lines += ["", "failures by kind and check (replay one: python perf/fuzz.py --replay KIND:SEED):"]
            groups: dict[tuple, list[Failure]] = defaultdict(list)
            for failure in self.failures:
                groups[(failure.kind, failure.check)].append(failure)
            for (kind, check), group in sorted(groups.items()):
                lines.append(f"  {kind} / {check}: {len(group)} case(s)")
                for failure in group[:2]:
                    lines.append(f"    --replay {failure.replay()}  mutation: {failure.description[:300]}")
                    lines.append(f"      {failure.message[:600]}")
        for error in self.harness_errors[:3]:
            lines += ["", f"HARNESS ERROR {error}"]
        lines.append("\nresult: " + ("every check held" if self.ok else
                                     f"{len(self.failures)} failed check(s) in "
                                     f"{len({(f.kind, f.seed) for f in self.failures})} case(s)"
                                     + (f", {len(self.harness_errors)} harness error(s)" if self.harness_errors
                                        else "")))
        return "\n".join(lines)


def ensure_operator(directory: Path) -> Path:
    """The fuzz operator (``OPERATOR``), generated into ``directory`` unless it is already there."""
    from synth import GeneratorConfig, generate

    manifest = directory / "manifest.json"
    if manifest.exists():
        written = json.loads(manifest.read_text())
        if (written.get("seed"), written.get("records_written")) == (OPERATOR["seed"], OPERATOR["records"]):
            return directory
    generate(GeneratorConfig(out_dir=directory, **OPERATOR))
    return directory


class Worker:
    """A ``tests.fuzz.worker`` process: cases in, answers out, killed at the limits."""

    def __init__(self, operator_dir: Path, work_dir: Path, log_path: Path):
        self._args = [sys.executable, "-m", "tests.fuzz.worker", str(operator_dir), str(work_dir / "cases")]
        self._log_path = log_path
        self.ready: dict = {}
        self._process = None
        self._kill_reason = ""   # why the last _read gave up: timeout, memory, or the exit status
        self._start()

    def _start(self) -> None:
        log = open(self._log_path, "ab")
        self._process = subprocess.Popen(self._args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=_with_repo_path())
        log.close()
        self._buffer = b""
        self.ready = self._read(time.monotonic() + 600, None) or {}
        if self.ready.get("event") != "ready":
            raise RuntimeError(f"the fuzz worker did not start; see {self._log_path}")

    def close(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def run(self, request: dict, timeout_s: float, memory_limit_mb: float) -> dict:
        """The worker's answer to ``request``, with ``growth_mb``; a killed case fails no_hang or
        memory_bounded (and the worker is restarted)."""
        pid = self._process.pid
        _clear_peak(pid)
        base_mb = _rss_mb(pid)
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout_s
        limit_mb = base_mb + memory_limit_mb
        start = self._read(deadline, limit_mb)
        answer = self._read(deadline, limit_mb) if start and start.get("event") == "start" else start
        info = start if start and start.get("event") == "start" else {}
        if answer is None or answer.get("event") != "done":
            reason = self._kill_reason
            self._restart()
            check = "memory_bounded" if reason == "memory" else "no_hang"
            what = (f"the worker grew past {memory_limit_mb} MB over its {base_mb:,.0f} MB and was killed"
                    if reason == "memory" else f"no answer within {timeout_s:g} s (killed)" if reason == "timeout"
                    else f"the worker died ({reason}); see {self._log_path}")
            checks = {check: what} if reason in ("memory", "timeout") else {"no_crash": what}
            return {**info, "checks": checks, "elapsed_s": timeout_s if reason == "timeout" else 0.0}
        growth = max(0.0, _peak_mb(pid) - base_mb)
        answer = {**info, **answer, "growth_mb": growth}
        answer["checks"] = {**answer["checks"], "no_hang": None,
                            "memory_bounded": None if growth <= memory_limit_mb else
                            f"peak RSS grew {growth:,.0f} MB during the case (limit {memory_limit_mb} MB)"}
        return answer

    def _read(self, deadline: float, limit_mb: float | None) -> dict | None:
        """The next answer line; None when the deadline passes, memory runs over or the worker dies."""
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            if self._process.poll() is not None:
                self._kill_reason = f"exit status {self._process.returncode}"
                return None
            if time.monotonic() > deadline:
                self._kill_reason = "timeout"
                return None
            if limit_mb is not None and _rss_mb(self._process.pid) > limit_mb:
                self._kill_reason = "memory"
                return None
            readable, _, _ = select.select([fd], [], [], 0.05)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self._process.wait()
                    self._kill_reason = f"exit status {self._process.returncode}"
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _restart(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        self._start()


def _with_repo_path() -> dict:
    """This environment with the repository first on PYTHONPATH (``tests`` and ``pipelines`` import)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def _status_mb(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS:")


def _peak_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM:")


def _clear_peak(pid: int) -> None:
    """Reset the worker's peak RSS (VmHWM), so it measures the next case alone."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def run_fuzz(config: FuzzConfig, progress=None) -> Report:
    """Run the budget (or the replayed cases) and the CLI cases; see the module docstring."""
    started = time.monotonic()
    temporary = None
    if config.work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="fuzz-")
        work_dir = Path(temporary.name)
    else:
        work_dir = Path(config.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
    report = Report(seed=config.seed)
    try:
        operator_dir = ensure_operator(work_dir / "operator")
        worker = Worker(operator_dir, work_dir, work_dir / "worker.log")
        report.operator = worker.ready
        try:
            for kind, seed in _schedule(config, report):
                answer = worker.run({"kind": kind, "seed": seed}, config.case_timeout_s, config.memory_limit_mb)
                report.add(kind, seed, answer)
                if progress is not None:
                    progress(report, kind, seed, answer)
            for index in range(config.cli_cases):
                kind = CLI_KINDS[index % len(CLI_KINDS)]
                seed = case_seed(config.seed, _CLI_SEED_OFFSET + index)
                answer = run_cli_case(worker, operator_dir, work_dir / f"cli-{index}", kind, seed, config)
                report.add(kind, seed, answer)
                if progress is not None:
                    progress(report, kind, seed, answer)
        finally:
            worker.close()
    finally:
        report.elapsed_s = time.monotonic() - started
        if temporary is not None:
            temporary.cleanup()
    return report


def _schedule(config: FuzzConfig, report: Report):
    """(kind, seed) pairs: the replayed ones, then round-robin over the kinds until the records the
    worker reported written reach the budget."""
    yield from config.replay
    index = 0
    while sum(report.records.values()) < config.records:
        yield config.kinds[index % len(config.kinds)], case_seed(config.seed, index)
        index += 1


def run_cli_case(worker: Worker, operator_dir: Path, case_dir: Path, kind: str, seed: int,
                 config: FuzzConfig) -> dict:
    """One case through ``usage-rating batch`` in a subprocess: the operator's files plus the
    case's, checked against the worker's library run of the same case."""
    inputs = case_dir / "inputs"
    shutil.rmtree(case_dir, ignore_errors=True)
    shutil.copytree(operator_dir / "cdrs", inputs)
    answer = worker.run({"kind": kind, "seed": seed, "keep_dir": str(inputs)}, config.case_timeout_s,
                        config.memory_limit_mb)
    library = answer.get("library")
    if not library or not answer.get("file_name"):
        return answer
    added_path = str(inputs / answer["file_name"])
    command = [sys.executable, "-m", "pipelines.cli", "batch", "--input", str(inputs / "*"),
               "--reference", str(operator_dir / "reference"), "--output", str(case_dir / "out")]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=_with_repo_path())
    except subprocess.TimeoutExpired:
        return {**answer, "checks": {"cli_exit": "usage-rating batch did not finish within 600 s"}}
    answer = {**answer, "checks": {**answer["checks"], **_cli_checks(done, library, added_path, case_dir / "out")}}
    shutil.rmtree(case_dir, ignore_errors=True)
    return answer


def _cli_checks(done: subprocess.CompletedProcess, library: dict, added_path: str, out: Path) -> dict:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    refused = "refused" in library
    checks = {}
    expected_status = 1 if refused else 0
    checks["cli_exit"] = None if done.returncode == expected_status else (
        f"exit status {done.returncode}, expected {expected_status} (library: "
        f"{'refused: ' + library['refused'] if refused else 'accepted'}); last line: {last[:300]}")
    if done.returncode == 0:
        checks["cli_message"] = None if "balanced" in done.stdout else f"no summary on stdout; last line: {last[:300]}"
    elif last.startswith("usage-rating batch: ") and added_path in last:
        checks["cli_message"] = None
    else:
        checks["cli_message"] = f"final message is not the command's own naming {added_path}: {last[:300]}"
    if done.returncode == 0 and out.exists() and not refused and "crash" not in library:
        from tests.store_reads import latest_totals

        totals = latest_totals(out)
        got = {key: totals.get(key) for key in ("records_in", "rated", "duplicates", "rejected", "charge_micros")}
        want = {key: library[key] for key in got}
        checks["cli_agrees"] = None if got == want else f"CLI totals {got} != library {want}"
    return checks
