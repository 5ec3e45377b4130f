"""Rating speed: the pricing kernel (stateless and the ordered allowance/tier scan) beside the whole
Arrow wrapper, the slow twin, an idiomatic Polars version of the stateless rules and a memcpy of
the kernel's input columns, all on the same records in one run.

Generates (or reuses, under ``--workdir``) an operator with the generator (thousands of zone
prefixes, five plans, holidays, DST), decodes and validates its Parquet CDRs into one batch, and
runs the stages of ``rating.rate.rate`` on it: ``enrich`` and ``zone``, then ``pricing_call``, which
lays out exactly the arguments the wrapper hands to the pricing kernel ``rate_events``. Every
kernel row replays those arrays: only the kernel calls are timed.

Rates are records per second of CPU time of this process (all its threads), the least of
``--repeat`` runs after a warm-up run, the runs of all rows interleaved; wall-clock rates are
printed beside them. The machine may
be shared: compare the ratios, measured in the same run, more than the absolute rates.

    python perf/bench_rating.py [--records 2000000] [--workdir DIR] [--repeat 5] [--twin-sample 2000]
                                [--profile] [--json FILE]

``--profile`` adds a second table to show what bounds the stateless kernel: the kernel with parts of
the tariff switched off, a what-if build without reference counting in ``band_at``, cache-resident
runs, and the I/O floor of its columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
from numba import njit  # noqa: E402

from rating.rate import Enrichment, PricingCall, enrich, pricing_call, rate, zone  # noqa: E402
from cdr_schemas.decoders import decode_file  # noqa: E402
from cdr_schemas.validate import validate_usage  # noqa: E402
from synth import GeneratorConfig, generate  # noqa: E402
from rating.compile import CompiledReference, compile_reference  # noqa: E402
from rating.identity import subscriber_keys  # noqa: E402
from rating.kernels import pricing  # noqa: E402
from rating.kernels.pricing import band_at, rate_events  # noqa: E402
from rating.reference import ReferenceDataError, load_reference  # noqa: E402
from rating.tables import MAX_ALLOWANCES_PER_EVENT  # noqa: E402
from rating.twin import rate_rows_twin  # noqa: E402
from perf.polars_rating import polars_tariff, rate_with_polars  # noqa: E402

TARGET_KERNEL = 60e6          # stateless kernel, records/s on one core
TARGET_KERNEL_VS_POLARS = 15  # stateless kernel / Polars
TARGET_SCAN = 50e6            # ordered allowance/tier scan on sorted input, records/s
_CACHE_ROWS = 16_384          # rows per chunk for the cache-resident runs of --profile
_INPUT_COLUMNS = ("service", "raw_units", "start_us", "zone", "version", "tz", "allow_slot", "tier_slot",
                  "out_reason")
_OUTPUT_COLUMNS = ("out_charge", "out_connect", "out_charged", "out_free", "out_band", "out_split", "out_rate",
                   "out_tier", "out_rounding_nanos")


# --- inputs ----------------------------------------------------------------------------------------

def load_operator(workdir: Path, records: int) -> tuple[Path, CompiledReference]:
    """A generated operator with ``records`` Parquet CDRs under ``workdir`` and its compiled reference.

    An operator generated earlier with the same size is reused, unless the current code rejects its
    reference data (it was written by an older generator): then it is generated again.
    """
    root = workdir / f"operator-{records}"
    manifest = root / "manifest.json"
    if manifest.exists():
        config = json.loads(manifest.read_text())["config"]
        if config["records"] == records and config["fmt"] == "parquet":
            try:
                return root, compile_reference(load_reference(str(root / "reference")))
            except (ValueError, ReferenceDataError) as error:
                print(f"regenerating {root}: its reference data is stale ({error})", file=sys.stderr)
    generate(GeneratorConfig(out_dir=root, records=records, fmt="parquet"))
    return root, compile_reference(load_reference(str(root / "reference")))


def load_usage(root: Path) -> pa.RecordBatch:
    """All valid usage rows of the operator's CDR files, decoded and validated, as one batch."""
    batches = []
    for path in sorted((root / "cdrs").glob("*.parquet")):
        for decoded in decode_file(str(path)):
            valid, _ = validate_usage(decoded.usage)
            batches.append(valid)
    return pa.Table.from_batches(batches).combine_chunks().to_batches(max_chunksize=None)[0]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The batch run through ``rate()``'s first stages: enrichment and the kernel call it leads to."""
    enriched: Enrichment
    call: PricingCall

    @property
    def kernel_arguments(self) -> dict:
        """``rate_events``'s arguments by name (copies: the kernel writes some of them in place)."""
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.call.arguments.items()}


