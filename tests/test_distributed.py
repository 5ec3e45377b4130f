"""Batch and re-rate on distributed workers with no shared disk: a two-worker dask.distributed
cluster (Beam's DaskRunner) and Beam's external worker pool (the PortableRunner), each worker in
its own mount namespace (tests/distributed_cluster.py), inputs, reference data and store on an
S3 server on loopback (moto). The store each runner leaves must be byte-identical to the
DirectRunner's on the same inputs.

The submitting process and the workers get no object-storage environment: the endpoint, region
and keys are Beam's S3 flags of the job only, so the test fails if they do not reach the workers.
``pytest -k distributed`` selects these tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synth import GeneratorConfig, generate
from tests import distributed_cluster as cluster
from tests.object_store_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, client, create_bucket, list_keys
from tests.paths import DIRECT

CYCLE = "2026-01"
_RUN_PREFIX = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}-")


@pytest.fixture(scope="module")
def hidden(tmp_path_factory) -> Path:
    """The test session's temporary folder: what the workers must not see."""
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def bucket(s3_endpoint, tmp_path_factory) -> str:
    """A bucket holding a generated operator of 20,000 records: ``input/cdrs/*.avro`` and ``input/reference/``."""
    out = tmp_path_factory.mktemp("operator")
    generate(GeneratorConfig(out_dir=out, subscribers=400, records=20_000, files=4, seed=14,
                             duplicate_rate=0.005, malformed_rate=0.005))
    name = "distributed"
    create_bucket(s3_endpoint, name)
    s3 = client(s3_endpoint)
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.parent.name != out.name):
        s3.upload_file(str(path), name, "input/" + str(path.relative_to(out)))
    return name


def _job(s3_endpoint: str, bucket: str, runner: str, catalog: Path, *command: str) -> list[str]:
    store = f"s3://{bucket}/{runner}/store"
    return [*command, "--input", f"s3://{bucket}/input/cdrs/*.avro", "--reference", f"s3://{bucket}/input/reference",
            "--output", store, "--catalog-uri", f"sqlite:///{catalog}",
            f"--s3_endpoint_url={s3_endpoint}", f"--s3_region_name={REGION}",
            f"--s3_access_key_id={ACCESS_KEY_ID}", f"--s3_secret_access_key={SECRET_ACCESS_KEY}"]


def _usage_rating(args: list[str], cwd: Path, expect: int = 0) -> str:
    """Run ``usage-rating`` as its own process, with no AWS_* variable in its environment; its
    output (stdout, or stderr when it is expected to fail)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)
    assert done.returncode == expect, f"usage-rating {' '.join(args[:1])}: exit {done.returncode}:\n" \
                                      f"{done.stdout}\n{done.stderr}"
    return done.stdout if expect == 0 else done.stderr


def _store_digests(s3_endpoint: str, bucket: str, runner: str) -> dict[str, str]:
    """SHA-256 of every data file of the runner's store (run ids taken out of the names; the run
    log is left out: it records when each run started)."""
    s3 = client(s3_endpoint)
    prefix = f"{runner}/store/"
    digests = {}
    for key in list_keys(s3_endpoint, bucket, prefix):
        if "/data/" not in key or "/rating/runs/" in key:
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        digests[_RUN_PREFIX.sub("", key[len(prefix):])] = hashlib.sha256(body).hexdigest()
    return digests


def _batch_then_rerate(s3_endpoint, bucket, runner, workdir: Path, runner_args: list[str]) -> tuple[dict, dict]:
    """Digests of the runner's store after a batch run, and after a re-rate of CYCLE."""
    catalog = workdir / f"{runner}-catalog.db"
    _usage_rating(_job(s3_endpoint, bucket, runner, catalog, "batch") + runner_args, workdir)
    after_batch = _store_digests(s3_endpoint, bucket, runner)
    _usage_rating(_job(s3_endpoint, bucket, runner, catalog, "rerate", "--cycle", CYCLE) + runner_args, workdir)
    return after_batch, _store_digests(s3_endpoint, bucket, runner)


@pytest.fixture(scope="module")
def direct(s3_endpoint, bucket, tmp_path_factory) -> tuple[dict, dict]:
    """The reference outputs: the DirectRunner (one process), same inputs, store on the same server."""
    return _batch_then_rerate(s3_endpoint, bucket, "direct", tmp_path_factory.mktemp("direct"), DIRECT)


