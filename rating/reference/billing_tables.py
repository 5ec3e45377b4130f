"""tax_rates.csv and accounts.csv, with their cross-file checks (currencies, tax regions).

Accounts can number hundreds of thousands, so each row costs a few dict lookups and string tests
(timezones are checked once per distinct name). Every problem is reported with its line and
column. A tax rate with a problem is left out; an account with a bad field is kept, that field
``None``, so its subscriptions are still checked against it.
"""

from __future__ import annotations

import operator
from pathlib import Path

from rating.reference import money, times
from rating.reference.csv_tables import column, read_csv_table
from rating.reference.issues import IssueLog
from rating.reference.model import Account, TaxRate
from rating.reference.plan_rates import listing

TAX_RATES = "tax_rates.csv"
ACCOUNTS = "accounts.csv"
_MAX_BILL_CYCLE_DAY = 28


def read_tax_rates(root: Path, log: IssueLog) -> tuple[tuple[TaxRate, ...], frozenset[str]] | None:
    """Rates sorted by (tax_region, valid_from_us), and every region named in the file."""
    table = read_csv_table(root, TAX_RATES, ("tax_region", "valid_from", "rate", "name"), log)
    if table is None:
        return None
    regions: set[str] = set()
    first_line: dict[tuple[str, int], int] = {}
    rates = []
    for line, region, valid_from, rate_text, name in table.rows():
        good = True
        if not _is_code(region):
            log.add(TAX_RATES, column(line, "tax_region"),
                    f"expected a tax region code such as DE, got {region!r}")
            good = False
        else:
            regions.add(region)
        valid_from_us = _instant(valid_from, line, "valid_from", TAX_RATES, log)
        rate = None
        try:
            rate = money.decimal_micros(rate_text, what="a tax rate")
        except ValueError as exc:
            log.add(TAX_RATES, column(line, "rate"), str(exc))
        if rate is not None and not 0 <= rate < money.MICROS_PER_UNIT:
            log.add(TAX_RATES, column(line, "rate"),
                    f"expected a fraction 0 <= rate < 1 (0.19 for 19 %), got {rate_text!r}")
            rate = None
        if not name:
            log.add(TAX_RATES, column(line, "name"), "expected a name such as \"VAT 19%\", got "
                                                     "an empty value")
            good = False
        if None in (valid_from_us, rate) or not good:
            continue
        key = (region, valid_from_us)
        if key in first_line:
            log.add(TAX_RATES, f"line {line}",
                    f"duplicate rate for {region} from {valid_from} (first on line "
                    f"{first_line[key]}); keep one")
            continue
        first_line[key] = line
        rates.append(TaxRate(region, valid_from_us, rate, name))
    rates.sort(key=operator.attrgetter("tax_region", "valid_from_us"))
    return tuple(rates), frozenset(regions)


def read_accounts(root: Path, log: IssueLog, *, currencies: frozenset[str] | None,
                  tax_regions: frozenset[str] | None) -> dict[str, Account] | None:
    """Accounts by id. ``None`` checks are skipped (their own file already has an issue).

    Accounts with a bad field are still returned (the bad field as ``None``) so that their
    subscriptions are not reported as having an unknown account too.
    """
    table = read_csv_table(root, ACCOUNTS, ("account_id", "currency", "timezone",
                                             "bill_cycle_day", "tax_region"), log)
    if table is None:
        return None
    accounts: dict[str, Account] = {}
    first_line: dict[str, int] = {}
    zone_ok: dict[str, bool] = {}
    for line, account_id, currency, timezone, cycle_day, tax_region in table.rows():
        if not account_id:
            log.add(ACCOUNTS, column(line, "account_id"), "expected an account id, got an empty "
                                                          "value")
            continue
        if account_id in first_line:
            log.add(ACCOUNTS, column(line, "account_id"),
                    f"duplicate account_id {account_id!r} (first on line "
                    f"{first_line[account_id]}); keep one row per account")
            continue
        first_line[account_id] = line
        if currencies is not None and currency not in currencies:
            log.add(ACCOUNTS, column(line, "currency"),
                    f"currency {currency!r} is not declared in operator.yaml (declared: "
                    f"{listing(currencies)}); declare it there or fix the account")
            currency = None
        if timezone not in zone_ok:
            zone_ok[timezone] = _is_timezone(timezone)
        if not zone_ok[timezone]:
            log.add(ACCOUNTS, column(line, "timezone"),
                    f"expected an IANA timezone name such as Europe/Berlin, got {timezone!r}")
            timezone = None
        day = int(cycle_day) if cycle_day.isdigit() and cycle_day.isascii() else None
        if day is None or not 1 <= day <= _MAX_BILL_CYCLE_DAY:
            log.add(ACCOUNTS, column(line, "bill_cycle_day"),
                    f"expected a day of the month 1..{_MAX_BILL_CYCLE_DAY} (a cycle must start "
                    f"on a day every month has), got {cycle_day!r}")
            day = None
        if tax_regions is not None and tax_region not in tax_regions:
            log.add(ACCOUNTS, column(line, "tax_region"),
                    f"tax region {tax_region!r} has no rate in {TAX_RATES} (regions there: "
                    f"{listing(tax_regions)}); add its rate or fix the account")
            tax_region = None
        accounts[account_id] = Account(account_id, currency, timezone, day, tax_region)
    return accounts


def _instant(text: str, line: int, name: str, file: str, log: IssueLog) -> int | None:
    try:
        return times.parse_instant_us(text)
    except ValueError as exc:
        log.add(file, column(line, name), str(exc))
        return None


def _is_timezone(name: str) -> bool:
    try:
        times.check_timezone(name)
    except ValueError:
        return False
    return True


def _is_code(text: str) -> bool:
    return bool(text) and text.isascii() and text.replace("_", "").replace("-", "").isalnum()
