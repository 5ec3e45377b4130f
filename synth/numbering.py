"""Telephone numbering the generator works from: country calling codes, the national numbering of
the three home countries (Germany, United Kingdom, United States) and the zone tables built from them.

Everything is E.164 digits without ``+``. The zone tables map prefixes to zones for one home
country; :func:`destination_ranges` lists the number ranges destinations are drawn from, every one
of them covered by a prefix of that table (so a generated valid destination always has a zone).
No table has a prefix of ``999``: destinations ``00999…`` are the generator's ``NO_ZONE`` records.
"""

from __future__ import annotations

import dataclasses

# Region of every country calling code: EU, EEA, EUW (other western Europe), EUE (eastern Europe and
# Turkey), NANP (+1 countries other than the US and Canada), AM (rest of the Americas), ME (Middle
# East), AS (Asia), OC (Oceania), AF (Africa), SAT (satellite and international networks).
COUNTRY_CODES: tuple[tuple[str, str, str], ...] = (
    ("7", "RU", "EUE"), ("76", "KZ", "AS"), ("77", "KZ", "AS"),
    ("20", "EG", "AF"), ("211", "SS", "AF"), ("212", "MA", "AF"), ("213", "DZ", "AF"), ("216", "TN", "AF"),
    ("218", "LY", "AF"), ("220", "GM", "AF"), ("221", "SN", "AF"), ("222", "MR", "AF"), ("223", "ML", "AF"),
    ("224", "GN", "AF"), ("225", "CI", "AF"), ("226", "BF", "AF"), ("227", "NE", "AF"), ("228", "TG", "AF"),
    ("229", "BJ", "AF"), ("230", "MU", "AF"), ("231", "LR", "AF"), ("232", "SL", "AF"), ("233", "GH", "AF"),
    ("234", "NG", "AF"), ("235", "TD", "AF"), ("236", "CF", "AF"), ("237", "CM", "AF"), ("238", "CV", "AF"),
    ("239", "ST", "AF"), ("240", "GQ", "AF"), ("241", "GA", "AF"), ("242", "CG", "AF"), ("243", "CD", "AF"),
    ("244", "AO", "AF"), ("245", "GW", "AF"), ("246", "IO", "AF"), ("248", "SC", "AF"), ("249", "SD", "AF"),
    ("250", "RW", "AF"), ("251", "ET", "AF"), ("252", "SO", "AF"), ("253", "DJ", "AF"), ("254", "KE", "AF"),
    ("255", "TZ", "AF"), ("256", "UG", "AF"), ("257", "BI", "AF"), ("258", "MZ", "AF"), ("260", "ZM", "AF"),
    ("261", "MG", "AF"), ("262", "RE", "AF"), ("263", "ZW", "AF"), ("264", "NA", "AF"), ("265", "MW", "AF"),
    ("266", "LS", "AF"), ("267", "BW", "AF"), ("268", "SZ", "AF"), ("269", "KM", "AF"), ("27", "ZA", "AF"),
    ("290", "SH", "AF"), ("291", "ER", "AF"), ("297", "AW", "AM"), ("298", "FO", "EUW"), ("299", "GL", "EUW"),
    ("30", "GR", "EU"), ("31", "NL", "EU"), ("32", "BE", "EU"), ("33", "FR", "EU"), ("34", "ES", "EU"),
    ("350", "GI", "EUW"), ("351", "PT", "EU"), ("352", "LU", "EU"), ("353", "IE", "EU"), ("354", "IS", "EEA"),
    ("355", "AL", "EUE"), ("356", "MT", "EU"), ("357", "CY", "EU"), ("358", "FI", "EU"), ("359", "BG", "EU"),
    ("36", "HU", "EU"), ("370", "LT", "EU"), ("371", "LV", "EU"), ("372", "EE", "EU"), ("373", "MD", "EUE"),
    ("374", "AM", "AS"), ("375", "BY", "EUE"), ("376", "AD", "EUW"), ("377", "MC", "EUW"), ("378", "SM", "EUW"),
    ("380", "UA", "EUE"), ("381", "RS", "EUE"), ("382", "ME", "EUE"), ("383", "XK", "EUE"), ("385", "HR", "EU"),
    ("386", "SI", "EU"), ("387", "BA", "EUE"), ("389", "MK", "EUE"), ("39", "IT", "EU"), ("40", "RO", "EU"),
    ("41", "CH", "EUW"), ("420", "CZ", "EU"), ("421", "SK", "EU"), ("423", "LI", "EEA"), ("43", "AT", "EU"),
    ("44", "GB", "EUW"), ("45", "DK", "EU"), ("46", "SE", "EU"), ("47", "NO", "EEA"), ("48", "PL", "EU"),
    ("49", "DE", "EU"),
    ("500", "FK", "AM"), ("501", "BZ", "AM"), ("502", "GT", "AM"), ("503", "SV", "AM"), ("504", "HN", "AM"),
    ("505", "NI", "AM"), ("506", "CR", "AM"), ("507", "PA", "AM"), ("508", "PM", "AM"), ("509", "HT", "AM"),
    ("51", "PE", "AM"), ("52", "MX", "AM"), ("53", "CU", "AM"), ("54", "AR", "AM"), ("55", "BR", "AM"),
    ("56", "CL", "AM"), ("57", "CO", "AM"), ("58", "VE", "AM"), ("590", "GP", "AM"), ("591", "BO", "AM"),
    ("592", "GY", "AM"), ("593", "EC", "AM"), ("594", "GF", "AM"), ("595", "PY", "AM"), ("596", "MQ", "AM"),
    ("597", "SR", "AM"), ("598", "UY", "AM"), ("599", "CW", "AM"),
    ("60", "MY", "AS"), ("61", "AU", "OC"), ("62", "ID", "AS"), ("63", "PH", "AS"), ("64", "NZ", "OC"),
    ("65", "SG", "AS"), ("66", "TH", "AS"), ("670", "TL", "AS"), ("672", "NF", "OC"), ("673", "BN", "AS"),
    ("674", "NR", "OC"), ("675", "PG", "OC"), ("676", "TO", "OC"), ("677", "SB", "OC"), ("678", "VU", "OC"),
    ("679", "FJ", "OC"), ("680", "PW", "OC"), ("681", "WF", "OC"), ("682", "CK", "OC"), ("683", "NU", "OC"),
    ("685", "WS", "OC"), ("686", "KI", "OC"), ("687", "NC", "OC"), ("688", "TV", "OC"), ("689", "PF", "OC"),
    ("690", "TK", "OC"), ("691", "FM", "OC"), ("692", "MH", "OC"),
    ("81", "JP", "AS"), ("82", "KR", "AS"), ("84", "VN", "AS"), ("850", "KP", "AS"), ("852", "HK", "AS"),
    ("853", "MO", "AS"), ("855", "KH", "AS"), ("856", "LA", "AS"), ("86", "CN", "AS"), ("870", "XS", "SAT"),
    ("880", "BD", "AS"), ("881", "XS", "SAT"), ("882", "XS", "SAT"), ("883", "XS", "SAT"), ("886", "TW", "AS"),
    ("90", "TR", "EUE"), ("91", "IN", "AS"), ("92", "PK", "AS"), ("93", "AF", "AS"), ("94", "LK", "AS"),
    ("95", "MM", "AS"), ("960", "MV", "AS"), ("961", "LB", "ME"), ("962", "JO", "ME"), ("963", "SY", "ME"),
    ("964", "IQ", "ME"), ("965", "KW", "ME"), ("966", "SA", "ME"), ("967", "YE", "ME"), ("968", "OM", "ME"),
    ("970", "PS", "ME"), ("971", "AE", "ME"), ("972", "IL", "ME"), ("973", "BH", "ME"), ("974", "QA", "ME"),
    ("975", "BT", "AS"), ("976", "MN", "AS"), ("977", "NP", "AS"), ("98", "IR", "ME"), ("992", "TJ", "AS"),
    ("993", "TM", "AS"), ("994", "AZ", "AS"), ("995", "GE", "AS"), ("996", "KG", "AS"), ("998", "UZ", "AS"),
)

