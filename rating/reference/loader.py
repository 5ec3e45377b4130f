"""Load and validate a reference-data directory (format: ``docs/reference-data.md``).

Files are read in dependency order (operator, tables, plans, tax rates, accounts, subscriptions)
and each is checked against what was already read, so one pass reports every problem: a file
that cannot be parsed at all is one issue, and the checks that depend on it are skipped rather
than repeated for every row that refers to it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from rating.reference import billing_tables, plan_rates
from rating.reference.billing_tables import ACCOUNTS
from rating.reference.issues import IssueLog, ReferenceDataError, ReferenceIssue
from rating.reference.model import Account, Operator, Plan, ReferenceData
from rating.reference.operator_yaml import read_operator
from rating.reference.plan_yaml import PlanContext, read_plan
from rating.reference.remote import local_reference
from rating.reference.subscriptions_csv import read_subscriptions
from rating.reference.usage_types_yaml import read_usage_types
from rating.reference.yaml_fields import open_yaml
from rating.reference.zone_tables import read_calendar, read_zone_table

OPERATOR = "operator.yaml"


def check_reference(path: str | Path) -> list[ReferenceIssue]:
    """Every issue in the reference directory ``path`` (empty when it is valid).

    Never raises for bad content: a missing directory or file is an issue like any other.
    """
    with gc_paused():
        return _read(Path(local_reference(path)))[1]


def load_reference(path: str | Path) -> ReferenceData:
    """Load the reference directory ``path``; raises :class:`ReferenceDataError` with ALL issues."""
    root = Path(local_reference(path))
    with gc_paused():
        data, issues = _read(root)
    if issues:
        raise ReferenceDataError(issues, root=root)
    return data


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Loading (or compiling, or unpickling) builds a million or so small acyclic objects
    (subscriptions, accounts); the cyclic garbage collector would rescan them again and again as
    they accumulate (measured: object creation 3x slower). Nothing cyclic is created, so
    collection can wait until the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(root: Path) -> tuple[ReferenceData | None, list[ReferenceIssue]]:
    log = IssueLog()
    if not root.is_dir():
        log.add(str(root), "", "not a directory; expected a reference-data directory holding "
                               "operator.yaml, plans/, zones/, accounts.csv, subscriptions.csv "
                               "and tax_rates.csv")
        return None, log.finish()
    operator = _read_operator(root, log)
    currencies = frozenset(operator.currencies) if operator is not None else None
    usage_types = read_usage_types(root, log)
    zone_tables = {relative: read_zone_table(root, relative, log, roaming=False)
                   for relative in _list(root, "zones", ".csv", log, required=True)}
    roaming_tables = {relative: read_zone_table(root, relative, log, roaming=True)
                      for relative in _list(root, "roaming", ".csv", log, required=False)}
    calendars = {relative: read_calendar(root, relative, log)
                 for relative in _list(root, "calendars", ".csv", log, required=False)}
    context = PlanContext(
        currencies=currencies,
        zone_tables={name: table and table[1] for name, table in zone_tables.items()},
        roaming_tables={name: table and table[1] for name, table in roaming_tables.items()},
        calendars=frozenset(calendars),
        usage_types=usage_types,
    )
    plans = _read_plans(root, log, context)
    if plans is not None:
        plan_rates.check_allowance_pools(plans, log)
    tax = billing_tables.read_tax_rates(root, log)
    accounts = billing_tables.read_accounts(root, log, currencies=currencies,
                                            tax_regions=tax[1] if tax else None)
    plan_currencies = None if plans is None else {
        plan_id: plan.currency if plan is not None else None for plan_id, plan in plans.items()}
    subscriptions = read_subscriptions(root, log, accounts=accounts,
                                       plan_currencies=plan_currencies)
    issues = log.finish()
    if issues:
        return None, issues
    return ReferenceData(
        root=root,
        operator=operator,
        plans=plans,
        zone_tables={name: table[0] for name, table in zone_tables.items()},
        roaming_tables={name: table[0] for name, table in roaming_tables.items()},
        calendars=calendars,
        accounts=accounts,
        subscriptions=subscriptions,
        tax_rates=tax[0],
        usage_types=usage_types,
    ), []


def load_account_terms(path: str | Path, account_id: str) -> tuple[Operator, Account | None]:
    """operator.yaml and ``account_id``'s row of accounts.csv, without reading the rest of the
    reference (an invoice shows only these: the operator's name and currencies, the account's
    timezone and bill cycle day). The account is None when accounts.csv has no such row. Raises
    :class:`ReferenceDataError` when operator.yaml or accounts.csv cannot be read; the row is taken
    as the run that rated it validated it (``load_reference`` checks every row)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    root = Path(local_reference(path))
    log = IssueLog()
    operator = _read_operator(root, log)
    try:
        table = pacsv.read_csv(root / ACCOUNTS, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in ("account_id", "currency", "timezone", "bill_cycle_day",
                                                         "tax_region")}))
    except (OSError, pa.ArrowInvalid) as error:
        log.add(ACCOUNTS, "", f"cannot read it ({error})")
        table = None
    issues = log.finish()
    if issues or operator is None or table is None:
        raise ReferenceDataError(issues, root=root)
    rows = table.filter(pc.equal(table.column("account_id"), account_id)).to_pylist()
    if not rows:
        return operator, None
    row = rows[0]
    return operator, Account(account_id, row["currency"], row["timezone"], int(row["bill_cycle_day"]),
                             row["tax_region"])


def _read_operator(root: Path, log: IssueLog) -> Operator | None:
    if not (root / OPERATOR).is_file():
        log.add(OPERATOR, "", "missing required file; create it with operator, home_networks, "
                              "currencies, invoice_rounding and tax_rounding")
        return None
    opened = open_yaml(root, OPERATOR, log)
    if opened is None:
        return None
    reader, data = opened
    operator = read_operator(reader, data)
    reader.finish()
    return operator


def _read_plans(root: Path, log: IssueLog, context: PlanContext) -> dict[str, Plan | None] | None:
    """Plan id (file name) -> plan, ``None`` for a file that did not parse; ``None`` without
    a plans/ directory."""
    if not (root / "plans").is_dir():
        _list(root, "plans", ".yaml", log, required=True)
        return None
    plans = {}
    for relative in _list(root, "plans", ".yaml", log, required=True):
        plan_id = relative[len("plans/"):-len(".yaml")]
        opened = open_yaml(root, relative, log)
        plans[plan_id] = None
        if opened is not None:
            reader, data = opened
            plans[plan_id] = read_plan(reader, data, plan_id, context)
            reader.finish()
    return plans


def _list(root: Path, folder: str, suffix: str, log: IssueLog, *, required: bool) -> list[str]:
    """Relative paths of the ``*suffix`` files in ``root/folder``, sorted; anything else there
    (except hidden files) is an issue."""
    directory = root / folder
    if not directory.is_dir():
        if required:
            log.add(f"{folder}/", "", f"missing required directory; create {folder}/ with at "
                                      f"least one <name>{suffix} file")
        return []
    files = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        relative = f"{folder}/{entry.name}"
        if entry.is_file() and entry.name.endswith(suffix):
            files.append(relative)
        else:
            kind = "directory" if entry.is_dir() else "file"
            log.add(relative, "", f"unexpected {kind}; {folder}/ holds only <name>{suffix} files "
                                  f"(rename or remove it)")
    if required and not files:
        log.add(f"{folder}/", "", f"no <name>{suffix} files; add at least one")
    return files
