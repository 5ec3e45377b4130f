"""subscriptions.csv -> subscriptions sorted by (identity key, valid_from_us), checked column-wise.

A million rows is a normal size, so every check is one Arrow or NumPy operation over a column
(instants are parsed once per distinct string), and Python only runs per row to build messages
(at most the listing limit per check) and the model objects at the end. Checks: a known
subscriber_kind and a subscriber valid for it (``rating.identity``: E.164 MSISDN, IMSI, SIP URI,
account code), known account and plan, plan currency equal to the account's, valid instants with
valid_from < valid_to, and no overlapping intervals for one identity (kind, value).

The header is ``subscriber,subscriber_kind,account_id,...``; the older header with ``msisdn`` in
place of the first two columns still loads (every row of kind msisdn).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rating import identity
from rating.reference import times
from rating.reference.csv_tables import CsvTable, column, open_csv_text, read_csv_table
from rating.reference.issues import MAX_ISSUES_PER_FILE, IssueLog
from rating.reference.model import Account, Subscription
from rating.reference.plan_rates import listing

SUBSCRIPTIONS = "subscriptions.csv"
_COLUMNS = ("subscriber", "subscriber_kind", "account_id", "plan_id", "valid_from", "valid_to")
_MSISDN_COLUMNS = ("msisdn", "account_id", "plan_id", "valid_from", "valid_to")   # the older header
_OPEN_END = np.iinfo(np.int64).max   # valid_to of an open-ended subscription, while checking


def read_subscriptions(root: Path, log: IssueLog, *, accounts: dict[str, Account] | None,
                       plan_currencies: dict[str, str | None] | None
                       ) -> tuple[Subscription, ...] | None:
    """Subscriptions sorted by (identity key, valid_from_us); ``None`` if the file is unusable.

    ``plan_currencies`` maps every plan file's id to its currency (``None`` when that plan's
    currency is unusable). A ``None`` argument skips the checks that need it (its own file
    already has an issue).
    """
    old_header = _is_msisdn_header(root)
    csv_table = read_csv_table(root, SUBSCRIPTIONS, _MSISDN_COLUMNS if old_header else _COLUMNS, log)
    if csv_table is None:
        return None
    issues = _RowIssues(csv_table, log)
    table = csv_table.table
    good = np.ones(table.num_rows, dtype=bool)

    value_column = "msisdn" if old_header else "subscriber"
    value = table.column(value_column).combine_chunks()
    kind = pa.repeat(pa.scalar(identity.MSISDN), table.num_rows) if old_header else \
        table.column("subscriber_kind").combine_chunks()
    bad = _mask(pc.invert(pc.is_in(kind, value_set=pa.array(identity.KINDS))))
    issues.add(bad, "subscriber_kind", lambda row: (
        f"unknown subscriber_kind {issues.value('subscriber_kind', row)!r}; expected one of "
        f"{', '.join(identity.KINDS)}"))
    good &= ~bad
    key = identity.identity_keys(kind, value)
    bad = good & _mask(pc.is_null(key))
    issues.add(bad, value_column, lambda row: (
        f"expected {identity.EXPECTED[kind[row].as_py()]}, got {issues.value(value_column, row)!r}"
        + ("" if kind[row].as_py() == identity.MSISDN else f" (subscriber_kind {kind[row].as_py()})")))
    good &= ~bad
    account_index = _check_accounts(table, accounts, issues, good)
    _check_plans(table, accounts, account_index, plan_currencies, issues, good)
    from_us = _instants(table, "valid_from", issues, good, empty_is_open=False)
    to_us = _instants(table, "valid_to", issues, good, empty_is_open=True)
    bad = good & (to_us <= from_us)
    issues.add(bad, "valid_to", lambda row: (
        f"valid_to {issues.value('valid_to', row)} must be after valid_from "
        f"{issues.value('valid_from', row)} (valid_to is exclusive; leave it empty for "
        f"open-ended)"))
    good &= ~bad

    rows = np.flatnonzero(good)
    order = pc.sort_indices(pa.table({"key": key.take(rows), "from_us": from_us[rows]}),
                            sort_keys=[("key", "ascending"), ("from_us", "ascending")])
    rows = rows[order.to_numpy()]
    _check_overlaps(key.take(rows), from_us[rows], to_us[rows], rows, issues, value_column)
    issues.flush()

    ends = to_us[rows]
    kinds = kind.take(rows)
    # The normalised value: as written, but a SIP URI's normalised form (its key).
    values = pc.if_else(pc.equal(kinds, "sip"), key.take(rows), value.take(rows))
    return tuple(map(
        Subscription,
        values.to_pylist(),
        table.column("account_id").take(rows).to_pylist(),
        table.column("plan_id").take(rows).to_pylist(),
        from_us[rows].tolist(),
        pa.array(ends, mask=ends == _OPEN_END).to_pylist(),
        kinds.to_pylist()))


def _is_msisdn_header(root: Path) -> bool:
    """Whether subscriptions.csv has the older header (``msisdn`` first); an unreadable header is
    read as the current one (``read_csv_table`` reports it)."""
    try:
        with open_csv_text(root / SUBSCRIPTIONS) as handle:
            header = next(csv.reader(handle), None)
    except (OSError, csv.Error):
        return False
    return bool(header) and "msisdn" in header and "subscriber" not in header


def _check_accounts(table: pa.Table, accounts: dict[str, Account] | None, issues: _RowIssues,
                    good: np.ndarray) -> pa.Array | None:
    """Index of each row's account in ``accounts`` (null when unknown)."""
    if accounts is None:
        return None
    index = pc.index_in(table.column("account_id"), value_set=pa.array(list(accounts), pa.string()))
    bad = _mask(pc.is_null(index))
    issues.add(bad, "account_id", lambda row: (
        f"unknown account {issues.value('account_id', row)!r}; add it to accounts.csv or fix "
        f"the id"))
    good &= ~bad
    return index