# North American Numbering Plan area codes outside the US (country code 1).
CANADA_NPAS = ("204", "226", "236", "249", "250", "289", "306", "343", "365", "403", "416", "418", "431",
               "437", "438", "450", "506", "514", "519", "548", "579", "581", "587", "604", "613", "639",
               "647", "705", "709", "778", "780", "782", "807", "819", "825", "867", "873", "902", "905")
CARIBBEAN_NPAS = ("242", "246", "264", "268", "284", "345", "441", "473", "649", "664", "721", "758",
                  "767", "784", "809", "829", "849", "868", "869", "876")
US_NPAS = ("212", "646", "917", "718", "347", "213", "310", "415", "312", "305", "713", "214", "202",
           "617", "206", "404", "702", "602", "303", "512", "615", "504", "808", "907", "503", "612")
US_TOLL_FREE = ("800", "888", "877", "866", "855", "844", "833")

# Mobile leading digits after the country code, expanded to finer prefixes in every zone table, as
# real operator tables are (one row per mobile range).
MOBILE_LEADS: dict[str, tuple[str, ...]] = {
    "33": ("6", "7"), "39": ("3",), "34": ("6", "71", "72", "73", "74"), "31": ("6",), "32": ("4",),
    "43": ("66", "67", "68", "69"), "41": ("7",), "48": ("5", "6", "7", "88"), "351": ("9",), "46": ("7",),
    "45": ("2", "3", "4", "5"), "47": ("4", "9"), "358": ("4", "50"), "353": ("8",), "30": ("69",),
    "420": ("6", "7"), "36": ("20", "30", "70"), "40": ("7",), "90": ("5",), "7": ("9",),
    "380": ("50", "63", "66", "67", "68", "73", "9"), "44": ("7",), "49": ("15", "16", "17"),
    "86": ("13", "15", "18"), "91": ("7", "8", "9"), "81": ("70", "80", "90"), "61": ("4",),
    "385": ("9",), "386": ("3", "4", "6"), "381": ("6",), "359": ("8",), "421": ("9",), "370": ("6",),
}

