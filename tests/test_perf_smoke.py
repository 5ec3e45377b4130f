"""Every benchmark in perf/ runs once at a tiny size, so that none of them can rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PERF = Path(__file__).resolve().parent.parent / "perf"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_decode_runs_and_writes_its_figures(tmp_path, capsys):
    bench = _load("bench_decode")
    out = tmp_path / "decode.json"
    report = bench.main(["--records", "3000", "--sample", "500", "--repeat", "1", "--json", str(out),
                          "--writer-engine", "numpy"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    results = report["results"]
    assert {label for label, _, _ in bench.CASES} == set(results)
    for label, figures in results.items():
        expected = 500 if "[sample]" in label else 3000
        assert figures["records"] == expected, label
        assert figures["records_per_s"] > 0
    assert "avro fast path (deflate, v2)" in capsys.readouterr().out
