"""The subscriber population: accounts, subscriptions and how each subscriber behaves, as arrays.

Built once per run from the reference RNG (no Python loop per subscriber). Subscribers are 70 %
German (80 % consumers on MOBILE_S/MOBILE_L in family accounts of 1-4 lines, 20 % business lines on
BUSINESS_PRO in accounts of 5-200), 20 % British (UK_FLEX) and 10 % American (US_TALK, accounts in
three US timezones). A few subscriptions start or end inside the period and a few German consumers
change plan in the middle of it; a subscriber's records only fall inside its subscriptions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.writers import iso_utc_strings
from synth import networks, tariffs
from synth.arrays import digit_strings
from synth.numbering import HOME_COUNTRIES, NUMBERING

COUNTRY_SHARES = (0.70, 0.20, 0.10)            # DE, GB, US
BUSINESS_SHARE = (0.20, 0.0, 0.0)
TIMEZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "America/Chicago", "America/Los_Angeles")
_US_TIMEZONE_SHARES = (0.5, 0.25, 0.25)
TAX_REGIONS = ("DE", "GB", "US")
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US

STARTER_SHARE = 0.02      # subscriptions starting inside the period
ENDER_SHARE = 0.02        # subscriptions ending inside the period
CHANGER_SHARE = 0.015     # German consumers moving between MOBILE_S and MOBILE_L inside the period
DATA_ONLY_SHARE = 0.03    # tablets and routers: data sessions only
CELLS_PER_HOME_NETWORK = 4096
CELLS_PER_FOREIGN_NETWORK = 256


@dataclasses.dataclass(frozen=True)
class Population:
    # per subscriber
    msisdn: pa.StringArray
    imsi: pa.StringArray
    country: np.ndarray          # int8, index into HOME_COUNTRIES
    plan: np.ndarray             # int8, index into tariffs.PLANS (the plan at the period start)
    business: np.ndarray         # bool
    timezone: np.ndarray         # int8, index into TIMEZONES (the account's)
    weight: np.ndarray           # float64 activity weight (Zipf-like over a random ranking)
    service_cdf: np.ndarray      # (n, 2) float64: P(voice), P(voice or SMS)
    active_from_us: np.ndarray   # int64: first instant with a subscription, clipped to the period
    active_to_us: np.ndarray     # int64: exclusive end of the last subscription, clipped to the period
    trip_first_day: np.ndarray   # int32 day index of a trip abroad (-1: no trip)
    trip_last_day: np.ndarray    # int32 inclusive
    trip_network: np.ndarray     # int32 index into networks.FOREIGN_NETWORKS
    home_cell: np.ndarray        # int32 index into cell_ids of the subscriber's usual cell
    # cells: home networks' cells first (CELLS_PER_HOME_NETWORK each, in HOME_COUNTRIES order),
    # then CELLS_PER_FOREIGN_NETWORK per foreign network
    cell_ids: pa.StringArray
    # reference tables
    accounts: pa.Table           # account_id, currency, timezone, bill_cycle_day, tax_region
    subscriptions: pa.Table      # msisdn, account_id, plan_id, valid_from, valid_to (strings)
    plan_changes: int
    starters: int
    enders: int

    @property
    def size(self) -> int:
        return len(self.country)


def _group_sizes(rng: np.random.Generator, count: int, sizes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Random group sizes from ``sizes`` that add up to exactly ``count`` (last one truncated)."""
    if count == 0:
        return np.zeros(0, np.int64)
    drawn = rng.choice(sizes, size=count, p=probs / probs.sum())
    total = np.cumsum(drawn)
    k = int(np.searchsorted(total, count)) + 1
    drawn = drawn[:k].copy()
    drawn[-1] -= total[k - 1] - count
    return drawn