HOME_COUNTRIES = ("DE", "GB", "US")


@dataclasses.dataclass(frozen=True)
class NationalNumbering:
    """How one home country dials: its E.164 country code, prefixes and number ranges."""
    iso: str
    country_code: str
    international_prefix: str
    trunk_prefix: str
    # (national significant prefix, digits after it, relative weight, zone) per range; national
    # numbers are dialled as trunk_prefix + prefix + digits.
    ranges: tuple[tuple[str, int, float, str], ...]
    # Prefixes (after the country code) of the operator's own subscriber numbers, and of a range
    # it never allocates (used for UNKNOWN_SUBSCRIBER records).
    subscriber_prefixes: tuple[str, ...]
    subscriber_digits: int
    foreign_prefix: str
    # Popular international destinations from this country: (country code, weight).
    popular_destinations: tuple[tuple[str, float], ...]


_DE_AREAS = (("30", 8, 9.0), ("40", 8, 5.0), ("89", 8, 4.0), ("69", 8, 3.0), ("221", 7, 3.0), ("211", 7, 2.0),
             ("711", 7, 2.0), ("911", 7, 1.5), ("341", 7, 1.5), ("351", 7, 1.5), ("511", 7, 1.5),
             ("421", 7, 1.2), ("201", 7, 1.2), ("231", 7, 1.2), ("228", 7, 1.0), ("621", 7, 1.0),
             ("721", 7, 1.0), ("761", 6, 0.8), ("331", 6, 0.8), ("381", 6, 0.6), ("361", 6, 0.6),
             ("391", 6, 0.6), ("431", 6, 0.6), ("451", 6, 0.6), ("541", 6, 0.5), ("551", 6, 0.5),
             ("611", 6, 0.6), ("6131", 6, 0.5), ("681", 6, 0.5), ("821", 6, 0.5), ("2461", 5, 0.2),
             ("3843", 5, 0.2), ("7531", 5, 0.3), ("8821", 5, 0.2), ("9621", 5, 0.2))
_GB_AREAS = (("20", 8, 9.0), ("121", 7, 2.0), ("161", 7, 2.0), ("131", 7, 1.2), ("141", 7, 1.2),
             ("113", 7, 1.2), ("114", 7, 1.0), ("117", 7, 1.0), ("151", 7, 1.0), ("191", 7, 0.8),
             ("29", 8, 0.8), ("28", 8, 0.6), ("1223", 6, 0.4), ("1865", 6, 0.4), ("1273", 6, 0.4),
             ("300", 7, 0.8), ("330", 7, 0.6))