def positional(function, arguments: dict) -> list:
    return [arguments[name] for name in inspect.signature(function.py_func).parameters]


@dataclasses.dataclass
class Outputs:
    """Output arrays for ``rate_events`` (allocated once; every call overwrites them)."""
    arrays: dict[str, np.ndarray]

    @classmethod
    def like(cls, n: int) -> "Outputs":
        arrays = {name: np.zeros(n, np.int64) for name in _OUTPUT_COLUMNS}
        arrays["out_reason"] = np.zeros(n, np.int64)
        arrays["out_allow_name"] = np.zeros((n, MAX_ALLOWANCES_PER_EVENT), np.int64)
        arrays["out_allow_used"] = np.zeros((n, MAX_ALLOWANCES_PER_EVENT), np.int64)
        return cls(arrays)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


class Workspace:
    """Arrays every replay of the kernel call shares: the outputs (each call overwrites all of
    them) and the stateless slot column. Replays run one at a time."""

    def __init__(self, call: dict):
        n = len(call["service"])
        self.outputs = Outputs.like(n)
        self.no_slots = np.full(n, -1, np.int64)


class KernelRun:
    """``rate_events`` over the laid-out (sorted) arrays: stateless (slots -1) or the ordered scan."""

    def __init__(self, call: dict, workspace: Workspace, stateless: bool, tables=None, kernel=rate_events):
        self.kernel = kernel
        self.inputs = dict(call)
        if stateless:
            self.inputs["allow_slot"] = self.inputs["tier_slot"] = workspace.no_slots
        if tables is not None:
            self.inputs["T"] = tables
        self.outputs = workspace.outputs
        self.arguments = {**self.inputs, **self.outputs.arrays}
        self.arguments["allow_state"] = call["allow_state"].copy()
        self.arguments["tier_state"] = call["tier_state"].copy()
        self.args = positional(rate_events, self.arguments)

    def reset(self) -> None:
        """Reasons and balances as the wrapper had them before its call (outside the timing)."""
        self.arguments["out_reason"][:] = self.inputs["out_reason"]
        self.arguments["allow_state"][:] = self.inputs["allow_state"]
        self.arguments["tier_state"][:] = self.inputs["tier_state"]

    def __call__(self) -> None:
        self.kernel(*self.args)

    def run_in_chunks(self, rows: int) -> None:
        """The same call over consecutive slices of ``rows`` records (cache-resident working set)."""
        n = len(self.arguments["service"])
        per_row = {k for k, v in self.arguments.items() if isinstance(v, np.ndarray) and v.shape[:1] == (n,)}
        for start in range(0, n, rows):
            part = {k: (v[start:start + rows] if k in per_row else v) for k, v in self.arguments.items()}
            self.kernel(*positional(rate_events, part))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(reasons, charges) of a fresh run."""
        self.reset()
        self()
        return self.arguments["out_reason"].copy(), self.arguments["out_charge"].copy()


class ZoningRun:
    """``rate()``'s zone stage (destination strings, normalise, visited networks, two trie matches)
    followed by the stateless ``rate_events``: the same work as the Polars version."""

    def __init__(self, batch: pa.RecordBatch, compiled: CompiledReference, enriched: Enrichment, kernel: KernelRun,
                 tables=None):
        self.batch = batch
        self.compiled = compiled if tables is None else dataclasses.replace(compiled, tables=tables)
        self.enriched = enriched
        self.kernel = kernel

    def reset(self) -> None:
        self.kernel.reset()

    def __call__(self) -> None:
        zone(self.batch, self.compiled, self.enriched)
        self.kernel()


# --- timing ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    """One thing to time: ``run`` (after ``reset``, untimed) processes ``records`` records."""
    name: str
    run: Callable[[], None]
    records: int
    notes: str = ""
    reset: Callable[[], None] | None = None
    repeat: int | None = None      # fewer timed runs than the others (slow cases)
    cpu_s: float = float("inf")    # least CPU time of this process over the timed runs
    wall_s: float = float("inf")
    rss_mb: float = 0.0            # peak RSS of the process after the case's first run

    @property
    def records_per_s(self) -> float:
        return self.records / self.cpu_s

    @property
    def wall_records_per_s(self) -> float:
        return self.records / self.wall_s


def time_cases(cases: list[Case], repeat: int) -> list[Case]:
    """One warm-up run of every case, then ``repeat`` rounds of timed runs, interleaved case by case
    so that a change in the machine's load hits every case alike. The least time counts."""
    for round_ in range(repeat + 1):
        for case in cases:
            if round_ > min(repeat, case.repeat or repeat):
                continue
            if case.reset is not None:
                case.reset()
            c0, w0 = time.process_time(), time.perf_counter()
            case.run()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            if round_ == 0:
                case.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            else:
                case.cpu_s, case.wall_s = min(case.cpu_s, cpu), min(case.wall_s, wall)
    return cases