def build_population(rng: np.random.Generator, subscribers: int, start: dt.date, days: int) -> Population:
    t0 = int(np.datetime64(start, "us").astype(np.int64))
    counts = np.floor(np.array(COUNTRY_SHARES) * subscribers).astype(np.int64)
    counts[0] += subscribers - counts.sum()
    country = np.repeat(np.arange(len(HOME_COUNTRIES), dtype=np.int8), counts)
    accounts = _accounts(rng, counts)
    msisdn, imsi = _numbers(rng, counts)
    weight, service_cdf = _activity(rng, subscribers)
    lines = _subscription_lines(rng, country, accounts, weight, start, t0, days)
    trip_first, trip_last, trip_network = _trips(rng, country, accounts.business, days)
    home_cell = (country.astype(np.int32) * CELLS_PER_HOME_NETWORK
                 + rng.integers(0, CELLS_PER_HOME_NETWORK, subscribers).astype(np.int32))
    account_table, subscriptions = _reference_tables(rng, msisdn, accounts, lines)
    return Population(
        msisdn=msisdn, imsi=imsi, country=country, plan=accounts.plan, business=accounts.business,
        timezone=accounts.timezone, weight=weight, service_cdf=service_cdf, active_from_us=lines.active_from,
        active_to_us=lines.active_to, trip_first_day=trip_first, trip_last_day=trip_last,
        trip_network=trip_network, home_cell=home_cell, cell_ids=_cells(), accounts=account_table,
        subscriptions=subscriptions, plan_changes=int(lines.changer.sum()), starters=int(lines.starter.sum()),
        enders=int(lines.ender.sum()))


@dataclasses.dataclass(frozen=True)
class _Accounts:
    # per subscriber
    account: np.ndarray      # account row
    plan: np.ndarray         # int8 index into tariffs.PLANS
    timezone: np.ndarray     # int8 index into TIMEZONES
    business: np.ndarray     # bool
    # per account
    country: np.ndarray
    account_timezone: np.ndarray
    account_plan: np.ndarray


def _accounts(rng: np.random.Generator, counts: np.ndarray) -> _Accounts:
    """Group each country's subscribers into accounts, with the plan and timezone of each account:
    German consumers in families of 1-4 lines on MOBILE_S or MOBILE_L, German business lines in
    accounts of 5-200 on BUSINESS_PRO, British ones on UK_FLEX, American ones on US_TALK in three
    timezones."""
    n = int(counts.sum())
    plan_index = {p.plan_id: i for i, p in enumerate(tariffs.PLANS)}
    account, plan = np.zeros(n, np.int64), np.zeros(n, np.int8)
    timezone, business = np.zeros(n, np.int8), np.zeros(n, bool)
    per_account: dict[str, list] = {"country": [], "timezone": [], "plan": []}
    next_account = offset = 0
    for c, (iso, count) in enumerate(zip(HOME_COUNTRIES, counts)):
        n_business = int(round(count * BUSINESS_SHARE[c]))
        for is_business, members in ((True, n_business), (False, int(count) - n_business)):
            if members == 0:
                continue
            if is_business:
                sizes = _group_sizes(rng, members, np.arange(5, 201), 1.0 / np.arange(5, 201) ** 1.2)
            else:
                sizes = _group_sizes(rng, members, np.array([1, 2, 3, 4]), np.array([0.7, 0.2, 0.07, 0.03]))
            k = len(sizes)
            if iso == "DE":
                acc_plan = (np.full(k, plan_index["BUSINESS_PRO"]) if is_business else
                            np.where(rng.random(k) < 0.6, plan_index["MOBILE_S"], plan_index["MOBILE_L"]))
                acc_tz = np.full(k, TIMEZONES.index("Europe/Berlin"))
            elif iso == "GB":
                acc_plan, acc_tz = np.full(k, plan_index["UK_FLEX"]), np.full(k, TIMEZONES.index("Europe/London"))
            else:
                acc_plan = np.full(k, plan_index["US_TALK"])
                acc_tz = TIMEZONES.index("America/New_York") + rng.choice(3, size=k, p=_US_TIMEZONE_SHARES)
            rows = slice(offset, offset + members)
            account[rows] = next_account + np.repeat(np.arange(k), sizes)
            plan[rows] = np.repeat(acc_plan, sizes)
            timezone[rows] = np.repeat(acc_tz, sizes)
            business[rows] = is_business
            per_account["country"].append(np.full(k, c))
            per_account["timezone"].append(acc_tz)
            per_account["plan"].append(acc_plan)
            next_account += k
            offset += members
    return _Accounts(account, plan, timezone, business, *(np.concatenate(per_account[k])
                                                          for k in ("country", "timezone", "plan")))