NUMBERING: dict[str, NationalNumbering] = {
    "DE": NationalNumbering(
        iso="DE", country_code="49", international_prefix="00", trunk_prefix="0",
        ranges=tuple((p, d, w, "NATIONAL") for p, d, w in _DE_AREAS) + (
            ("151", 8, 8.0, "MOBILE"), ("152", 8, 5.0, "MOBILE"), ("157", 8, 4.0, "MOBILE"),
            ("159", 8, 3.0, "MOBILE"), ("160", 7, 5.0, "MOBILE"), ("162", 7, 3.0, "MOBILE"),
            ("163", 7, 2.0, "MOBILE"), ("170", 7, 5.0, "MOBILE"), ("171", 7, 4.0, "MOBILE"),
            ("172", 7, 3.0, "MOBILE"), ("173", 7, 3.0, "MOBILE"), ("174", 7, 2.0, "MOBILE"),
            ("175", 7, 3.0, "MOBILE"), ("176", 7, 3.0, "MOBILE"), ("177", 7, 2.0, "MOBILE"),
            ("178", 7, 2.0, "MOBILE"), ("179", 7, 2.0, "MOBILE"),
            ("800", 7, 0.8, "FREEPHONE"), ("116", 3, 0.1, "FREEPHONE"), ("180", 7, 0.5, "SPECIAL"),
            ("137", 7, 0.1, "SPECIAL"), ("700", 8, 0.1, "SPECIAL"), ("900", 7, 0.25, "PREMIUM"),
            ("118", 3, 0.15, "PREMIUM")),
        subscriber_prefixes=("151", "152", "157", "160", "170", "171", "175"), subscriber_digits=8,
        foreign_prefix="1590",
        popular_destinations=(("90", 14.0), ("48", 10.0), ("43", 8.0), ("39", 7.0), ("41", 6.0), ("44", 6.0),
                              ("33", 6.0), ("1", 6.0), ("7", 4.0), ("34", 4.0), ("31", 4.0), ("40", 3.0),
                              ("385", 2.0), ("381", 2.0), ("30", 2.0), ("380", 2.0), ("86", 1.0), ("91", 1.0))),
    "GB": NationalNumbering(
        iso="GB", country_code="44", international_prefix="00", trunk_prefix="0",
        ranges=tuple((p, d, w, "NATIONAL") for p, d, w in _GB_AREAS) + (
            ("77", 8, 8.0, "MOBILE"), ("78", 8, 7.0, "MOBILE"), ("79", 8, 7.0, "MOBILE"), ("74", 8, 4.0, "MOBILE"),
            ("75", 8, 4.0, "MOBILE"), ("73", 8, 2.0, "MOBILE"), ("71", 8, 1.0, "MOBILE"),
            ("800", 7, 0.8, "FREEPHONE"), ("808", 7, 0.3, "FREEPHONE"), ("845", 7, 0.4, "SPECIAL"),
            ("870", 7, 0.3, "SPECIAL"), ("70", 8, 0.1, "SPECIAL"), ("906", 7, 0.2, "PREMIUM"),
            ("909", 7, 0.1, "PREMIUM")),
        subscriber_prefixes=("77", "78"), subscriber_digits=8, foreign_prefix="7400",
        popular_destinations=(("48", 9.0), ("91", 8.0), ("353", 8.0), ("1", 8.0), ("33", 6.0), ("34", 6.0),
                              ("49", 5.0), ("39", 4.0), ("92", 4.0), ("40", 3.0), ("351", 3.0), ("61", 3.0),
                              ("880", 2.0), ("234", 2.0), ("86", 1.5), ("90", 1.5))),
    "US": NationalNumbering(
        iso="US", country_code="1", international_prefix="011", trunk_prefix="1",
        ranges=tuple((npa, 7, 1.0, "NATIONAL") for npa in US_NPAS) + (
            ("800", 7, 0.3, "FREEPHONE"), ("888", 7, 0.2, "FREEPHONE"), ("877", 7, 0.1, "FREEPHONE"),
            ("900", 7, 0.1, "PREMIUM")),
        subscriber_prefixes=("212", "646", "917", "347"), subscriber_digits=7, foreign_prefix="305",
        popular_destinations=(("52", 14.0), ("1", 10.0), ("44", 6.0), ("91", 6.0), ("86", 5.0), ("63", 4.0),
                              ("49", 3.0), ("33", 2.0), ("39", 2.0), ("34", 2.0), ("82", 2.0), ("81", 2.0),
                              ("57", 2.0), ("55", 2.0), ("972", 1.0), ("84", 1.5))),
}


def _region_zone(home: str, region: str, code: str) -> str:
    if region == "SAT":
        return "SATELLITE"
    if home == "US":
        if region in ("NANP",) or code == "52":
            return "WORLD_1"
        if region in ("EU", "EEA", "EUW", "EUE"):
            return "WORLD_2"
        return "WORLD_3"
    if region in ("EU", "EEA", "EUW"):
        return "EUROPE"
    if region in ("EUE",):
        return "WORLD_1"
    if region in ("AM", "ME", "AS", "OC", "NANP"):
        return "WORLD_2"
    return "WORLD_3"


