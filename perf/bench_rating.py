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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
from numba import njit  # noqa: E402

from rating.rate import Enrichment, PricingCall, enrich, pricing_call, rate, zone  # noqa: E402
from cdr_schemas.decoders import decode_file  # noqa: E402
from cdr_schemas.reasons import Reason  # noqa: E402
from cdr_schemas.validate import validate_usage  # noqa: E402
from synth import GeneratorConfig, generate  # noqa: E402
from rating.compile import CompiledReference, compile_reference  # noqa: E402
from rating.kernels import pricing  # noqa: E402
from rating.kernels.pricing import band_at, rate_events  # noqa: E402
from rating.reference import ReferenceDataError, load_reference  # noqa: E402
from rating.reference.model import HOME_ZONE  # noqa: E402
from rating.tables import MAX_ALLOWANCES_PER_EVENT  # noqa: E402
from rating.twin import rate_rows_twin  # noqa: E402

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
def _band_at_each(start_us, version, tz, reason, T, out_band):
    """The shipped ``band_at`` once per row, alone."""
    for i in range(len(start_us)):
        if reason[i] == 0:
            band, _ = band_at(start_us[i], version[i], tz[i], T.tz_start, T.tz_transitions, T.tz_offsets,
                              T.week_band, T.week_next_min, T.ver_hol_first, T.ver_hol_count, T.holidays_day,
                              T.hol_band, T.hol_next_min)
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


# --- Polars ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolarsTariff:
    """The compiled tariff as the lookup tables a data engineer would join against."""
    versions: pl.DataFrame       # version -> plan, numbering, timezone, tables, flags
    prefixes: dict[int, pl.DataFrame]  # prefix length -> (zone_table, prefix, zone)
    week: pl.DataFrame           # (version, minute_of_week) -> band, minutes until it changes
    holiday_dates: pl.DataFrame  # (version, local_date) -> is_holiday
    holiday_minutes: pl.DataFrame  # (version, minute_of_day) -> holiday band (-1 none), minutes to change
    rates: pl.DataFrame          # (version, service, zone, band) -> rate, with steps and levels as columns
    home_networks: list[str]
    timezones: list[str]
    max_units: list[int]
    home_zone: int
    steps: int
    levels: int


def _trie_prefixes(T, roots) -> list[tuple[int, str, int]]:
    out = []
    for root in roots:
        stack = [(int(root), "")]
        while stack:
            node, prefix = stack.pop()
            if prefix and T.trie_zone[node] >= 0:
                out.append((int(root), prefix, int(T.trie_zone[node])))
            for digit in range(10):
                child = T.trie_children[node, digit]
                if child >= 0:
                    stack.append((int(child), prefix + str(digit)))
    return out


