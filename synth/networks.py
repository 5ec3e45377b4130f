"""Mobile networks: the operator's home networks and the foreign networks its subscribers roam on.

Roaming tables map a visited network's MCC+MNC (or a whole country's MCC) to a roaming zone.
European operators bill the EU/EEA (plus the UK and Switzerland) as ``ROAM_EU`` and everything else
as ``ROAM_WORLD``; the US plan bills Canada and Mexico as ``ROAM_NA``.
"""

from __future__ import annotations

# The operator's own networks, one per home country; never a visited network.
HOME_NETWORKS = {"DE": "26203", "GB": "23433", "US": "310260"}
HOME_MCCS = {"DE": ("262",), "GB": ("234", "235"), "US": ("310", "311", "312", "313", "316")}

# (MCC+MNC, country ISO code, region) of foreign networks subscribers are seen on.
FOREIGN_NETWORKS: tuple[tuple[str, str, str], ...] = (
    ("26201", "DE", "EU"), ("26202", "DE", "EU"), ("26207", "DE", "EU"),
    ("20801", "FR", "EU"), ("20810", "FR", "EU"), ("20820", "FR", "EU"), ("20815", "FR", "EU"),
    ("23410", "GB", "EU"), ("23415", "GB", "EU"), ("23420", "GB", "EU"), ("23430", "GB", "EU"),
    ("22201", "IT", "EU"), ("22210", "IT", "EU"), ("22288", "IT", "EU"),
    ("21401", "ES", "EU"), ("21403", "ES", "EU"), ("21407", "ES", "EU"),
    ("20404", "NL", "EU"), ("20408", "NL", "EU"), ("20416", "NL", "EU"),
    ("20601", "BE", "EU"), ("20610", "BE", "EU"), ("23001", "CZ", "EU"), ("23201", "AT", "EU"),
    ("23203", "AT", "EU"), ("22801", "CH", "EU"), ("22802", "CH", "EU"), ("26001", "PL", "EU"),
    ("26002", "PL", "EU"), ("26801", "PT", "EU"), ("27201", "IE", "EU"), ("24001", "SE", "EU"),
    ("23801", "DK", "EU"), ("24201", "NO", "EU"), ("24491", "FI", "EU"), ("20201", "GR", "EU"),
    ("21670", "HU", "EU"), ("21910", "HR", "EU"), ("22601", "RO", "EU"),
    ("31026", "US", "NA"), ("310410", "US", "NA"), ("311480", "US", "NA"),
    ("302720", "CA", "NA"), ("302610", "CA", "NA"), ("334020", "MX", "NA"),
    ("44010", "JP", "WORLD"), ("45005", "KR", "WORLD"), ("46000", "CN", "WORLD"), ("50501", "AU", "WORLD"),
    ("53001", "NZ", "WORLD"), ("72405", "BR", "WORLD"), ("40410", "IN", "WORLD"), ("52501", "SG", "WORLD"),
    ("42402", "AE", "WORLD"), ("28601", "TR", "WORLD"), ("25001", "RU", "WORLD"), ("65501", "ZA", "WORLD"),
    ("60202", "EG", "WORLD"), ("45400", "HK", "WORLD"), ("52000", "TH", "WORLD"), ("51010", "ID", "WORLD"),
)
# Whole-country rows (MCC only) for countries with listed networks, so a network missing from the
# list still zones by its country. Home MCCs are left out per table.
_COUNTRY_MCCS = {"FR": "208", "GB": "234", "IT": "222", "ES": "214", "NL": "204", "BE": "206", "CZ": "230",
                 "AT": "232", "CH": "228", "PL": "260", "PT": "268", "IE": "272", "SE": "240", "DK": "238",
                 "NO": "242", "FI": "244", "GR": "202", "HU": "216", "HR": "219", "RO": "226", "DE": "262",
                 "US": "310", "CA": "302", "MX": "334", "JP": "440", "KR": "450", "CN": "460", "AU": "505",
                 "NZ": "530", "BR": "724", "IN": "404", "SG": "525", "AE": "424", "TR": "286", "RU": "250",
                 "ZA": "655", "EG": "602", "HK": "454", "TH": "520", "ID": "510"}


def _zone(home: str, region: str) -> str:
    if home == "US":
        return "ROAM_NA" if region == "NA" else "ROAM_WORLD"
    return "ROAM_EU" if region == "EU" else "ROAM_WORLD"


def roaming_table(home: str) -> list[tuple[str, str]]:
    """(MCC or MCC+MNC prefix, roaming zone) rows for subscribers of ``home``, sorted by prefix."""
    region_of = {iso: region for _net, iso, region in FOREIGN_NETWORKS}
    rows = {}
    for iso, mcc in _COUNTRY_MCCS.items():
        if mcc not in HOME_MCCS[home]:
            rows[mcc] = _zone(home, region_of[iso])
    for network, iso, region in visited_networks(home):
        rows[network] = _zone(home, region)
    return sorted(rows.items())


def visited_networks(home: str) -> list[tuple[str, str, str]]:
    """Foreign networks subscribers of ``home`` roam on (never one in their own country)."""
    return [n for n in FOREIGN_NETWORKS if n[0][:3] not in HOME_MCCS[home]]