def _check_same(direct: tuple[dict, dict], other: tuple[dict, dict]) -> None:
    after_batch, after_rerate = direct
    assert any(k.startswith("rating/rated/data/service_cycle=") for k in after_batch)
    assert any(k.startswith("rating/charges/data/billing_cycle=") for k in after_batch)
    assert any(k.startswith("rating/rejected/data/") for k in after_batch)
    assert not any("scratch" in k for k in after_rerate)   # the shared scratch folder went with the run
    assert after_rerate != after_batch                     # the re-rate committed files of its own
    assert other[0] == after_batch
    assert other[1] == after_rerate


@pytest.mark.slow
def test_distributed_dask_cluster_with_isolated_workers_matches_the_direct_runner(
        s3_endpoint, bucket, direct, hidden, tmp_path_factory):
    pytest.importorskip("distributed")
    print(f"dask workers: {cluster.ISOLATION}")
    workdir = tmp_path_factory.mktemp("dask")
    marker = workdir / "submitter-only"
    marker.write_text("a file of the submitting machine")
    with cluster.dask_cluster(hidden, workdir / "logs") as address:
        dask = ["--runner=DaskRunner", f"--dask_client_address={address}", "--dask_npartitions=2"]
        if cluster.can_isolate():
            assert cluster.dask_workers_see(address, marker) == [False, False]
            # A local --output: each worker writes on its own disk. The run says so and commits nothing.
            local = _job(s3_endpoint, bucket, "local", workdir / "local.db", "batch")
            local[local.index("--output") + 1] = str(workdir / "local-store")
            local.remove("--catalog-uri")
            local.remove(f"sqlite:///{workdir / 'local.db'}")
            failed = _usage_rating(local + dask, workdir, expect=1)
            assert "its workers wrote where this machine cannot read" in failed
            assert "put --output on object storage" in failed
        outputs = _batch_then_rerate(s3_endpoint, bucket, "dask", workdir, dask)
    _check_same(direct, outputs)


@pytest.mark.slow
def test_distributed_portable_runner_with_an_isolated_worker_pool_matches_the_direct_runner(
        s3_endpoint, bucket, direct, hidden, tmp_path_factory):
    print(f"worker pool: {cluster.ISOLATION}")
    workdir = tmp_path_factory.mktemp("portable")
    with cluster.worker_pool(hidden, workdir / "logs") as address:
        outputs = _batch_then_rerate(s3_endpoint, bucket, "portable", workdir,
                                     ["--runner=PortableRunner", "--job_endpoint=embed",
                                      "--environment_type=EXTERNAL", f"--environment_config={address}"])
    _check_same(direct, outputs)


def test_distributed_storage_settings_come_from_flags_then_the_submitters_environment():
    from sinks.object_storage import ObjectStorage

    environ = {"AWS_ENDPOINT_URL": "http://env:9000", "AWS_REGION": "eu-west-1",
               "AWS_ACCESS_KEY_ID": "submitter-own", "AWS_SECRET_ACCESS_KEY": "submitter-secret"}
    from_env = ObjectStorage.of([], environ)
    # The endpoint and region are where the job's data is; the submitter's keys are its own identity.
    assert (from_env.endpoint_url, from_env.region, from_env.access_key_id) == ("http://env:9000", "eu-west-1", None)
    flagged = ObjectStorage.of(["--s3_endpoint_url=http://flag:9000", "--s3_access_key_id=job-key",
                                "--s3_secret_access_key=job-secret"], environ)
    assert (flagged.endpoint_url, flagged.region, flagged.access_key_id) == ("http://flag:9000", "eu-west-1", "job-key")
    assert "job-secret" not in repr(flagged) and "job-key" not in repr(flagged)
    # Added to the job's flags once, without overriding what the user gave.
    args = flagged.with_beam_args(["--runner=DirectRunner", "--s3_endpoint_url=http://flag:9000"])
    assert args.count("--s3_endpoint_url=http://flag:9000") == 1
    assert "--s3_region_name=eu-west-1" in args and "--s3_secret_access_key=job-secret" in args
    assert ObjectStorage.of([], {}).beam_args() == []


def test_distributed_runner_flags_are_known_to_usage_rating():
    from pipelines.cli import build_parser
    from pipelines.cli.args import check_beam_args, default_runner

    args, beam_args = build_parser().parse_known_args(
        ["batch", "--input", "x", "--reference", "r", "--output", "o", "--runner", "DaskRunner",
         "--dask_client_address=tcp://127.0.0.1:8786", "--dask_npartitions=4"])
    check_beam_args(beam_args, args.command_parser)   # the DaskRunner's own flags are accepted
    assert default_runner(beam_args)[:2] == ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner"]
    with pytest.raises(ValueError, match="unknown flag --dask_npartiton"):
        check_beam_args(["--runner=DaskRunner", "--dask_npartiton=4"], args.command_parser)