def polars_tariff(compiled: CompiledReference) -> PolarsTariff:
    T = compiled.tables
    ref = compiled.reference
    plans = [ref.plans[p] for p in compiled.plan_ids]
    n_versions = len(compiled.version_plan)
    plan_of = compiled.version_plan
    versions = pl.DataFrame({
        "version": np.arange(n_versions, dtype=np.int64),
        "cc": [plans[p].numbering.country_code for p in plan_of],
        "intl": [plans[p].numbering.international_prefix for p in plan_of],
        "trunk": [plans[p].numbering.trunk_prefix for p in plan_of],
        "tz_name": [plans[p].timezone for p in plan_of],
        "zone_table": T.ver_zone_root.astype(np.int64),
        "roam_table": pl.Series(T.ver_roam_root.astype(np.int64)).replace(-1, None),
        "has_holidays": T.ver_hol_count > 0,
        "zero_charged": T.ver_zero_charged == 1,
        "den": T.ver_denominator.astype(np.int64),
    })
    roots = sorted(set(T.ver_zone_root.tolist()) | {r for r in T.ver_roam_root.tolist() if r >= 0})
    table = pl.DataFrame(_trie_prefixes(T, roots), schema=["zone_table", "prefix", "zone"], orient="row")
    table = table.with_columns(pl.col("zone_table").cast(pl.Int64), pl.col("zone").cast(pl.Int64))
    prefixes = {length: part.drop("length").rename({"prefix": f"prefix_{length}", "zone": f"zone_{length}"})
                for (length,), part in table.with_columns(length=pl.col("prefix").str.len_bytes())
                .partition_by("length", as_dict=True).items()}
    minutes_per_week = T.week_band.shape[1]
    week = pl.DataFrame({
        "version": np.repeat(np.arange(n_versions, dtype=np.int64), minutes_per_week),
        "minute_of_week": np.tile(np.arange(minutes_per_week, dtype=np.int64), n_versions),
        "week_band": T.week_band.ravel().astype(np.int64),
        "week_next": T.week_next_min.ravel().astype(np.int64),
    })
    dates = [(v, int(d)) for v in range(n_versions)
             for d in T.holidays_day[T.ver_hol_first[v]:T.ver_hol_first[v] + T.ver_hol_count[v]]]
    holiday_dates = pl.DataFrame(dates, schema=["version", "days"], orient="row").select(
        pl.col("version").cast(pl.Int64), local_date=pl.col("days").cast(pl.Int32).cast(pl.Date),
        is_holiday=pl.lit(True))
    holiday_minutes = pl.DataFrame({
        "version": np.repeat(np.arange(n_versions, dtype=np.int64), 1440),
        "minute_of_day": np.tile(np.arange(1440, dtype=np.int64), n_versions),
        "hol_band": T.hol_band.ravel().astype(np.int64),
        "hol_next": T.hol_next_min.ravel().astype(np.int64),
    })
    v, s, z, b = np.nonzero(T.rate_index >= 0)
    rate = T.rate_index[v, s, z, b].astype(np.int64)

    def optional(values):  # -1 means none in the compiled tables
        return pl.Series(values.astype(np.int64)).replace(-1, None)

    columns = {
        "version": v.astype(np.int64), "service_code": s.astype(np.int64), "zone": z.astype(np.int64),
        "band": b.astype(np.int64), "rate": rate,
        "connect": T.rate_connect_micros[rate], "minimum": optional(T.rate_min_micros[rate]),
        "maximum": optional(T.rate_max_micros[rate]), "q": T.rate_round_q_micros[rate],
        "mode": T.rate_round_mode[rate], "tier_group": optional(T.rate_tier_group[rate]),
        "tier_inc": T.rate_tier_inc[rate],
    }
    steps = int(T.rate_step_count.max(initial=0))
    for j in range(steps):
        has = T.rate_step_count[rate] > j
        row = np.where(has, T.rate_step_first[rate] + j, 0)
        for name, values in (("from", T.step_from), ("price", T.step_price_micros), ("per", T.step_per),
                             ("inc", T.step_inc), ("inc_price", T.step_inc_price_micros)):
            column = values[row].astype(np.int64) if len(values) else np.zeros(len(rate), np.int64)
            if name == "inc_price":
                column = np.where(column >= 0, column, -1)
            columns[f"s{j}_{name}"] = pl.Series(np.where(has, column, -1)).replace(-1, None)
    levels = int(T.rate_level_count.max(initial=0))
    for k in range(levels):
        has = T.rate_level_count[rate] > k
        row = np.where(has, T.rate_level_first[rate] + k, 0)
        for name, values in (("up_to", T.level_up_to), ("price", T.level_price_micros), ("per", T.level_per)):
            columns[f"l{k}_{name}"] = pl.Series(np.where(has, values[row], -1).astype(np.int64)).replace(-1, None)
    return PolarsTariff(
        versions=versions, prefixes=prefixes, week=week, holiday_dates=holiday_dates,
        holiday_minutes=holiday_minutes, rates=pl.DataFrame(columns),
        home_networks=list(ref.operator.home_networks), timezones=sorted(set(versions["tz_name"].to_list())),
        max_units=T.max_units.tolist(), home_zone=compiled.zone_names.index(HOME_ZONE), steps=steps, levels=levels)


def _ceil_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return (a + b - 1) // b