def memcpy_run(run: KernelRun) -> tuple[Callable[[], None], int]:
    """Copy the kernel's input columns into preallocated arrays; returns (run, bytes per record)."""
    sources = [run.arguments[name] for name in _INPUT_COLUMNS]
    targets = [np.empty_like(a) for a in sources]

    def copy():
        for source, target in zip(sources, targets):
            np.copyto(target, source)
    return copy, sum(a.itemsize for a in sources)


@njit(nogil=True)
def _io_floor(service, raw_units, start_us, zone, version, tz, allow_slot, tier_slot, reason, out_charge,
              out_connect, out_charged, out_free, out_band, out_split, out_rate, out_tier, out_rounding,
              out_allow_name, out_allow_used):
    """Reads the kernel's input columns and writes all its outputs once per row, with no pricing."""
    for i in range(len(service)):
        for q in range(out_allow_name.shape[1]):
            out_allow_name[i, q] = -1
            out_allow_used[i, q] = 0
        out_charge[i] = service[i] + raw_units[i] + start_us[i] + zone[i] + version[i] + tz[i]
        out_connect[i] = allow_slot[i] + tier_slot[i] + reason[i]
        out_charged[i] = 0
        out_free[i] = 0
        out_band[i] = -1
        out_split[i] = 0
        out_rate[i] = -1
        out_tier[i] = -1
        out_rounding[i] = 0


@njit(nogil=True)
def _band_at_each(start_us, version, zone, tz, reason, T, out_band):
    """The shipped ``band_at`` once per row, alone."""
    for i in range(len(start_us)):
        if reason[i] == 0:
            band, _ = band_at(start_us[i], version[i], T.hol_variant[version[i], zone[i]], tz[i], T.tz_start,
                              T.tz_transitions, T.tz_offsets, T.week_band, T.week_next_min, T.ver_hol_first,
                              T.ver_hol_count, T.holidays_day, T.hol_band, T.hol_next_min)
            out_band[i] = band


def io_floor_run(run: KernelRun, chunk: int | None = None) -> Callable[[], None]:
    a = run.arguments
    columns = [a[name] for name in _INPUT_COLUMNS] + [a[name] for name in _OUTPUT_COLUMNS] + [
        a["out_allow_name"], a["out_allow_used"]]
    n = len(a["service"])
    step = chunk or n

    def floor():
        for start in range(0, n, step):
            _io_floor(*[c[start:start + step] for c in columns])
    return floor


# --- Polars (the query itself: perf/polars_rating.py) -----------------------------------------------

def polars_usage(batch: pa.RecordBatch, order: np.ndarray, version: np.ndarray, enriched: np.ndarray) -> pl.DataFrame:
    """The usage columns the Polars version reads, in the kernel's (sorted) order, with the plan
    version from the wrapper's enrichment (null where enrichment rejected the record)."""
    names = ["service", "other_party", "start_time", "duration_s", "bytes_up", "bytes_down", "message_count",
             "visited_network"]
    table = pa.Table.from_batches([batch.select(names).take(pa.array(order))])
    return pl.from_arrow(table).with_row_index("row").with_columns(
        version=pl.when(pl.Series(enriched)).then(pl.Series(version, dtype=pl.Int64)))


# --- the benchmark ---------------------------------------------------------------------------------

