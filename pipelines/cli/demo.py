"""``usage-rating demo``: generate a default operator month (once) and rate it on the DirectRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.batch import run_batch
from pipelines.cli.args import exit_status
from synth import generate
from synth.config import GeneratorConfig
from pipelines.options import BatchConfig
from pipelines.cli.progress import ProgressLine, StagedRunProgress
from pipelines.cli.summary import print_summary


def _ensure_generated(workdir: Path, records: int, subscribers: int) -> dict:
    manifest_path = workdir / "manifest.json"
    config = GeneratorConfig(out_dir=workdir, records=records, subscribers=subscribers)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config", {}).get("records") == records and \
                manifest.get("config", {}).get("subscribers") == subscribers:
            print(f"reusing the generated operator month in {workdir}")
            return manifest
    with ProgressLine("generating") as progress:
        manifest = generate(config, progress=progress.update)
    return manifest


def demo_input_glob(workdir: Path) -> str:
    """The CDR files the demo generates in ``workdir`` and rates."""
    return str(workdir / "cdrs" / "*")


def run_demo(workdir: Path, *, records: int, subscribers: int, beam_args: list[str]) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = _ensure_generated(workdir, records, subscribers)
    output = workdir / "output"
    if output.exists():   # the demo's own store, of the same month: rate it afresh
        shutil.rmtree(output)
    config = BatchConfig(input_glob=demo_input_glob(workdir), reference_dir=str(workdir / "reference"),
                         output_dir=str(output))
    total = manifest["records_written"]
    print(f"rating {total:,} records on the DirectRunner ...")
    progress = StagedRunProgress(config.output_dir)
    with ProgressLine("rating", poll=lambda: progress.sample().text(total)):
        result = run_batch(config, beam_args)
    print_summary(result, str(output))
    return exit_status(result["balanced"])
