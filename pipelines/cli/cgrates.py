"""The ``import-cgrates`` and ``rate-one`` commands of ``usage-rating``.

    usage-rating import-cgrates DIR --out REFDIR [--tenant T] [--category C[=TYPE]]...
                                [--rounding cgrates|native] [--currency EUR] [--timezone UTC]
                                [--add-subject SUBJECT]... [--allow-partial]
    usage-rating rate-one --reference REFDIR --subject S --destination D --start ISO8601 --usage 85s
                          [--service TYPE] [--category C] [--json]

``pipelines.cli`` adds the parsers with :func:`add_parsers`; each command's function is the parsed
arguments' ``run`` and returns the exit status. Bad arguments or input raise ``ValueError``, which
the CLI prints as a one-line error with exit status 1.

Exit status of ``import-cgrates``: 0 when everything was imported (or with ``--allow-partial``),
1 when something cannot be expressed — the report is printed and nothing is written. ``rate-one``
exits 0 for a charge and for a rejected event alike: a rejection is an answer.
"""

from __future__ import annotations

import json
import sys

from pipelines.cli.args import EXIT_ERROR, EXIT_OK, add_command



def add_parsers(subparsers) -> None:
    """Add ``import-cgrates`` and ``rate-one`` to an ``ArgumentParser``'s subparsers."""
    imp = add_command(
        subparsers, "import-cgrates", cmd_import_cgrates,
        help="convert a CGRateS tariff plan folder into reference data",
        description="Convert a CGRateS tariff plan (Timings, Destinations, Rates, DestinationRates, RatingPlans, "
                    "RatingProfiles) into a reference-data directory. What cannot be expressed is reported; "
                    "then nothing is written unless --allow-partial. See docs/cgrates.md.")
    imp.add_argument("directory", help="CGRateS tariff plan folder (its CSV files)")
    imp.add_argument("--out", required=True, help="reference-data directory to write (replaces an earlier import)")
    imp.add_argument("--tenant", help="tenant to import (default: the only one, else cgrates.org)")
    imp.add_argument("--category", action="append", metavar="CATEGORY[=TYPE]",
                     help="category to import, as usage type TYPE (voice, sms, data or any other name; default: "
                          "call=voice, sms, data, and any other category as the type named after it, e.g. "
                          "mms=MMS); repeatable; default: every category")
    imp.add_argument("--rounding", choices=("cgrates", "native"), default="cgrates",
                     help="cgrates: round each increment's price to 5 decimals like CGRateS (default); "
                          "native: the project's exact arithmetic")
    imp.add_argument("--currency", default="EUR", help="ISO 4217 code of the tariffs (CGRateS names none)")
    imp.add_argument("--timezone", default="UTC", help="IANA timezone timings are evaluated in (default UTC)")
    imp.add_argument("--add-subject", action="append", default=[], metavar="SUBJECT",
                     help="also subscribe this subject, an MSISDN or an account code (rated by its profile, "
                          "else by *any); repeatable")
    imp.add_argument("--allow-partial", action="store_true",
                     help="write the reference even when some rules cannot be expressed (they are reported)")

    one = add_command(
        subparsers, "rate-one", cmd_rate_one, help="rate one event and explain the charge",
        description="Rate one event with the rating engine and print the charge with its breakdown (zone, band, "
                    "steps, increments, rounding). A rejected event is an answer (exit status 0).")
    one.add_argument("--reference", required=True, help="reference-data directory")
    one.add_argument("--subject", required=True,
                     help="the CGRateS subject: an MSISDN (served_msisdn), else an account code")
    one.add_argument("--destination", help="destination as dialled (not needed for data)")
    one.add_argument("--start", required=True, help="start (answer) time, ISO 8601 with Z or an offset")
    one.add_argument("--usage", required=True, help="voice: 85s, 1m25s or seconds; sms: messages; data: bytes")
    one.add_argument("--service", metavar="TYPE", help="usage type: voice, sms, data or one the reference declares "
                                                        "(default: from --category, else voice)")
    one.add_argument("--category", help="CGRateS category (call, sms, data, or one mapped at import)")
    one.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_import_cgrates(args) -> int:
    from rating.cgrates import ImportOptions, check_target, convert_tariff_plan, write_reference
    from rating.cgrates.report import NOTE, UNSUPPORTED

    categories = None
    if args.category:
        categories = tuple(_category(text) for text in args.category)
    options = ImportOptions(tenant=args.tenant, categories=categories, arithmetic=args.rounding,
                            currency=args.currency, timezone=args.timezone, extra_subjects=tuple(args.add_subject))
    check_target(args.out)
    result = convert_tariff_plan(args.directory, options)
    report = result.report
    summary = (f"{report.count(UNSUPPORTED)} rule(s) cannot be expressed, {report.count(NOTE)} note(s)")
    if report.partial and not args.allow_partial:
        print(report.format_text(), file=sys.stderr)
        print(f"usage-rating import-cgrates: {summary}; nothing written to {args.out}. Pass --allow-partial to "
              f"write what can be expressed (the report is kept in it).", file=sys.stderr)
        return EXIT_ERROR
    out = write_reference(result, args.out)
    if report.findings:
        print(report.format_text())
    versions = sum(len(p.versions) for p in result.plans)
    print(f"{out}: tenant {result.tenant}, categories "
          f"{', '.join(f'{c}={s}' for c, s in result.categories.items())}, {len(result.plans)} plan(s) "
          f"({versions} version(s)), {len(result.zones.chains)} zone(s), {len(result.subscriptions)} subscription(s), "
          f"{args.rounding} arithmetic; {summary}" + (" (partial import)" if report.partial else ""))
    return EXIT_OK


def cmd_rate_one(args) -> int:
    from pipelines.rate_one import RateOneRequest, format_text, rate_one

    answer = rate_one(RateOneRequest(reference_dir=args.reference, subject=args.subject,
                                     destination=args.destination, start=args.start, usage=args.usage,
                                     service=args.service, category=args.category))
    print(json.dumps(answer, ensure_ascii=False) if args.json else format_text(answer))
    return EXIT_OK


def _category(text: str) -> tuple[str, str]:
    """(category, usage type) of ``--category C[=TYPE]``; the type named after C when not given.
    ImportOptions checks the type's name."""
    from rating.cgrates.importer import category_type

    category, _, service = text.partition("=")
    return category, service or category_type(category)