def _add_exact(whole: pl.Expr, frac: pl.Expr, price: pl.Expr, units: pl.Expr, per: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """whole + frac/den += price * units / per, exactly (den is a multiple of every per)."""
    q = units // per
    pr = price * (units - q * per)
    return whole + price * q + pr // per, frac + (pr % per) * (pl.col("den") // per)


def rate_with_polars(usage: pl.DataFrame, tariff: PolarsTariff) -> pl.DataFrame:
    """Stateless rating of usage rows (with their plan ``version``; null = not enriched) in Polars.

    Numbers normalised with string ops, zones by joining each prefix length (longest wins), bands
    from the local time (``dt.convert_time_zone``) and minute-of-week/holiday lookups, the rate by a
    join, and the charge in exact integer micro-units: every step and tier level, increment
    rounding, connect fee, minimum/maximum and the rounding modes. Voice calls that may cross a
    band change (or a UTC offset change) are not priced: ``covered`` is false and ``charge`` null.
    Returns columns ``row`` (of ``usage``; joins do not keep the order), ``reason`` (0 rated, -1 not
    enriched), ``charge`` and ``covered``.
    """
    svc = pl.col("service")
    op = pl.col("other_party")
    intl_len, trunk_len = pl.col("intl").str.len_bytes(), pl.col("trunk").str.len_bytes()
    has_plus = op.str.starts_with("+")
    has_intl = (intl_len > 0) & op.str.starts_with(pl.col("intl"))
    has_trunk = (trunk_len > 0) & op.str.starts_with(pl.col("trunk"))
    roaming = pl.col("visited_network").is_not_null() & ~pl.col("visited_network").is_in(tariff.home_networks)

    lf = (usage.lazy()
          .join(tariff.versions.lazy(), on="version", how="left")
          .with_columns(
              service_code=svc.replace_strict({"VOICE": 0, "SMS": 1, "DATA": 2}, return_dtype=pl.Int64),
              raw_units=pl.when(svc == "VOICE").then(pl.col("duration_s"))
              .when(svc == "SMS").then(pl.col("message_count").cast(pl.Int64))
              .otherwise(pl.col("bytes_up") + pl.col("bytes_down")),
              roaming=roaming,
              rest=pl.when(has_plus).then(op.str.slice(1))
              .when(has_intl).then(op.str.slice(intl_len))
              .when(has_trunk).then(op.str.slice(trunk_len))
              .otherwise(op),
              international=has_plus | has_intl)
          .with_columns(e164=pl.when("international").then("rest").otherwise(pl.col("cc") + pl.col("rest")))
          .with_columns(
              number_ok=pl.col("rest").str.contains("^[0-9]+$") & (pl.col("e164").str.len_bytes() <= 15),
              zone_key=pl.when("roaming").then(
                  pl.when(pl.col("visited_network").str.contains("^[0-9]{1,16}$")).then("visited_network"))
              .when(pl.col("service_code") != 2).then("e164"),
              zone_table=pl.when("roaming").then("roam_table").otherwise("zone_table")))
    for length in sorted(tariff.prefixes, reverse=True):
        lf = (lf.with_columns(pl.col("zone_key").str.slice(0, length).alias(f"prefix_{length}"))
              .join(tariff.prefixes[length].lazy(), on=["zone_table", f"prefix_{length}"], how="left"))
    zone_columns = [pl.col(f"zone_{length}") for length in sorted(tariff.prefixes, reverse=True)]
    home = (pl.col("service_code") == 2) & ~pl.col("roaming")

    def local(instant: pl.Expr) -> pl.Expr:
        return pl.coalesce([pl.when(pl.col("tz_name") == name).then(
            instant.dt.convert_time_zone(name).dt.replace_time_zone(None)) for name in tariff.timezones])

    voice_s = pl.when(pl.col("service_code") == 0).then(pl.col("raw_units")).otherwise(0)
    lf = (lf.with_columns(zone=pl.when(home).then(tariff.home_zone).otherwise(pl.coalesce(zone_columns)),
                          local=local(pl.col("start_time")),
                          local_end=local(pl.col("start_time") + pl.duration(seconds=voice_s)))
          .with_columns(minute_of_day=(pl.col("local").dt.hour().cast(pl.Int64) * 60
                                       + pl.col("local").dt.minute().cast(pl.Int64)),
                        local_date=pl.col("local").dt.date())
          .with_columns(minute_of_week=(pl.col("local").dt.weekday().cast(pl.Int64) - 1) * 1440
                        + pl.col("minute_of_day"))
          .join(tariff.week.lazy(), on=["version", "minute_of_week"], how="left")
          .join(tariff.holiday_dates.lazy(), on=["version", "local_date"], how="left")
          .join(tariff.holiday_minutes.lazy(), on=["version", "minute_of_day"], how="left")
          .with_columns(is_holiday=pl.col("is_holiday").fill_null(False)))
    holiday_band = pl.col("is_holiday") & (pl.col("hol_band") >= 0)
    minutes = (pl.when(holiday_band).then("hol_next")
               .when(pl.col("is_holiday")).then(pl.min_horizontal("week_next", "hol_next"))
               .otherwise("week_next"))
    to_midnight = 1440 - pl.col("minute_of_day")
    minutes = pl.when("has_holidays").then(pl.min_horizontal(minutes, to_midnight)).otherwise(minutes)
    band_end = pl.col("local").dt.truncate("1m") + pl.duration(minutes=minutes)
    same_offset = (pl.col("local_end") - pl.col("local")) == pl.duration(seconds=voice_s)
    max_units = pl.col("service_code").replace_strict(dict(enumerate(tariff.max_units)), return_dtype=pl.Int64)
    lf = (lf.with_columns(band=pl.when(holiday_band).then("hol_band").otherwise("week_band"),
                          covered=(pl.col("service_code") != 0) | (pl.col("raw_units") == 0)
                          | (same_offset & (pl.col("local_end") <= band_end)).fill_null(False))
          .join(tariff.rates.lazy(), on=["version", "service_code", "zone", "band"], how="left")
          .with_columns(reason=pl.when(pl.col("version").is_null()).then(-1)
                        .when((pl.col("service_code") != 2) & ~pl.col("number_ok")).then(int(Reason.INVALID_NUMBER))
                        .when(pl.col("zone").is_null()).then(int(Reason.NO_ZONE))
                        .when(pl.col("raw_units") > max_units).then(int(Reason.OVERFLOW))
                        .when(pl.col("rate").is_null()).then(int(Reason.NO_RATE))
                        .otherwise(0)))

    # Steps: each step prices whole increments from where the previous one stopped to its end.
    raw = pl.col("raw_units")
    stepped = pl.col("tier_group").is_null()
    whole, frac = pl.lit(0, pl.Int64), pl.lit(0, pl.Int64)
    lf = lf.with_columns(u=pl.lit(0, pl.Int64))
    for j in range(tariff.steps):
        following = pl.col(f"s{j + 1}_from") if j + 1 < tariff.steps else pl.lit(None, pl.Int64)
        active = stepped & pl.col(f"s{j}_inc").is_not_null() & (pl.col("u") < raw) & (
            following.is_null() | (pl.col("u") < following))
        seg_end = pl.min_horizontal(raw, following)
        lf = lf.with_columns(**{f"n{j}": pl.when(active).then(_ceil_div(seg_end - pl.col("u"), pl.col(f"s{j}_inc")))
                                .otherwise(0)})
        lf = lf.with_columns(u=pl.col("u") + pl.col(f"n{j}") * pl.col(f"s{j}_inc").fill_null(0))
        n, inc = pl.col(f"n{j}"), pl.col(f"s{j}_inc")
        exact_whole, exact_frac = _add_exact(pl.lit(0, pl.Int64), pl.lit(0, pl.Int64), pl.col(f"s{j}_price"), n * inc,
                                             pl.col(f"s{j}_per"))
        rounded = pl.col(f"s{j}_inc_price").is_not_null()
        whole = whole + pl.when(n > 0).then(pl.when(rounded).then(n * pl.col(f"s{j}_inc_price"))
                                            .otherwise(exact_whole)).otherwise(0)
        frac = frac + pl.when((n > 0) & ~rounded).then(exact_frac).otherwise(0)
    # Graduated tiers, statelessly: the event's paid units counted from zero.
    paid = _ceil_div(raw, pl.col("tier_inc")) * pl.col("tier_inc")
    low = pl.lit(0, pl.Int64)
    for k in range(tariff.levels):
        high = pl.col(f"l{k}_up_to")
        overlap = pl.max_horizontal(pl.min_horizontal(paid, high) - low, 0)
        level_whole, level_frac = _add_exact(pl.lit(0, pl.Int64), pl.lit(0, pl.Int64), pl.col(f"l{k}_price"), overlap,
                                             pl.col(f"l{k}_per"))
        use = ~stepped & high.is_not_null() & (overlap > 0)
        whole = whole + pl.when(use).then(level_whole).otherwise(0)
        frac = frac + pl.when(use).then(level_frac).otherwise(0)
        low = high
    paid_any = pl.when(raw == 0).then("zero_charged").otherwise(True)
    lf = lf.with_columns(whole=whole + pl.when(paid_any).then("connect").otherwise(0), frac=frac)
    lf = lf.with_columns(whole=pl.col("whole") + pl.col("frac") // pl.col("den"), frac=pl.col("frac") % pl.col("den"))
    below = paid_any & pl.col("minimum").is_not_null() & (pl.col("whole") < pl.col("minimum"))
    above = paid_any & pl.col("maximum").is_not_null() & (
        (pl.col("whole") > pl.col("maximum")) | ((pl.col("whole") == pl.col("maximum")) & (pl.col("frac") > 0)))
    lf = lf.with_columns(whole=pl.when(below).then("minimum").when(above).then("maximum").otherwise("whole"),
                         frac=pl.when(below | above).then(0).otherwise("frac"))
    # Round whole + frac/den to a multiple of q micros (modes: up, down, half up, half even).
    q, den = pl.col("q"), pl.col("den")
    rest = pl.col("whole") % q
    base = pl.col("whole") - rest
    num = rest * den + pl.col("frac")
    span = q * den
    up = (pl.when(pl.col("mode") == 0).then(True).when(pl.col("mode") == 1).then(False)
          .when(pl.col("mode") == 2).then(2 * num >= span)
          .otherwise((2 * num > span) | ((2 * num == span) & ((base // q) % 2 == 1))))
    charge = pl.when(num == 0).then("whole").when(up).then(base + q).otherwise(base)
    return lf.select("row", "reason", "covered",
                     charge=pl.when((pl.col("reason") == 0) & pl.col("covered")).then(charge)).collect()


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
    cases = time_cases([
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
        Case("band_at alone, once per row", lambda: _band_at_each(a["start_us"], a["version"], a["tz"],
                                                                   a["out_reason"], T, a["out_band"]),
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
