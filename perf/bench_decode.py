"""Decoding speed: the Avro fast path beside the per-datum path, fastavro, polars, Parquet, JSON lines.

Writes ``--records`` synthetic usage records (shaped like the generator's: ids, E.164 numbers,
nullable roaming and data fields) with the project's writer (``synth.writers``) as Avro
(deflate and null codec, schema v2; deflate v1, read through schema resolution), Parquet and JSON
lines, then times every reader on the same records in this one run and prints records/s (CPU time
of this process, best of ``--repeat``; the machine may be shared, so compare the ratios) and
memory.

The per-datum Avro path and fastavro-to-dicts are timed on the first ``--sample`` records (they
take seconds per 100k); their rates are rates, the "seconds for all" column scales them. The rows
marked zlib time the deflate fast path and the bare inflate with the standard library's zlib, the
decoder's fallback, beside the inflater it ships with (python-isal, ``avro.raw_inflater``).

    python perf/bench_decode.py [--records 1000000] [--sample 100000] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdr_schemas import usage_batch_schema  # noqa: E402
from cdr_schemas.decoders import avro, decode_file  # noqa: E402
from synth.writers import _avro_header, write_usage_file  # noqa: E402

_SOURCES = ("msc1", "msc2", "smsc1", "ggsn1")


def usage_records(n: int, seed: int = 1) -> pa.RecordBatch:
    """``n`` usage records in :func:`usage_batch_schema` (provenance columns left out)."""
    rng = np.random.default_rng(seed)
    service = rng.choice(3, n, p=[0.45, 0.30, 0.25])            # VOICE, SMS, DATA
    source = pa.array(_SOURCES).take(pa.array(np.where(service == 2, 3, np.where(service == 1, 2,
                                                                                rng.integers(0, 2, n)))))
    data, sms = pa.array(service == 2), service == 1
    null_string = pa.scalar(None, pa.string())

    def digits(first: int, spread: int) -> pa.Array:
        return pc.cast(pa.array(first + rng.integers(0, spread, n)), pa.string())

    columns = {
        "record_id": pc.binary_join_element_wise(source, pc.cast(pa.array(np.arange(n)), pa.string()), "-"),
        "source": source,
        "service": pa.array(np.array(["VOICE", "SMS", "DATA"])[service]),
        "served_msisdn": digits(447_700_000_000, 10**6),
        "other_party": pc.if_else(data, null_string, digits(440_200_000_000, 10**9)),
        "start_time": pa.array(1_767_225_600_000_000 + rng.integers(0, 31 * 86_400 * 10**6, n)).cast(
            pa.timestamp("us", tz="UTC")),
        "duration_s": pa.array(np.where(sms, 0, rng.integers(1, 3600, n))),
        "bytes_up": pa.array(np.where(service == 2, rng.integers(0, 10**7, n), 0)),
        "bytes_down": pa.array(np.where(service == 2, rng.integers(0, 10**9, n), 0)),
        "message_count": pa.array(sms.astype(np.int32)),
        "visited_network": pc.if_else(pa.array(rng.random(n) < 0.05), "20801", null_string),
        "cell_id": pc.binary_join_element_wise("23415", digits(1000, 98_000), "-"),
        "imsi": digits(234_150_000_000_000, 10**6),
        "apn": pc.if_else(data, "internet", null_string),
        "termination_cause": pa.array(np.array(["normalRelease", "userBusy", "noAnswer"])[rng.integers(0, 3, n)]),
        "rat_type": pa.array(np.array(["EUTRAN", "NR", "UTRAN"])[rng.integers(0, 3, n)]),
        "partial_sequence": pa.array(np.zeros(n, np.int32)),
    }
    schema = pa.schema([usage_batch_schema().field(name) for name in columns])
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=schema)


def without_integer_defaults(path: Path, out: Path) -> None:
    """A copy of the Avro file whose header schema has no integer defaults: polars' Avro reader
    refuses ``"default": 0`` on a long ("OutOfSpec"); the blocks are the same bytes."""
    with open(path, "rb") as stream:
        schema, codec, sync = avro._read_header(str(path), stream)
        blocks = stream.read()
    for field in schema["fields"]:
        if isinstance(field.get("default"), int):
            del field["default"]
    out.write_bytes(_avro_header(json.dumps(schema).encode(), codec.encode(), sync) + blocks)


# --- readers -------------------------------------------------------------------------------------


def _drain(batches) -> int:
    return sum(b.num_records for b in batches)


def fast_avro(path: Path) -> int:
    return _drain(decode_file(str(path), batch_size=65536))


def fast_avro_zlib_inflate(path: Path) -> int:
    """The fast path with the standard library's zlib inflating the blocks (the decoder's fallback
    when python-isal is absent): the before of the inflater switch, in the same run."""
    shipped = avro._INFLATER
    avro._INFLATER = zlib
    try:
        return fast_avro(path)
    finally:
        avro._INFLATER = shipped


def datum_path_avro(path: Path) -> int:
    with open(path, "rb") as stream:
        return _drain(avro.decode_avro(str(path), stream, 65536, fast=False))


def fastavro_dicts(path: Path) -> int:
    import fastavro

    with open(path, "rb") as stream:
        return sum(1 for _ in fastavro.reader(stream))


def polars_avro(path: Path) -> int:
    import polars

    return polars.read_avro(path).height


def pyarrow_parquet(path: Path) -> int:
    return pq.read_table(path).num_rows


def project_decoder(path: Path) -> int:
    return _drain(decode_file(str(path), batch_size=65536))


def zlib_inflate_only(path: Path) -> int:
    """Only the raw-deflate decompression of every block with zlib: the floor under a zlib reader."""
    return _inflate_only(path, zlib)


def shipped_inflate_only(path: Path) -> int:
    """The same with the decoder's inflater (``avro.raw_inflater()``): the floor under the fast path."""
    return _inflate_only(path, avro.raw_inflater())