def prepare(records: int, workdir: Path) -> tuple[pa.RecordBatch, CompiledReference, Prepared]:
    root, compiled = load_operator(workdir, records)
    batch = load_usage(root)
    rate(batch.slice(0, 0), compiled)  # compile (or load) every kernel first
    enriched = enrich(batch, compiled)
    return batch, compiled, Prepared(enriched, pricing_call(batch, compiled, enriched, zone(batch, compiled, enriched)))


def with_subscribers(batch: pa.RecordBatch, every: int) -> pa.RecordBatch:
    """``batch`` with every ``every``-th record naming its MSISDN by subscriber + subscriber_kind
    (served_msisdn null): the path other identity kinds take, on subscribers that exist."""
    named = np.arange(batch.num_rows) % every == 0
    served = batch.column("served_msisdn")
    mask = pa.array(named)
    columns = {"served_msisdn": pc.if_else(mask, pa.scalar(None, pa.string()), served),
               "subscriber": pc.if_else(mask, served, pa.scalar(None, pa.string())),
               "subscriber_kind": pc.if_else(mask, pa.scalar("msisdn"), pa.scalar(None, pa.string()))}
    return pa.RecordBatch.from_arrays([columns.get(f.name, batch.column(f.name)) for f in batch.schema],
                                      schema=batch.schema)


def twin_rows(batch: pa.RecordBatch, sample: int, seed: int = 7) -> list[dict]:
    rows = np.sort(np.random.default_rng(seed).choice(batch.num_rows, min(sample, batch.num_rows), replace=False))
    taken = batch.take(pa.array(rows))
    index = taken.schema.get_field_index("start_time")
    return taken.set_column(index, "start_time", taken.column(index).cast(pa.int64())).to_pylist()


def compare_with_kernel(result: pl.DataFrame, kernel_reason: np.ndarray, kernel_charge: np.ndarray,
                        enriched: np.ndarray) -> dict:
    result = result.sort("row")
    covered = result["covered"].to_numpy() & enriched
    reason = result["reason"].to_numpy()
    charge = result["charge"].fill_null(-1).to_numpy()
    rated = covered & (reason == 0)
    return {
        "records": int(len(covered)), "covered": int(covered.sum()),
        "reason_mismatches": int((reason[covered] != kernel_reason[covered]).sum()),
        "rated_compared": int(rated.sum()),
        "charge_mismatches": int((charge[rated] != kernel_charge[rated]).sum()),
    }


