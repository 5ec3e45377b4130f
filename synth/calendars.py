"""Public holidays of the home countries (Germany nationwide, England and Wales, US federal)."""

from __future__ import annotations

import datetime as dt


def easter_sunday(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based; -1 = last) ``weekday`` (0 = Monday) of a month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1))
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed_uk(dates: list[tuple[dt.date, str]]) -> list[tuple[dt.date, str]]:
    """Move holidays falling on a weekend to the next free weekday (UK substitute days)."""
    taken = {d for d, _ in dates}
    out = []
    for day, name in sorted(dates):
        if day.weekday() >= 5:
            substitute = day + dt.timedelta(days=7 - day.weekday())
            while substitute in taken:
                substitute += dt.timedelta(days=1)
            taken.add(substitute)
            out.append((substitute, f"{name} (substitute day)"))
        else:
            out.append((day, name))
    return out


def _observed_us(day: dt.date) -> dt.date:
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


def holidays(country: str, year: int) -> list[tuple[dt.date, str]]:
    """(date, name) of the public holidays of ``country`` ("DE", "GB", "US") in ``year``."""
    easter = easter_sunday(year)
    if country == "DE":
        return sorted([
            (dt.date(year, 1, 1), "Neujahr"), (easter - dt.timedelta(days=2), "Karfreitag"),
            (easter + dt.timedelta(days=1), "Ostermontag"), (dt.date(year, 5, 1), "Tag der Arbeit"),
            (easter + dt.timedelta(days=39), "Christi Himmelfahrt"),
            (easter + dt.timedelta(days=50), "Pfingstmontag"), (dt.date(year, 10, 3), "Tag der Deutschen Einheit"),
            (dt.date(year, 12, 25), "1. Weihnachtstag"), (dt.date(year, 12, 26), "2. Weihnachtstag"),
        ])
    if country == "GB":
        fixed = _observed_uk([(dt.date(year, 1, 1), "New Year's Day"), (dt.date(year, 12, 25), "Christmas Day"),
                              (dt.date(year, 12, 26), "Boxing Day")])
        return sorted(fixed + [
            (easter - dt.timedelta(days=2), "Good Friday"), (easter + dt.timedelta(days=1), "Easter Monday"),
            (_nth_weekday(year, 5, 0, 1), "Early May bank holiday"), (_nth_weekday(year, 5, 0, -1), "Spring bank holiday"),
            (_nth_weekday(year, 8, 0, -1), "Summer bank holiday"),
        ])
    if country == "US":
        return sorted([
            (_observed_us(dt.date(year, 1, 1)), "New Year's Day"), (_nth_weekday(year, 1, 0, 3), "Martin Luther King Jr. Day"),
            (_nth_weekday(year, 2, 0, 3), "Washington's Birthday"), (_nth_weekday(year, 5, 0, -1), "Memorial Day"),
            (_observed_us(dt.date(year, 6, 19)), "Juneteenth"), (_observed_us(dt.date(year, 7, 4)), "Independence Day"),
            (_nth_weekday(year, 9, 0, 1), "Labor Day"), (_nth_weekday(year, 10, 0, 2), "Columbus Day"),
            (_observed_us(dt.date(year, 11, 11)), "Veterans Day"), (_nth_weekday(year, 11, 3, 4), "Thanksgiving Day"),
            (_observed_us(dt.date(year, 12, 25)), "Christmas Day"),
        ])
    raise ValueError(f"no holiday calendar for country {country!r}; known: DE, GB, US")


def holiday_rows(country: str, first_year: int, last_year: int) -> list[tuple[str, str]]:
    """(ISO date, name) rows for the years ``first_year..last_year``, unique dates, sorted."""
    rows: dict[str, str] = {}
    for year in range(first_year, last_year + 1):
        for day, name in holidays(country, year):
            rows.setdefault(day.isoformat(), name)
    return sorted(rows.items())