def _check_plans(table: pa.Table, accounts: dict[str, Account] | None,
                 account_index: pa.Array | None, plan_currencies: dict[str, str | None] | None,
                 issues: _RowIssues, good: np.ndarray) -> None:
    if plan_currencies is None:
        return
    plan_index = pc.index_in(table.column("plan_id"),
                             value_set=pa.array(list(plan_currencies), pa.string()))
    bad = _mask(pc.is_null(plan_index))
    issues.add(bad, "plan_id", lambda row: (
        f"unknown plan {issues.value('plan_id', row)!r}; expected one of plans/*.yaml: "
        f"{listing(plan_currencies)}"))
    good &= ~bad
    if account_index is None or not accounts or not plan_currencies:
        return
    codes: dict[str, int] = {}   # currency -> small int; -1 where unknown (already reported)
    account_currency = np.array([codes.setdefault(account.currency, len(codes))
                                 if account.currency else -1 for account in accounts.values()])
    plan_currency = np.array([codes.setdefault(currency, len(codes)) if currency else -1
                              for currency in plan_currencies.values()])
    account_code = account_currency[account_index.fill_null(0).to_numpy()]
    plan_code = plan_currency[plan_index.fill_null(0).to_numpy()]
    bad = good & (account_code >= 0) & (plan_code >= 0) & (account_code != plan_code)

    def message(row: int) -> str:
        plan_id, account_id = issues.value("plan_id", row), issues.value("account_id", row)
        return (f"plan {plan_id} is priced in {plan_currencies[plan_id]} but account "
                f"{account_id} is billed in {accounts[account_id].currency}; choose a plan in "
                f"the account's currency")
    issues.add(bad, "plan_id", message)
    good &= ~bad


def _instants(table: pa.Table, name: str, issues: _RowIssues, good: np.ndarray, *,
              empty_is_open: bool) -> np.ndarray:
    """Epoch microseconds per row (``_OPEN_END`` for an allowed empty value); bad rows are
    reported and cleared in ``good``."""
    values = table.column(name)
    distinct = pc.unique(values)
    parsed = np.zeros(len(distinct), dtype=np.int64)
    errors: dict[int, str] = {}
    for position, text in enumerate(distinct.to_pylist()):
        if text == "" and empty_is_open:
            parsed[position] = _OPEN_END
            continue
        try:
            parsed[position] = times.parse_instant_us(text)
        except ValueError as exc:
            errors[position] = str(exc)
    positions = pc.index_in(values, value_set=distinct).to_numpy()
    if errors:
        bad = np.isin(positions, np.fromiter(errors, dtype=np.int64))
        issues.add(bad, name, lambda row: errors[int(positions[row])])
        good &= ~bad
    return parsed[positions]


def _check_overlaps(key: pa.Array, from_us: np.ndarray, to_us: np.ndarray,
                    rows: np.ndarray, issues: _RowIssues, value_column: str) -> None:
    """Arrays sorted by (identity key, from_us): an interval must start after every earlier
    interval of the same identity has ended. Adjacent pairs find every identity with an overlap;
    those few are then walked to report each overlapping row."""
    count = len(from_us)
    if count < 2:
        return
    same = _mask(pc.equal(key.slice(1), key.slice(0, count - 1)))
    hits = np.flatnonzero(same & (to_us[:-1] > from_us[1:]))
    if not len(hits):
        return
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], count)
    for group in np.unique(np.searchsorted(starts, hits, side="right") - 1).tolist():
        latest_end, latest_row = to_us[starts[group]], rows[starts[group]]
        for position in range(starts[group] + 1, ends[group]):
            row = rows[position]
            if latest_end > from_us[position]:
                start = times.format_instant_us(int(from_us[position]))
                ended = "is open-ended" if latest_end == _OPEN_END else \
                    f"ends at {times.format_instant_us(int(latest_end))}"
                issues.add_row(
                    int(row), None,
                    f"subscription of {issues.value(value_column, row)} from {start} overlaps the "
                    f"one on line {issues.line(latest_row)}, which {ended}; set that one's "
                    f"valid_to to {start} or earlier")
            if to_us[position] > latest_end:
                latest_end, latest_row = to_us[position], row


class _RowIssues:
    """Issues found column-wise, logged in line order; at most the listing limit per check."""

    def __init__(self, csv_table: CsvTable, log: IssueLog):
        self._file = csv_table.file
        self._table = csv_table.table
        self._lines = csv_table.lines
        self._log = log
        self._entries: list[tuple[int, str, str]] = []
        self._unlisted = 0

    def value(self, name: str, row: int) -> str:
        return self._table.column(name)[int(row)].as_py()

    def line(self, row: int) -> int:
        return int(self._lines[row])

    def add(self, mask: np.ndarray, name: str, message: Callable[[int], str]) -> None:
        rows = np.flatnonzero(mask)
        for row in rows[:MAX_ISSUES_PER_FILE].tolist():
            self.add_row(row, name, message(row))
        self._unlisted += max(0, len(rows) - MAX_ISSUES_PER_FILE)

    def add_row(self, row: int, name: str | None, message: str) -> None:
        line = self.line(row)
        self._entries.append((line, column(line, name) if name else f"line {line}", message))

    def flush(self) -> None:
        self._entries.sort(key=lambda entry: entry[0])
        for _, location, message in self._entries:
            self._log.add(self._file, location, message)
        self._log.add_unlisted(self._file, self._unlisted)
        self._entries, self._unlisted = [], 0


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a NumPy mask (nulls count as False)."""
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
