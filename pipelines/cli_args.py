"""Argument helpers shared by the sub-commands' parsers (kept free of Beam imports: fast --help)."""

from __future__ import annotations

import argparse
import difflib


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


def check_beam_args(beam_args: list[str], command: argparse.ArgumentParser) -> None:
    """Refuse, before any pipeline starts, what is neither ``command``'s flag nor a Beam option.

    Beam only logs a warning for a flag it does not know, so a mistyped job flag (``--closed-thru``
    for ``--closed-through``) would run with its default. Beam's options are those of every
    ``PipelineOptions`` subclass Beam itself defines, parsed the way Beam parses them; a bad value
    of a Beam option (``--direct_num_workers=two``) is refused here too. ValueError names each
    unknown flag and the closest known one.
    """
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(beam_args)
    if not unknown:
        return
    flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
    if not flags:
        raise ValueError(f"unexpected argument(s) {' '.join(unknown)}; every value follows its flag "
                         f"(see {command.prog} --help)")
    known = [option for action in (*command._actions, *parser._actions) for option in action.option_strings
             if option.startswith("--")]
    problems = []
    for flag in flags:
        close = difflib.get_close_matches(flag, known, n=1)
        problems.append(f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise ValueError(f"{'; '.join(problems)}: neither a flag of {command.prog} nor a Beam pipeline option; "
                     f"nothing was run (see {command.prog} --help)")


def _beam_parser() -> argparse.ArgumentParser:
    """Beam's own pipeline options in one parser that raises ValueError instead of exiting."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _Parser(_BeamArgumentParser):
        def error(self, message):
            raise ValueError(f"Beam option: {message}")

    # As PipelineOptions.get_all_options builds its parser, but only Beam's own classes: the
    # project's BatchOptions (python -m pipelines.batch) must not make its flags valid everywhere.
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__() if cls.__module__.startswith("apache_beam.")}
    parser = _Parser(allow_abbrev=False)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser
