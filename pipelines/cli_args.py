"""Argument helpers shared by the sub-commands' parsers (kept free of Beam imports: fast --help)."""

from __future__ import annotations

import argparse


def shards_arg(text: str) -> int | None:
    """argparse type of ``--shards``: a number, or 'auto' (None)."""
    from pipelines.options import parse_shards
    try:
        return parse_shards(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_runner(beam_args: list[str]) -> list[str]:
    """Pick the DirectRunner unless a runner is named (Beam's default may try Prism, which needs a download)."""
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return beam_args
    return ["--runner=DirectRunner", *beam_args]