def zone_table(home: str) -> list[tuple[str, str]]:
    """(prefix, zone) rows of the zone table for subscribers of ``home`` ("DE", "GB", "US"),
    sorted by prefix. Several thousand rows: country codes, NANP area codes, mobile ranges."""
    numbering = NUMBERING[home]
    cc = numbering.country_code
    rows: dict[str, str] = {}
    for code, _iso, region in COUNTRY_CODES:
        rows[code] = "NATIONAL" if code == cc else _region_zone(home, region, code)
    # +1: the US, Canada and the Caribbean share the country code.
    rows["1"] = "NATIONAL" if home == "US" else "WORLD_1"
    for npa in CANADA_NPAS:
        rows["1" + npa] = "WORLD_1"
    for npa in CARIBBEAN_NPAS:
        rows["1" + npa] = "WORLD_1" if home == "US" else "WORLD_2"
    if home == "US":
        for npa in US_NPAS:
            rows["1" + npa] = "NATIONAL"
        for npa in US_TOLL_FREE:
            rows["1" + npa] = "FREEPHONE"
        rows["1900"] = "PREMIUM"
    # Mobile ranges of other countries, two digits finer than their leading digits.
    for code, leads in MOBILE_LEADS.items():
        if code == cc:
            continue
        for lead in leads:
            for suffix in range(100):
                rows[f"{code}{lead}{suffix:02d}"] = rows[code]
    # The home country's own ranges: geographic areas, mobile ranges (one row per block of
    # 1000 subscriber numbers' leading digits), service numbers.
    for prefix, _digits, _weight, zone in numbering.ranges:
        if zone == "MOBILE":
            for suffix in range(10):
                rows[f"{cc}{prefix}{suffix}"] = "MOBILE"
        else:
            rows[cc + prefix] = zone
    if home != "US":
        areas = range(200, 1000) if home == "DE" else range(100, 400)
        for area in areas:   # the rest of the geographic numbering, by 3-digit area
            prefix = f"{cc}{area}"
            if not any(prefix.startswith(cc + p) or (cc + p).startswith(prefix) for p, *_ in numbering.ranges):
                rows.setdefault(prefix, "NATIONAL")
    assert not any(p.startswith("999") or p in ("9", "99") for p in rows), "999 must stay unzoned (NO_ZONE)"
    return sorted(rows.items())


@dataclasses.dataclass(frozen=True)
class DestinationRange:
    e164_prefix: str    # country code + national prefix
    digits: int         # random digits after the prefix
    weight: float
    national: bool      # dialled in national form by default (home country ranges)


def destination_ranges(home: str) -> list[DestinationRange]:
    """Number ranges destinations of ``home`` subscribers are drawn from, with their weights:
    home ranges weighted as in :data:`NUMBERING`, international ranges by popularity."""
    numbering = NUMBERING[home]
    cc = numbering.country_code
    out = [DestinationRange(cc + p, d, w, True) for p, d, w, _zone in numbering.ranges]
    national_total = sum(r.weight for r in out)
    international: list[DestinationRange] = []
    popular = dict(numbering.popular_destinations)
    popular_total = sum(popular.values())
    other_codes = [c for c, _iso, _r in COUNTRY_CODES if c not in popular and c != cc and len(c) > 1]
    for code, weight in list(popular.items()) + [(c, popular_total * 0.15 / len(other_codes)) for c in other_codes]:
        if code == "1":
            # From the US, Canada is dialled like a national number (1 + area code).
            npas = CANADA_NPAS if home == "US" else US_NPAS + CANADA_NPAS
            international += [DestinationRange("1" + n, 7, weight / len(npas), home == "US") for n in npas]
            continue
        leads = MOBILE_LEADS.get(code, ())
        length = 10 - len(code) + 2         # E.164 numbers of 11 to 12 digits
        if leads:
            share = weight * 0.6 / len(leads)
            international += [DestinationRange(code + lead, length - len(lead), share, False) for lead in leads]
            international.append(DestinationRange(code + "2", length - 1, weight * 0.4, False))
        else:
            international.append(DestinationRange(code + "2", length - 1, weight, False))
    # International calls are ~12% of home destinations.
    scale = national_total * 0.12 / 0.88 / sum(r.weight for r in international)
    return out + [dataclasses.replace(r, weight=r.weight * scale) for r in international]
