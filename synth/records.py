"""Valid usage records for one chunk (a time slice), fully vectorised.

Given the chunk's minute range and record count: start times from the traffic intensity (sorted),
a timezone per record in proportion to that timezone's local activity at that minute, a subscriber
within the timezone by activity weight (re-drawn among always-subscribed ones when the first pick
has no subscription at that instant), the service from the subscriber's mix, roaming during the
subscriber's trip, then destination, duration, volume, cell, source and record id.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas.arrow_mapping import PROVENANCE_FIELDS, usage_batch_schema
from synth import networks, tariffs
from synth.arrays import Sampler, digit_strings, sentinel_strings, take_or_null
from synth.numbering import HOME_COUNTRIES, NUMBERING, destination_ranges
from synth.population import (
    CELLS_PER_FOREIGN_NETWORK, CELLS_PER_HOME_NETWORK, TIMEZONES, Population, SECOND_US)
from synth.traffic import BIN_S, Traffic

VOICE, SMS, DATA = 0, 1, 2
SERVICE_SYMBOLS = ("VOICE", "SMS", "DATA")
# Declared usage types (usage_types.yaml of the generated reference), written in v3 records only:
# codes after the built-in ones in Chunk.service, service OTHER with a usage_type in the records.
MMS, API_CALLS = 3, 4
USAGE_TYPE_NAMES = SERVICE_SYMBOLS + ("MMS", "API_CALLS")
MMS_SHARE = 0.10         # of texts
API_CALLS_SHARE = 0.05   # of data sessions (machine-to-machine API traffic)
RECORD_ID_DIGITS = 12
FORM_NATIONAL, FORM_INTERNATIONAL, FORM_PLUS = 0, 1, 2

_HOME_SOURCES = {
    "DE": (("MSC-BER-01", "MSC-FRA-02", "MSC-MUC-03"), ("SMSC-DE-01",), ("PGW-DE-01", "PGW-DE-02")),
    "GB": (("MSC-LON-01", "MSC-MAN-02"), ("SMSC-GB-01",), ("PGW-GB-01",)),
    "US": (("MSC-NYC-01", "MSC-CHI-02"), ("SMSC-US-01",), ("PGW-US-01",)),
}
VOICE_CAUSES = (("normalRelease", 0.93), ("abnormalRelease", 0.04), ("cAMELInitCallRelease", 0.01),
                ("stableCallAbnormalTermination", 0.02))
DATA_CAUSES = (("normalRelease", 0.62), ("timeLimit", 0.20), ("volumeLimit", 0.10), ("abnormalRelease", 0.05),
               ("managementIntervention", 0.03))
RAT_TYPES = ("EUTRAN", "NR", "UTRAN", "GERAN")
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def record_schema() -> pa.Schema:
    """The columns the generator writes: the latest usage batch schema without provenance."""
    provenance = {f.name for f in PROVENANCE_FIELDS}
    return pa.schema([f for f in usage_batch_schema() if f.name not in provenance])


def source_names() -> tuple[str, ...]:
    """Every record source: home switches per country and service, then one TAP source per foreign
    network (roaming records arrive from the visited operator)."""
    home = tuple(name for iso in HOME_COUNTRIES for per_service in _HOME_SOURCES[iso] for name in per_service)
    return home + tuple(f"TAP-{network}" for network, _iso, _region in networks.FOREIGN_NETWORKS)


@dataclasses.dataclass(frozen=True)
class Destinations:
    """Destination number ranges of all home countries, concatenated; see numbering.destination_ranges."""
    # 3 dialled prefixes per range (national form, international prefix, "+"), as the integer
    # "1" + prefix digits (the 1 keeps leading zeros; see sentinel_strings) and a "+" flag.
    dial_value: np.ndarray
    dial_plus: np.ndarray
    digits: np.ndarray           # random digits after the prefix, per range
    national: np.ndarray         # bool: a home-country range (dialled in national form by default)
    first: np.ndarray            # per country: index of its first range
    voice: list                  # per country: Sampler over its ranges for voice
    sms: list                    # per country: Sampler over its ranges for SMS (mostly mobile)


def build_destinations() -> Destinations:
    dial, digits, national, first, voice, sms = [], [], [], [], [], []
    for iso in HOME_COUNTRIES:
        numbering = NUMBERING[iso]
        cc = numbering.country_code
        first.append(len(digits))
        ranges = destination_ranges(iso)
        mobile_national = {cc + p for p, _d, _w, zone in numbering.ranges if zone == "MOBILE"}
        voice_w, sms_w = [], []
        for r in ranges:
            national_dial = numbering.trunk_prefix + r.e164_prefix[len(cc):] if r.national else ""
            dial += [national_dial, numbering.international_prefix + r.e164_prefix, "+" + r.e164_prefix]
            digits.append(r.digits)
            national.append(r.national)
            voice_w.append(r.weight)
            if r.e164_prefix in mobile_national:
                sms_w.append(r.weight * 6.0)
            elif r.national and iso != "US":
                sms_w.append(r.weight * 0.02)     # texts to landlines and service numbers are rare
            else:
                sms_w.append(r.weight * (1.0 if iso == "US" else 0.5))
        voice.append(Sampler(np.array(voice_w)))
        sms.append(Sampler(np.array(sms_w)))
    # Ranges without a national form (international ones) never use that slot: any value will do.
    dial_value = np.array([int("1" + d.lstrip("+")) for d in dial], np.int64)
    dial_plus = np.array([d.startswith("+") for d in dial])
    assert max(len(d) for d in dial) + max(digits) <= 18, "dialled numbers must fit an int64 with the sentinel"
    return Destinations(dial_value, dial_plus, np.array(digits), np.array(national), np.array(first), voice, sms)


@dataclasses.dataclass(frozen=True)
class Chunk:
    batch: pa.RecordBatch    # record_id still empty: see RecordFactory.with_record_ids
    source: np.ndarray       # int16 index into source_names()
    service: np.ndarray      # int8 VOICE/SMS/DATA (and MMS/API_CALLS with declared types)
    roaming: np.ndarray      # bool
    country: np.ndarray      # int8 home country of the served subscriber


class RecordIds:
    """Sequential record ids per source across the run (``000000000001``, ...), in time order."""

    def __init__(self, sources: int):
        assert sources < 2**15
        self.next = np.ones(sources, np.int64)

    def allocate(self, source: np.ndarray) -> np.ndarray:
        order = np.argsort(source.astype(np.int16), kind="stable")   # radix sort on small ints
        counts = np.bincount(source, minlength=len(self.next))
        group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(source), np.int64)
        rank[order] = np.arange(len(source)) - group_start[source[order]]
        ids = self.next[source] + rank
        self.next += counts
        return ids


class RecordFactory:
    """Holds what every chunk needs (population, traffic, lookup tables) and makes chunks.

    ``make`` only reads shared state, so chunks can be made on several threads at once."""

    def __init__(self, population: Population, traffic: Traffic, declared_types: bool = False):
        self.population = population
        self.declared_types = declared_types   # turn some texts into MMS and data sessions into API calls
        self.traffic = traffic
        self.destinations = build_destinations()
        self.sources = source_names()
        self.schema = record_schema()
        self.record_ids = RecordIds(len(self.sources))
        pop = population
        n_timezones = len(TIMEZONES)
        # Per timezone: its members and samplers by activity weight, over all members and over the
        # members subscribed for the whole period.
        period_end = traffic.start_us + traffic.bins * BIN_S * SECOND_US
        always = (pop.active_from_us == traffic.start_us) & (pop.active_to_us == period_end)
        self._members, self._pick, self._always_members, self._always_pick = [], [], [], []
        for g in range(n_timezones):
            for subset, members_out, pick_out in ((np.ones(pop.size, bool), self._members, self._pick),
                                                  (always, self._always_members, self._always_pick)):
                members = np.flatnonzero((pop.timezone == g) & subset)
                members_out.append(members)
                pick_out.append(Sampler(pop.weight[members]) if len(members) else None)
        # Home sources: first source index per (country, service) and how many switches.
        self._source_base = np.zeros((3, 3), np.int64)
        self._source_count = np.zeros((3, 3), np.int64)
        i = 0
        for c, iso in enumerate(HOME_COUNTRIES):
            for s, names in enumerate(_HOME_SOURCES[iso]):
                self._source_base[c, s], self._source_count[c, s] = i, len(names)
                i += len(names)
        self._roaming_source_base = i
        self._networks = pa.array([n for n, _i, _r in networks.FOREIGN_NETWORKS], pa.string())
        self._apns = pa.array([p.data_apn for p in tariffs.PLANS], pa.string())
        self._causes = pa.array([c for c, _ in VOICE_CAUSES + DATA_CAUSES], pa.string())
        self._voice_cause = Sampler(np.array([p for _, p in VOICE_CAUSES]))
        self._data_cause = Sampler(np.array([p for _, p in DATA_CAUSES]))
        self._services = pa.array(SERVICE_SYMBOLS, pa.string())
        self._rat_types = pa.array(RAT_TYPES, pa.string())
        self._source_array = pa.array(self.sources, pa.string())

    def make(self, rng: np.random.Generator, bin_lo: int, bin_hi: int, count: int) -> Chunk:
        pop, traffic = self.population, self.traffic
        n_timezones = len(TIMEZONES)
        assert n_timezones <= 8, "the timezone index is packed into 3 bits of the sort key"
        # (minute, timezone) cells by expected activity: exact counts per cell, already in time order.
        cells = traffic.by_timezone[:, bin_lo:bin_hi].T.reshape(-1)
        per_cell = rng.multinomial(count, cells / cells.sum())
        cell = np.repeat(np.arange(len(cells)), per_cell)
        minute = bin_lo + cell // n_timezones
        # Seconds within the minute, then sort; the timezone rides along in the low bits.
        key = ((minute * BIN_S + rng.integers(0, BIN_S, count)) << 3) | (cell % n_timezones)
        key.sort()
        start_s = key >> 3
        timezone = key & 7
        start_us = traffic.start_us + start_s * SECOND_US

        # Subscriber by activity weight within the timezone; a subscriber without a subscription
        # at that instant is replaced by one subscribed all period.
        subscriber = np.empty(count, np.int64)
        u = rng.random(count)
        for g in range(n_timezones):
            rows = np.flatnonzero(timezone == g)
            if len(rows):
                subscriber[rows] = self._members[g][self._pick[g](u[rows])]
        inactive = (start_us < pop.active_from_us[subscriber]) | (start_us >= pop.active_to_us[subscriber])
        rows = np.flatnonzero(inactive)
        if len(rows):
            u = rng.random(len(rows))
            for g in np.unique(timezone[rows]):
                these = timezone[rows] == g
                subscriber[rows[these]] = self._always_members[g][self._always_pick[g](u[these])]

        country = pop.country[subscriber]
        u = rng.random(count)
        cdf = pop.service_cdf[subscriber]
        service = (u >= cdf[:, 0]).astype(np.int8) + (u >= cdf[:, 1])
        day = (start_s // 86_400).astype(np.int32)
        roaming = (pop.trip_first_day[subscriber] <= day) & (day <= pop.trip_last_day[subscriber])
        network = pop.trip_network[subscriber]

        other_party = self._destinations(rng, service, country, roaming)
        duration, bytes_up, bytes_down, message_count = _usage(rng, service)

        source = np.where(
            roaming, self._roaming_source_base + network,
            self._source_base[country, service] + subscriber % self._source_count[country, service])
        record_id = pa.nulls(count, pa.string())     # set in sequence by with_record_ids

        home_cell = pop.home_cell[subscriber]
        cell_home_base = country.astype(np.int64) * CELLS_PER_HOME_NETWORK
        cell = np.where(
            roaming,
            3 * CELLS_PER_HOME_NETWORK + network.astype(np.int64) * CELLS_PER_FOREIGN_NETWORK
            + rng.integers(0, CELLS_PER_FOREIGN_NETWORK, count),
            cell_home_base + (home_cell - cell_home_base + rng.integers(0, 24, count)) % CELLS_PER_HOME_NETWORK)

        is_data = service == DATA
        # Termination cause: voice causes then data causes in one array; none for SMS.
        cause = np.where(is_data, len(VOICE_CAUSES) + self._data_cause(rng.random(count)),
                         self._voice_cause(rng.random(count)))
        # Radio access: mostly LTE and 5G at home, more 3G/2G abroad.
        u = rng.random(count)
        rat = np.where(roaming, (u >= 0.6).astype(np.int8) + (u >= 0.7) + (u >= 0.9),
                       (u >= 0.5).astype(np.int8) + (u >= 0.8) + (u >= 0.92))

        columns = {
            "record_id": record_id,
            "source": self._source_array.take(pa.array(source)),
            "service": self._services.take(pa.array(service)),
            "served_msisdn": pop.msisdn.take(pa.array(subscriber)),
            "other_party": other_party,
            "start_time": pa.array(start_us, pa.timestamp("us", tz="UTC")),
            "duration_s": pa.array(duration),
            "bytes_up": pa.array(bytes_up),
            "bytes_down": pa.array(bytes_down),
            "message_count": pa.array(message_count),
            "visited_network": take_or_null(self._networks, network, roaming),
            "cell_id": pop.cell_ids.take(pa.array(cell)),
            "imsi": pop.imsi.take(pa.array(subscriber)),
            "apn": take_or_null(self._apns, pop.plan[subscriber], is_data),
            "termination_cause": take_or_null(self._causes, cause, service != SMS),
            "rat_type": self._rat_types.take(pa.array(rat)),
            "partial_sequence": pa.array(np.zeros(count, np.int32)),
            "usage_type": pa.nulls(count, pa.string()),
            "quantity": pa.nulls(count, pa.int64()),
            "subscriber": pa.nulls(count, pa.string()),
            "subscriber_kind": pa.nulls(count, pa.string()),
        }
        batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        if self.declared_types:
            batch, service = _declared_types(rng, batch, service)
        return Chunk(batch, source.astype(np.int16), service, roaming, country)

    def with_record_ids(self, chunk: Chunk) -> Chunk:
        """``chunk`` with its record ids: per source, sequential across the run in time order.
        Chunks must come through here in order; ``make`` itself may run for several chunks at once."""
        record_id = digit_strings(self.record_ids.allocate(chunk.source), RECORD_ID_DIGITS)
        index = chunk.batch.schema.get_field_index("record_id")
        batch = chunk.batch.set_column(index, chunk.batch.schema.field(index), record_id)
        return dataclasses.replace(chunk, batch=batch)

    def _destinations(self, rng, service, country, roaming) -> pa.Array:
        """other_party for voice and SMS, null for data."""
        d = self.destinations
        count = len(service)
        range_index = np.zeros(count, np.int64)
        u = rng.random(count)
        for c in range(len(HOME_COUNTRIES)):
            for svc, samplers in ((VOICE, d.voice), (SMS, d.sms)):
                rows = np.flatnonzero((country == c) & (service == svc))
                if len(rows):
                    range_index[rows] = d.first[c] + samplers[c](u[rows])
        national = d.national[range_index]
        form_u = rng.random(count)
        form = np.where(national,
                        np.where(form_u < 0.88, FORM_NATIONAL, np.where(form_u < 0.98, FORM_PLUS, FORM_INTERNATIONAL)),
                        np.where(form_u < 0.70, FORM_INTERNATIONAL, FORM_PLUS))
        form = np.where(roaming, FORM_PLUS, form)      # the visited network reports international form
        digits = d.digits[range_index]
        number = (rng.random(count) * _POW10[digits]).astype(np.int64)
        # Dialled prefix and the number's digits as one integer (see sentinel_strings); null for data.
        prefix = range_index * 3 + form
        is_data = service == DATA
        other_party = sentinel_strings(d.dial_value[prefix] * _POW10[digits] + number, d.dial_plus[prefix], ~is_data)
        return other_party


def _declared_types(rng: np.random.Generator, batch: pa.RecordBatch, service: np.ndarray
                    ) -> tuple[pa.RecordBatch, np.ndarray]:
    """A share of texts become MMS (same destination and message count) and of data sessions API-call
    records (a ``quantity`` of calls, no bytes): service OTHER with their ``usage_type``."""
    u = rng.random(len(service))
    service = service.copy()
    service[(service == SMS) & (u < MMS_SHARE)] = MMS
    api = (service == DATA) & (u < API_CALLS_SHARE)
    service[api] = API_CALLS
    declared = service >= MMS
    calls = np.minimum(rng.lognormal(np.log(40.0), 1.2, len(service)), 50_000).astype(np.int64) + 1
    names = pa.array([None, None, None, "MMS", "API_CALLS"], pa.string())
    changes = {
        "service": pc.if_else(pa.array(declared), pa.scalar("OTHER"), batch.column("service")),
        "usage_type": names.take(pa.array(service)),
        "quantity": pa.array(np.where(api, calls, 0), pa.int64(), mask=~api),
        "bytes_up": pa.array(np.where(api, 0, batch.column("bytes_up").to_numpy())),
        "bytes_down": pa.array(np.where(api, 0, batch.column("bytes_down").to_numpy())),
    }
    for name, column in changes.items():
        index = batch.schema.get_field_index(name)
        batch = batch.set_column(index, batch.schema.field(index), column.cast(batch.schema.field(index).type))
    return batch, service


def _usage(rng: np.random.Generator, service: np.ndarray):
    """duration_s, bytes_up, bytes_down, message_count per record."""
    count = len(service)
    duration = np.zeros(count, np.int64)
    bytes_up = np.zeros(count, np.int64)
    bytes_down = np.zeros(count, np.int64)
    message_count = np.zeros(count, np.int32)
    # Voice: lognormal around 75 s, 3 % zero-second calls, a few multi-hour calls.
    voice = np.flatnonzero(service == VOICE)
    call = np.minimum(rng.lognormal(np.log(75.0), 1.05, len(voice)), 4 * 3600.0).astype(np.int64) + 1
    kind = rng.random(len(voice))
    call[kind < 0.03] = 0
    long_calls = kind > 0.9995
    call[long_calls] = rng.integers(3600, 5 * 3600, int(long_calls.sum()))
    duration[voice] = call
    # Data: session length and heavy-tailed volume (median ~2 MB, up to GBs), 1 % empty sessions.
    data = np.flatnonzero(service == DATA)
    duration[data] = np.clip(rng.lognormal(np.log(300.0), 1.3, len(data)), 1, 86_400).astype(np.int64)
    volume = np.clip(rng.lognormal(np.log(2.0e6), 2.0, len(data)), 0, 8.0e9).astype(np.int64)
    volume[rng.random(len(data)) < 0.01] = 0
    up = (volume * rng.uniform(0.04, 0.3, len(data))).astype(np.int64)
    bytes_up[data] = up
    bytes_down[data] = volume - up
    # SMS: one message, sometimes a concatenated 2 or 3.
    sms = np.flatnonzero(service == SMS)
    kind = rng.random(len(sms))
    message_count[sms] = 1 + (kind > 0.95).astype(np.int32) + (kind > 0.99)
    return duration, bytes_up, bytes_down, message_count