def _numbers(rng: np.random.Generator, counts: np.ndarray) -> tuple[pa.StringArray, pa.StringArray]:
    """MSISDNs and IMSIs per subscriber. Per country the MSISDNs cycle through the operator's
    prefixes; within a prefix the local number is an affine map of the subscriber's position
    (unique, scattered over the range)."""
    msisdn_parts, imsi_parts = [], []
    for c, iso in enumerate(HOME_COUNTRIES):
        numbering = NUMBERING[iso]
        local = np.arange(int(counts[c]), dtype=np.int64)
        prefixes = np.array(numbering.subscriber_prefixes)
        modulus = 10 ** numbering.subscriber_digits
        suffix = (7919 * (local // len(prefixes)) + int(rng.integers(modulus))) % modulus
        head = pa.array(np.char.add(numbering.country_code, prefixes[local % len(prefixes)]))
        msisdn_parts.append(pc.binary_join_element_wise(head, digit_strings(suffix, numbering.subscriber_digits), ""))
        home = networks.HOME_NETWORKS[iso]
        imsi_parts.append(pc.binary_join_element_wise(home, digit_strings(local + 10_000_000, 15 - len(home)), ""))
    return pa.concat_arrays(msisdn_parts), pa.concat_arrays(imsi_parts)


def _activity(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-like activity weights over a random ranking, and each subscriber's service mix (around
    40 % voice, 15 % SMS, 45 % data; some data-only) as cumulative P(voice), P(voice or SMS)."""
    ranks = rng.permutation(n) + 1.0
    weight = (ranks + 4.0) ** -0.75
    mix = np.array([0.40, 0.15, 0.45]) * rng.lognormal(0.0, 0.5, size=(n, 3))
    mix[rng.random(n) < DATA_ONLY_SHARE] = (0.0, 0.0, 1.0)
    mix /= mix.sum(axis=1, keepdims=True)
    return weight, np.cumsum(mix, axis=1)[:, :2]


@dataclasses.dataclass(frozen=True)
class _Lines:
    """Subscription intervals (µs; -1 = open) and the instants each subscriber can have records."""
    valid_from: np.ndarray
    valid_to: np.ndarray
    change_at: np.ndarray      # where a starter starts, an ender ends, a changer changes plan
    changer: np.ndarray
    starter: np.ndarray
    ender: np.ndarray
    active_from: np.ndarray
    active_to: np.ndarray


def _subscription_lines(rng, country, accounts: _Accounts, weight, start: dt.date, t0: int, days: int) -> _Lines:
    n = len(country)
    t1 = t0 + days * DAY_US
    kind = rng.random(n)
    changer = (country == HOME_COUNTRIES.index("DE")) & ~accounts.business & (kind < CHANGER_SHARE)
    starter = ~changer & (kind >= 0.5) & (kind < 0.5 + STARTER_SHARE)
    ender = ~changer & (kind >= 0.6) & (kind < 0.6 + ENDER_SHARE)
    # Every timezone with subscribers keeps its most active one subscribed all period, so a record
    # drawn for an inactive subscriber can always be given to an active one of the same timezone.
    for tz in np.unique(accounts.timezone):
        members = np.flatnonzero(accounts.timezone == tz)
        top = members[np.argmax(weight[members])]
        starter[top] = ender[top] = False
    change_at = t0 + (1 + (rng.random(n) * (days * 86_400 - 2)).astype(np.int64)) * SECOND_US  # in (t0, t1)
    first_day_us = int(np.datetime64(tariffs.first_version_day(start), "us").astype(np.int64))
    since = first_day_us + (rng.random(n) * ((t0 - first_day_us) // SECOND_US - 86_400)).astype(np.int64) * SECOND_US
    return _Lines(valid_from=np.where(starter, change_at, since), valid_to=np.where(ender, change_at, -1),
                  change_at=change_at, changer=changer, starter=starter, ender=ender,
                  active_from=np.where(starter, change_at, t0), active_to=np.where(ender, change_at, t1))


def _trips(rng: np.random.Generator, country: np.ndarray, business: np.ndarray, days: int):
    """A trip abroad of 2-10 days on one foreign network for 4 % of consumers and 12 % of business
    lines: (first day, last day, network index into networks.FOREIGN_NETWORKS); days -1 without a trip."""
    n = len(country)
    travels = rng.random(n) < np.where(business, 0.12, 0.04)
    trip_first = np.where(travels, rng.integers(0, days, n), -1).astype(np.int32)
    trip_last = np.where(travels, trip_first + rng.integers(1, 10, n), -1).astype(np.int32)
    trip_network = np.zeros(n, np.int32)
    foreign_index = {net: i for i, (net, _iso, _region) in enumerate(networks.FOREIGN_NETWORKS)}
    for c, iso in enumerate(HOME_COUNTRIES):
        candidates = networks.visited_networks(iso)
        near = "EU" if iso != "US" else "NA"
        w = np.array([3.0 if region == near else 1.0 for _net, _iso, region in candidates])
        members = np.flatnonzero(country == c)
        pick = rng.choice(len(candidates), size=len(members), p=w / w.sum())
        trip_network[members] = np.array([foreign_index[net] for net, _i, _r in candidates])[pick]
    return trip_first, trip_last, trip_network


def _cells() -> pa.StringArray:
    """Cell identifiers: MCC+MNC, a 4-digit location area and a 5-digit cell, e.g. 26203-0042-01337."""
    parts = []
    for iso in HOME_COUNTRIES:
        parts += _network_cells(networks.HOME_NETWORKS[iso], CELLS_PER_HOME_NETWORK)
    for network, _iso, _region in networks.FOREIGN_NETWORKS:
        parts += _network_cells(network, CELLS_PER_FOREIGN_NETWORK)
    return pa.array(parts, pa.string())


def _network_cells(network: str, count: int) -> list[str]:
    seed = int(network)
    return [f"{network}-{(seed + i * 37) % 9000 + 1000:04d}-{(seed * 7 + i * 7919) % 90000 + 10000:05d}"
            for i in range(count)]


def _reference_tables(rng, msisdn: pa.StringArray, accounts: _Accounts, lines: _Lines) -> tuple[pa.Table, pa.Table]:
    """accounts.csv and subscriptions.csv as Arrow tables of strings and ints."""
    n_accounts = len(accounts.country)
    account_ids = pc.binary_join_element_wise("ACC", digit_strings(np.arange(1, n_accounts + 1), 7), "")
    currencies = np.array([p.currency for p in tariffs.PLANS])
    account_table = pa.table({
        "account_id": account_ids,
        "currency": pa.array(currencies[accounts.account_plan]),
        "timezone": pa.array(np.array(TIMEZONES)[accounts.account_timezone]),
        "bill_cycle_day": pa.array(rng.integers(1, 29, n_accounts)),
        "tax_region": pa.array(np.array(TAX_REGIONS)[accounts.country]),
    })
    # Changers get two rows: the old plan until the change, the other German consumer plan after it.
    plan_ids = np.array([p.plan_id for p in tariffs.PLANS])
    index = {p.plan_id: i for i, p in enumerate(tariffs.PLANS)}
    plan = accounts.plan
    swapped = np.where(plan == index["MOBILE_S"], index["MOBILE_L"], index["MOBILE_S"])
    changers = np.flatnonzero(lines.changer)
    rows_sub = np.concatenate([np.arange(len(plan)), changers])
    rows_plan = np.concatenate([plan, swapped[changers]])
    rows_from = np.concatenate([lines.valid_from, lines.change_at[changers]])
    rows_to = np.concatenate([np.where(lines.changer, lines.change_at, lines.valid_to), np.full(len(changers), -1)])
    to_strings = pc.if_else(pa.array(rows_to >= 0), iso_utc_strings(np.maximum(rows_to, 0)),
                            pa.scalar(None, pa.string()))
    subscriptions = pa.table({
        "msisdn": pc.take(msisdn, pa.array(rows_sub)),
        "account_id": pc.take(account_ids, pa.array(accounts.account[rows_sub])),
        "plan_id": pa.array(plan_ids[rows_plan]),
        "valid_from": iso_utc_strings(rows_from),
        "valid_to": to_strings,
    }).sort_by([("msisdn", "ascending"), ("valid_from", "ascending")])
    return account_table, subscriptions
