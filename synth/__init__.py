"""Synthetic operator data: reference data, CDR files with injected anomalies, and their manifest.

``generate(GeneratorConfig(out_dir=...))`` is the entry point; docs/generator.md describes the output.
"""

from synth.config import GeneratorConfig
from synth.run import generate

__all__ = ["GeneratorConfig", "generate"]