def run(records: int, workdir: Path, repeat: int, twin_sample: int, profile: bool) -> dict:
    batch, compiled, prepared = prepare(records, workdir)
    n = batch.num_rows
    call = prepared.kernel_arguments
    workspace = Workspace(call)
    stateless = KernelRun(call, workspace, stateless=True)
    scan = KernelRun(call, workspace, stateless=False)
    zoning = ZoningRun(batch, compiled, prepared.enriched, KernelRun(call, workspace, stateless=True))
    copy, copy_bytes = memcpy_run(stateless)
    sample = twin_rows(batch, twin_sample)
    tariff = polars_tariff(compiled)
    order = prepared.call.order
    enriched = prepared.enriched.reason[order] == 0
    usage = polars_usage(batch, order, call["version"], enriched)
    by_subscriber = with_subscribers(batch, every=10)
    cases = time_cases([
        Case("subscriber lookup", lambda: compiled.subscriber_index.rows(subscriber_keys(batch)), n,
             "served_msisdn -> subscriber row: the identity key and one StringIndex lookup"),
        Case("subscriber lookup, 10% by kind", lambda: compiled.subscriber_index.rows(subscriber_keys(by_subscriber)),
             n, "every 10th record names its MSISDN as subscriber + subscriber_kind"),
        Case("enrich stage", lambda: enrich(batch, compiled), n, "subscription, account, plan version, cycle"),
        Case("stateless kernel (1 thread)", stateless, n, "rate_events, slots -1: tiers priced from zero per event",
             stateless.reset),
        Case("ordered allowance/tier scan", scan, n, "rate_events with the wrapper's slots, sorted input", scan.reset),
        Case("stateless + numbers and zones", zoning, n, "zone stage (strings, normalise, 2 trie matches) + kernel",
             zoning.reset),
        Case("whole wrapper rate()", lambda: rate(batch, compiled), n,
             "enrich, zone, sort, slots, kernel, Arrow out", repeat=3),
        Case("slow twin", lambda: rate_rows_twin(sample, compiled.reference), len(sample),
             f"rate_rows_twin, {len(sample):,}-row sample", repeat=2),
        Case("Polars, idiomatic (stateless)", lambda: rate_with_polars(usage, tariff), n),
        Case("memcpy of the kernel inputs", copy, n, f"{len(_INPUT_COLUMNS)} int64 columns, {copy_bytes} B/record"),
    ], repeat)
    check = compare_with_kernel(rate_with_polars(usage, tariff), *stateless.result(), enriched)
    by_name = {c.name: c for c in cases}
    by_name["Polars, idiomatic (stateless)"].notes = (
        f"{pl.thread_pool_size()} threads; prices {check['covered'] / n:.1%} of records")
    services = np.bincount(call["service"], minlength=3) / n
    report = {
        "records": n, "generated_records": records, "repeat": repeat,
        "service_mix": {"voice": round(services[0], 3), "sms": round(services[1], 3), "data": round(services[2], 3)},
        "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
        "kernel_records_per_s": by_name["stateless kernel (1 thread)"].records_per_s,
        "scan_records_per_s": by_name["ordered allowance/tier scan"].records_per_s,
        "twin_records_per_s": by_name["slow twin"].records_per_s,
        "polars_records_per_s": by_name["Polars, idiomatic (stateless)"].records_per_s,
        "memcpy_records_per_s": by_name["memcpy of the kernel inputs"].records_per_s,
        "wrapper_records_per_s": by_name["whole wrapper rate()"].records_per_s,
        "zoning_and_kernel_records_per_s": by_name["stateless + numbers and zones"].records_per_s,
        "subscriber_lookup_records_per_s": by_name["subscriber lookup"].records_per_s,
        "enrich_records_per_s": by_name["enrich stage"].records_per_s,
        "rows": [{"name": c.name, "records": c.records, "records_per_s": c.records_per_s,
                  "wall_records_per_s": c.wall_records_per_s, "cpu_s": c.cpu_s, "wall_s": c.wall_s,
                  "rss_mb": c.rss_mb, "notes": c.notes} for c in cases],
        "polars_check": check,
        "bytes_per_record": {"kernel_inputs": copy_bytes, "kernel_outputs": workspace.outputs.nbytes() // n},
    }
    del cases, by_name, usage, zoning
    if profile:
        report["profile"] = [dataclasses.asdict(p) for p in profile_rows(batch, compiled, prepared, workspace,
                                                                          repeat)]
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


# --- profile ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class ProfileRow:
    name: str
    records_per_s: float            # the shipped kernel (or the row's own code)
    what_if_records_per_s: float | None  # the same with band_at free of reference counting
    same_charges: str               # share of records with the shipped baseline's reason and charge
    what_if_same_charges: str       # the same for the what-if build
    notes: str


def _fixed_offsets(T, at_us: int):
    """Timezone tables with one UTC offset per zone (the one in force at ``at_us``): no search, no DST."""
    zones = len(T.tz_start) - 1
    offsets = np.empty(zones, np.int64)
    for z in range(zones):
        lo, hi = T.tz_start[z], T.tz_start[z + 1]
        k = lo + np.searchsorted(T.tz_transitions[lo:hi], at_us, side="right") - 1
        offsets[z] = T.tz_offsets[k]
    return T._replace(tz_start=np.arange(zones + 1, dtype=np.int64),
                      tz_transitions=np.full(zones, np.iinfo(np.int64).min, np.int64), tz_offsets=offsets)


def _flat_bands(T):
    """One band all week per version (its most common one), never changing, no holidays."""
    week = T.week_band.copy()
    for v in range(len(week)):
        week[v] = np.bincount(week[v].astype(np.int64)).argmax()
    return T._replace(week_band=week, week_next_min=np.full_like(T.week_next_min, T.week_next_min.shape[1]),
                      ver_hol_count=np.zeros_like(T.ver_hol_count))


def _single_zone_trie(T):
    """Every root's children lead to one leaf of zone 0: each number matches after one digit."""
    children = np.full_like(T.trie_children, -1)
    zones = np.full_like(T.trie_zone, -1)
    leaf = len(children) - 1
    children[:leaf, :] = leaf
    zones[leaf] = 0
    return T._replace(trie_children=children, trie_zone=zones)


def _kernel_without_refcounts():
    """The shipped pricing source compiled with ``band_at`` and ``_is_holiday`` free of NRT
    reference counting (Numba's private ``_nrt=False``; called, not inlined): a measurement, not a
    proposal."""
    source = inspect.getsource(pricing).replace("cache=True", "cache=False")
    patched = source
    for name in ("band_at", "_is_holiday"):
        for decorator in ("@njit(nogil=True, cache=False)", '@njit(nogil=True, cache=False, inline="always")'):
            patched = patched.replace(f"{decorator}\ndef {name}(", f"@njit(nogil=True, cache=False, _nrt=False)\ndef {name}(")
    if patched.count("_nrt=False") != 2:
        return None
    module = types.ModuleType("pricing_without_refcounts")
    exec(compile(patched, "<pricing without refcounts>", "exec"), module.__dict__)
    return module.rate_events


def profile_rows(batch: pa.RecordBatch, compiled: CompiledReference, prepared: Prepared, workspace: Workspace,
                 repeat: int) -> list[ProfileRow]:
    """The stateless kernel with parts of the tariff or the code switched off, and its I/O floor."""
    call = prepared.kernel_arguments
    T = call["T"]
    n = len(call["service"])
    what_if = _kernel_without_refcounts()
    kernels = {"shipped": rate_events, "what-if": what_if} if what_if is not None else {"shipped": rate_events}
    variants = [
        ("stateless kernel", T, "the baseline"),
        ("  holidays disabled", T._replace(ver_hol_count=np.zeros_like(T.ver_hol_count)), "ver_hol_count = 0"),
        ("  one band all week", _flat_bands(T), "band never changes, no holidays"),
        ("  fixed UTC offsets", _fixed_offsets(T, int(np.median(call["start_us"]))), "no transition search, no DST"),
    ]
    reference = KernelRun(call, workspace, stateless=True).result()
    cases: dict[tuple[str, str], Case] = {}
    agreement = {}
    for name, tables, notes in variants:
        for label, kernel in kernels.items():
            run = KernelRun(call, workspace, stateless=True, tables=tables, kernel=kernel)
            reason, charge = run.result()
            agreement[(name, label)] = f"{np.mean((reason == reference[0]) & (charge == reference[1])):.2%}"
            cases[(name, label)] = Case(f"{name} [{label}]", run, n, notes, run.reset)
    chunk_notes = "same calls on cache-resident slices"
    for label, kernel in kernels.items():
        run = KernelRun(call, workspace, stateless=True, kernel=kernel)
        cases[(f"  in {_CACHE_ROWS:,}-row chunks", label)] = Case(
            label, functools.partial(run.run_in_chunks, _CACHE_ROWS), n, chunk_notes, run.reset)
    single = KernelRun(call, workspace, stateless=True)
    a = single.arguments
    singles = [
        Case("band_at alone, once per row", lambda: _band_at_each(a["start_us"], a["version"], a["zone"],
                                                                   a["tz"], a["out_reason"], T, a["out_band"]),
             n, "the shipped band_at in a loop", single.reset),
        Case("I/O floor: read inputs, write outputs", io_floor_run(single), n,
             f"{len(_INPUT_COLUMNS) * 8 + workspace.outputs.nbytes() // n} B/record, no pricing", single.reset),
        Case(f"I/O floor in {_CACHE_ROWS:,}-row chunks", io_floor_run(single, _CACHE_ROWS), n,
             "same, cache-resident slices", single.reset),
    ]
    zoning_variants = (("stateless + numbers and zones", None, "zone stage + kernel"),
                       ("  with a single-zone trie", _single_zone_trie(T), "each match stops after one digit"))
    for name, tables, notes in zoning_variants:
        zoning = ZoningRun(batch, compiled, prepared.enriched, KernelRun(call, workspace, stateless=True),
                           tables=tables)
        singles.append(Case(name, zoning, n, notes, zoning.reset))
    time_cases(list(cases.values()) + singles, repeat)
    out = []
    names = [name for name, _ in cases if _ == "shipped"]
    for name in names:
        shipped, other = cases[(name, "shipped")], cases.get((name, "what-if"))
        out.append(ProfileRow(name, shipped.records_per_s, other.records_per_s if other else None,
                              agreement.get((name, "shipped"), "-"), agreement.get((name, "what-if"), "-"),
                              shipped.notes))
    out += [ProfileRow(c.name, c.records_per_s, None, "-", "-", c.notes) for c in singles]
    return out


# --- output ----------------------------------------------------------------------------------------

def _rate(value: float) -> str:
    return f"{value / 1e6:,.2f}M" if value >= 1e5 else f"{value:,.0f}"


def print_table(report: dict) -> None:
    rows = report["rows"]
    kernel = report["kernel_records_per_s"]
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    mix = report["service_mix"]
    print(f"{report['records']:,} records ({report['generated_records']:,} generated; voice {mix['voice']:.0%}, "
          f"sms {mix['sms']:.0%}, data {mix['data']:.0%}), best of "
          f"{report['repeat']}, records per CPU second of this process; load average {load} on {report['cpus']} cores")
    print(f"{'name':34s} {'records/s':>10s} {'x kernel':>9s} {'wall rec/s':>11s} {'RSS MB':>7s}  notes")
    for r in rows:
        print(f"{r['name']:34s} {_rate(r['records_per_s']):>10s} {r['records_per_s'] / kernel:9.3f} "
              f"{_rate(r['wall_records_per_s']):>11s} {r['rss_mb']:7,.0f}  {r['notes']}")
    check = report["polars_check"]
    print(f"Polars vs kernel: {check['covered']:,} of {check['records']:,} records priced by Polars; reasons differ on "
          f"{check['reason_mismatches']:,}; charges compared on {check['rated_compared']:,} rated records, "
          f"differ on {check['charge_mismatches']:,}")
    polars = report["polars_records_per_s"]
    targets = [
        ("stateless kernel >= 60M records/s on one core", kernel, kernel >= TARGET_KERNEL),
        ("stateless kernel >= 15x Polars", kernel / polars, kernel / polars >= TARGET_KERNEL_VS_POLARS),
        ("ordered scan >= 50M records/s (sorted input)", report["scan_records_per_s"],
         report["scan_records_per_s"] >= TARGET_SCAN),
    ]
    for name, value, met in targets:
        shown = f"{value:.2f}x" if "Polars" in name else _rate(value)
        print(f"target: {name:48s} {shown:>10s}  {'met' if met else 'NOT MET'}")
    print(f"bytes per record: kernel inputs {report['bytes_per_record']['kernel_inputs']}, "
          f"kernel outputs {report['bytes_per_record']['kernel_outputs']}; peak RSS {report['peak_rss_mb']:,.0f} MB")
    if "profile" in report:
        base = report["profile"][0]
        print()
        print("stateless kernel profile, interleaved runs: the shipped code, and a what-if build whose band_at and")
        print("_is_holiday skip Numba's reference counting (private _nrt=False: a measurement of that cost, "
              "not a fix);")
        print("'same' = records with the shipped baseline's reason and charge (shipped / what-if)")
        print(f"{'variant':40s} {'shipped':>9s} {'x base':>7s} {'what-if':>9s} {'x base':>7s} {'same':>17s}  notes")
        for p in report["profile"]:
            what_if = p["what_if_records_per_s"]
            shown = (f"{_rate(what_if):>9s} {what_if / base['what_if_records_per_s']:7.2f}"
                     if what_if and base["what_if_records_per_s"] else f"{'':>9s} {'':>7s}")
            same = f"{p['same_charges']} / {p['what_if_same_charges']}" if p["same_charges"] != "-" else ""
            print(f"{p['name']:40s} {_rate(p['records_per_s']):>9s} {p['records_per_s'] / base['records_per_s']:7.2f} "
                  f"{shown} {same:>17s}  {p['notes']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000, help="records to generate")
    parser.add_argument("--workdir", type=Path, help="cache of generated operators (default: a temporary directory)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row; the least CPU time counts")
    parser.add_argument("--twin-sample", type=int, default=2000, help="records rated by the slow twin")
    parser.add_argument("--profile", action="store_true", help="also profile the stateless kernel")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.records < 1000 or args.repeat < 1 or args.twin_sample < 1:
        parser.error("--records must be at least 1000, --repeat and --twin-sample positive")
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.records, workdir, args.repeat, args.twin_sample, args.profile)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
