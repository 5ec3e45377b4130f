"""What the sub-commands of ``usage-rating`` share: exit statuses, how a command is added, the job
flags and the check of Beam flags (kept free of Beam imports: fast --help).
"""

from __future__ import annotations

import argparse
import difflib
import importlib

EXIT_OK = 0          # done (``rate-one``: also for a rejected event, a rejection is an answer)
EXIT_ERROR = 1       # bad configuration or input (one line says what and the fix); nothing was published
EXIT_UNBALANCED = 3  # a rating run whose control totals do not balance (published anyway, for investigation)

# As pipelines.shuffle.SHUFFLE_MODES (not imported here: it imports Beam); tests/test_cli.py checks they agree.
SHUFFLE_CHOICES = ("files", "beam")


def exit_status(balanced: bool) -> int:
    """Exit status of a rating run (batch, rerate, demo) from its control totals."""
    return EXIT_OK if balanced else EXIT_UNBALANCED


def add_command(subparsers, name: str, run, *, beam_flags: bool = False, **parser_kwargs) -> argparse.ArgumentParser:
    """Add sub-command ``name`` to an argparse ``subparsers`` object; returns its parser.

    ``run(args)`` runs it and returns the exit status; with ``beam_flags``, flags the command does not
    know go to Beam: it is called ``run(args, beam_args)``, ``beam_args`` checked and naming the
    DirectRunner unless they name a runner (``check_beam_args``, ``default_runner``).
    """
    parser = subparsers.add_parser(name, **parser_kwargs)
    parser.set_defaults(run=run, beam_flags=beam_flags, command_parser=parser)
    return parser


def add_job_flags(parser) -> None:
    """``--shards``, ``--batch-size``, ``--shuffle`` and ``--closed-through``: how a rating job over
    CDR files runs (``batch``, ``rerate`` and ``python -m pipelines.batch``). Each also answers to
    its underscore spelling, as Beam's own flags do."""
    parser.add_argument("--shards", type=shards_arg, default=None,
                        help="'auto' (default: about 250,000 records a shard, at least 16) or a number; fixes the "
                             "output file names")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=65_536,
                        help="rows per Arrow batch when decoding (default 65536)")
    parser.add_argument("--shuffle", choices=SHUFFLE_CHOICES, default=None,
                        help="files (default on the DirectRunner): spill shard data to Arrow files in the run's "
                             "scratch folder (bounded memory); beam (default on any other runner): the runner's own "
                             "shuffle (Dataflow, Flink, Spark, Dask); files is refused where workers run elsewhere")
    parser.add_argument("--closed-through", "--closed_through", dest="closed_through", default=None,
                        help="YYYY-MM: cycles up to it are invoiced; their late usage goes on the next invoice "
                             "(cycles closed in the store with close-cycle count too)")
    add_catalog_flag(parser)


def add_catalog_flag(parser) -> None:
    """``--catalog-uri``: the store's Iceberg catalog when it is not the embedded ``OUT/catalog.db``."""
    parser.add_argument("--catalog-uri", "--catalog_uri", dest="catalog_uri", default=None,
                        help="the store's Iceberg catalog as a SQLAlchemy URL (sqlite:///PATH/catalog.db, "
                             "postgresql+psycopg2://USER@HOST/DB); default: OUT/catalog.db inside --output. "
                             "Required when --output is on object storage")


def add_batch_flags(parser, *, required: bool = True) -> None:
    """The flags of the batch job: inputs, reference data, output store and the job flags.

    ``required``: whether ``--input``, ``--reference`` and ``--output`` are required by the parser
    (Beam parses every ``PipelineOptions`` class's flags on every run, so ``BatchOptions`` cannot
    require them; ``BatchConfig.from_options`` checks them instead).
    """
    parser.add_argument("--input", required=required, help="glob of CDR files (.avro, .parquet, .jsonl)")
    parser.add_argument("--reference", required=required, help="reference-data directory")
    parser.add_argument("--output", required=required,
                        help="output store: Iceberg tables, created on the first run; each run appends its "
                             "cycles in one commit (one writer at a time)")
    add_job_flags(parser)


def shards_arg(text: str) -> int | None:
    """argparse type of ``--shards``: a number, or 'auto' (None)."""
    from pipelines.options import parse_shards
    try:
        return parse_shards(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_runner(beam_args: list[str]) -> list[str]:
    """Pick the DirectRunner unless a runner is named (Beam's default may try Prism, which needs a
    download); a runner Beam knows only by its module's path (``DaskRunner``) named by that path."""
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return ["--runner=DirectRunner", *beam_args]
    out = []
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner=") and arg.split("=", 1)[1] in RUNNER_OPTION_MODULES:
            arg = "--runner=" + _runner_path(arg.split("=", 1)[1])
        elif i and beam_args[i - 1] == "--runner" and arg in RUNNER_OPTION_MODULES:
            arg = _runner_path(arg)
        out.append(arg)
    return out


def _runner_path(runner: str) -> str:
    return f"{RUNNER_OPTION_MODULES[runner][0]}.{runner}"


def check_beam_args(beam_args: list[str], command: argparse.ArgumentParser) -> None:
    """Refuse, before any pipeline starts, what is neither ``command``'s flag nor a Beam option.

    Beam only logs a warning for a flag it does not know, so a mistyped job flag (``--closed-thru``
    for ``--closed-through``) would run with its default. Beam's options are those of every
    ``PipelineOptions`` subclass Beam itself defines, parsed the way Beam parses them; a bad value
    of a Beam option (``--direct_num_workers=two``) is refused here too. ValueError names each
    unknown flag and the closest known one.
    """
    import_runner_options(beam_args)
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


# Runners whose options Beam declares in a module it does not import until the runner runs: their
# flags (``--dask_client_address``) are valid only once the module is imported.
RUNNER_OPTION_MODULES = {"DaskRunner": ("apache_beam.runners.dask.dask_runner", "dask")}


def import_runner_options(beam_args: list[str]) -> None:
    """Import the options of the runner ``beam_args`` names when Beam declares them with the runner
    (``RUNNER_OPTION_MODULES``); ValueError naming the extra to install when that runner is missing."""
    named = [a.split("=", 1)[1] if "=" in a else beam_args[i + 1] if i + 1 < len(beam_args) else ""
             for i, a in enumerate(beam_args) if a == "--runner" or a.startswith("--runner=")]
    for runner in named:
        module, extra = RUNNER_OPTION_MODULES.get(runner.split(".")[-1], (None, None))
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"--runner {runner} needs {error.name}: pip install 'usage-rating[{extra}]'") from None


def unknown_flags_message(unknown: list[str], command: argparse.ArgumentParser) -> str:
    """What a command that takes no Beam flags says of ``unknown`` arguments: each flag with the
    closest flag of the command."""
    known = [option for action in command._actions for option in action.option_strings if option.startswith("--")]
    problems = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
        problems.append(f"unknown {'flag' if flag.startswith('-') else 'argument'} {flag}"
                        + (f" (did you mean {close[0]}?)" if close else ""))
    return "; ".join(problems)


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