def _inflate_only(path: Path, inflater) -> int:
    data = path.read_bytes()
    pos = data.index(data[-16:]) + 16
    records = 0
    while pos < len(data):
        count, pos = _long(data, pos)
        size, pos = _long(data, pos)
        inflater.decompressobj(-15).decompress(data[pos:pos + size])
        records += count
        pos += size + 16
    return records


def _long(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def _inflater_name() -> str:
    inflater = avro.raw_inflater()
    if inflater is zlib:
        return f"zlib (zlib {zlib.ZLIB_RUNTIME_VERSION})"
    from importlib.metadata import version
    return f"{inflater.__name__} (python-isal {version('isal')})"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(read: Callable[[Path], int], path: Path, repeat: int) -> dict:
    """Best (least CPU) of ``repeat`` runs: records, CPU and wall seconds, resident memory after."""
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        records = read(path)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if best is None or cpu < best["cpu_s"]:
            best = {"records": records, "cpu_s": cpu, "wall_s": wall}
    best["records_per_s"] = best["records"] / max(best["cpu_s"], 1e-9)
    best["rss_mb_after"] = round(_rss_mb(), 1)
    return best


def write_inputs(directory: Path, records: int, sample: int, engine: str = "numba") -> dict[str, Path]:
    batch = usage_records(records)
    paths = {
        "avro_deflate_v2": directory / "usage_v2.avro", "avro_null_v2": directory / "usage_v2_null.avro",
        "avro_deflate_v1": directory / "usage_v1.avro", "avro_sample": directory / "sample_v2.avro",
        "parquet": directory / "usage.parquet", "jsonl": directory / "usage.jsonl",
        "avro_polars": directory / "usage_v2_polars.avro",
    }
    write_usage_file(paths["avro_deflate_v2"], [batch], "avro", "v2", engine=engine)
    write_usage_file(paths["avro_null_v2"], [batch], "avro", "v2", avro_codec="null", engine=engine)
    write_usage_file(paths["avro_deflate_v1"], [batch], "avro", "v1", engine=engine)
    write_usage_file(paths["avro_sample"], [batch.slice(0, sample)], "avro", "v2", engine=engine)
    write_usage_file(paths["parquet"], [batch], "parquet", "v2", engine=engine)
    write_usage_file(paths["jsonl"], [batch], "jsonl", "v2", engine=engine)
    without_integer_defaults(paths["avro_deflate_v2"], paths["avro_polars"])
    return paths


# (label, reader, input) in print order; the first is the reference of the ratios.
CASES = [
    ("avro fast path (deflate, v2)", fast_avro, "avro_deflate_v2"),
    ("avro fast path (deflate, v2), zlib inflate", fast_avro_zlib_inflate, "avro_deflate_v2"),
    ("avro fast path (null codec, v2)", fast_avro, "avro_null_v2"),
    ("avro fast path (deflate, v1 read as v2)", fast_avro, "avro_deflate_v1"),
    ("zlib inflate only (deflate, v2)", zlib_inflate_only, "avro_deflate_v2"),
    ("shipped inflate only (deflate, v2)", shipped_inflate_only, "avro_deflate_v2"),
    ("avro per-datum path [sample]", datum_path_avro, "avro_sample"),
    ("fastavro.reader to dicts [sample]", fastavro_dicts, "avro_sample"),
    ("polars.read_avro (deflate, v2)", polars_avro, "avro_polars"),
    ("pyarrow parquet read_table (zstd)", pyarrow_parquet, "parquet"),
    ("project parquet decoder", project_decoder, "parquet"),
    ("project JSON lines decoder", project_decoder, "jsonl"),
]


def run(records: int, sample: int, repeat: int, workdir: Path, writer_engine: str = "numba") -> dict:
    sample = min(sample, records)
    paths = write_inputs(workdir, records, sample, writer_engine)
    fast_avro(paths["avro_sample"])                  # compile / load the kernel before timing
    results = {}
    for label, read, key in CASES:
        results[label] = dict(measure(read, paths[key], repeat), input=paths[key].name,
                              file_mb=round(paths[key].stat().st_size / 2**20, 2))
    reference = results[CASES[0][0]]["records_per_s"]
    for figures in results.values():
        figures["ratio_to_fast_path"] = figures["records_per_s"] / reference
        figures["seconds_for_all"] = records / figures["records_per_s"]
    return {
        "records": records, "sample": sample, "repeat": repeat, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "arrow_pool": pa.default_memory_pool().backend_name, "inflater": _inflater_name(), "results": results,
    }


def print_table(report: dict) -> None:
    print(f"{report['records']:,} records (sample {report['sample']:,}), best of {report['repeat']}, "
          f"CPU time of one process; load average {', '.join(f'{x:.1f}' for x in report['load_average'])} "
          f"on {report['cpu_count']} cores")
    print(f"{'reader':44} {'records/s':>12} {'vs fast':>8} {'s for all':>10} {'wall s':>8} {'MB in':>7} {'RSS MB':>7}")
    for label, f in report["results"].items():
        print(f"{label:44} {f['records_per_s']:12,.0f} {f['ratio_to_fast_path']:8.2f} {f['seconds_for_all']:10.2f} "
              f"{f['wall_s']:8.2f} {f['file_mb']:7.1f} {f['rss_mb_after']:7.0f}")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB; Arrow memory pool {report['arrow_pool']}; deflate blocks "
          f"inflated by {report['inflater']} (rows marked zlib: the standard library's, the decoder's fallback)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000,
                        help="records for the slow readers (per-datum path, fastavro dicts)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader; the least CPU time counts")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--workdir", type=Path, help="where to write the inputs (default: a temporary directory)")
    parser.add_argument("--writer-engine", choices=("numba", "numpy"), default="numba",
                        help="engine of the writer making the inputs (same bytes; numpy skips a compile)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.sample < 1 or args.repeat < 1:
        parser.error("--records, --sample and --repeat must be positive")
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.records, args.sample, args.repeat, workdir, args.writer_engine)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
