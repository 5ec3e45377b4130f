"""The generator's declared usage types: with schema v3 some texts are MMS and some data sessions
API-call records; the generated reference declares both (usage_types.yaml), every plan rates them,
and the batch pipeline rates exactly what the manifest expects per type."""

from __future__ import annotations

import collections
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.batch import run_batch
from pipelines.options import BatchConfig
from rating.reference import load_reference
from synth.config import GeneratorConfig
from synth.run import generate
from tests import store_reads


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("v3")
    manifest = generate(GeneratorConfig(out_dir=root, subscribers=200, records=6000, days=10, fmt="parquet",
                                        files=2, schema_version="v3", chunk_records=3000))
    return root, manifest


def test_the_reference_declares_mms_and_api_calls_and_every_plan_rates_them(generated):
    root, _ = generated
    types = load_reference(root / "reference").usage_types
    assert (types["MMS"].unit, types["API_CALLS"].unit, types["API_CALLS"].unit_name) == ("messages", "count", "calls")
    for path in (root / "reference" / "plans").glob("*.yaml"):
        for version in yaml.safe_load(path.read_text())["versions"]:
            keys = {(r["service"], r["zone"], r["band"]) for r in version["rates"]}
            assert {("mms", "*", "*"), ("api_calls", "*", "*")} <= keys, path.name


def test_v3_records_carry_the_declared_types(generated):
    root, manifest = generated
    rows = pq.read_table(root / manifest["files"][0]["path"],
                         columns=["service", "usage_type", "quantity", "other_party"]).to_pylist()
    kinds = collections.Counter((r["service"], r["usage_type"]) for r in rows)
    assert kinds[("OTHER", "MMS")] > 0 and kinds[("OTHER", "API_CALLS")] > 0
    assert all(r["quantity"] >= 1 for r in rows if r["usage_type"] == "API_CALLS")
    assert all(r["quantity"] is None for r in rows if r["usage_type"] != "API_CALLS")
    assert manifest["expected_rated_by_service"]["mms"] > 0 and manifest["expected_rated_by_service"]["api_calls"] > 0


def test_the_pipeline_rates_what_the_manifest_expects_per_type(generated, tmp_path):
    root, manifest = generated
    totals = run_batch(BatchConfig(input_glob=str(root / "cdrs" / "*.parquet"), reference_dir=str(root / "reference"),
                                   output_dir=str(tmp_path / "out"), shards=2), ["--runner=DirectRunner"])
    assert totals["balanced"] and totals["rated"] == manifest["expected_rated"]
    rated = store_reads.rows(tmp_path / "out", "rated")
    by_type = collections.Counter(r["service"].lower() for r in rated)
    assert dict(by_type) == {k: v for k, v in manifest["expected_rated_by_service"].items() if v}
    charges = store_reads.rows(tmp_path / "out", "charges")
    assert {"MMS", "API_CALLS"} <= {c["service"] for c in charges if c["line_type"] == "USAGE"}


def test_the_default_schema_writes_no_declared_types(tmp_path):
    manifest = generate(GeneratorConfig(out_dir=tmp_path, subscribers=50, records=1000, days=3, fmt="parquet",
                                        files=1, chunk_records=1000))
    assert set(manifest["expected_rated_by_service"]) == {"voice", "sms", "data"}
    assert set(pq.read_table(tmp_path / manifest["files"][0]["path"], columns=["service"]).column("service")
               .to_pylist()) <= {"VOICE", "SMS", "DATA"}
