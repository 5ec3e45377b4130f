"""Write an :class:`~pipelines.invoice.InvoiceData` as plain text or as one self-contained HTML page.

Both formats show the same tables, built once by :func:`invoice_tables`. Money is formatted from
integers (minor units, or micro-units for single events) with the currency's digits, never through
a float (``pipelines.money_text``). Units are human: minutes:seconds for voice, messages, KB/MB/GB for data (1 MB = 2^20
bytes, as in the tariffs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import zoneinfo

from pipelines.invoice import InvoiceData
from pipelines.money_text import format_micros, format_minor
from rating.identity import label as identity_label

_SERVICE_TITLES = {"VOICE": "Voice", "SMS": "SMS", "DATA": "Data"}
_UNIT_HINTS = {"VOICE": " (minutes:seconds)", "DATA": " (1 MB = 1,048,576 bytes)"}
_UNIT_OF_SERVICE = {"VOICE": "second", "SMS": "message", "DATA": "byte"}
_KB, _MB, _GB = 1 << 10, 1 << 20, 1 << 30


def format_units(units: int, unit: str | None) -> str:
    """Seconds as m:ss, messages and days counted, bytes as KB/MB/GB (binary, rounded half up)."""
    units = int(units)
    if unit == "second":
        minutes, seconds = divmod(units, 60)
        return f"{minutes:,}:{seconds:02d}"
    if unit == "message":
        return f"{units:,} msg"
    if unit == "day":
        return f"{units:,} day{'' if units == 1 else 's'}"
    if unit == "byte":
        if units < _MB:
            return f"{(units + _KB // 2) // _KB:,} KB"
        if units < _GB:
            tenths = (units * 10 + _MB // 2) // _MB
            return f"{tenths // 10:,}.{tenths % 10} MB"
        hundredths = (units * 100 + _GB // 2) // _GB
        return f"{hundredths // 100:,}.{hundredths % 100:02d} GB"
    return f"{units:,} {unit}" if unit else f"{units:,}"   # a declared count type's unit: 12 calls


@dataclasses.dataclass(frozen=True)
class Table:
    """One titled table of the invoice, every cell already a string."""
    key: str                          # stable id: usage-voice, allowances, fees, taxes, top-events ...
    title: str
    columns: tuple[str, ...]
    numeric: frozenset[int]           # right-aligned column indexes
    rows: tuple[tuple[str, ...], ...]
    late: tuple[bool, ...]            # per row: usage of a closed cycle billed late
    footer: tuple[str, ...] | None = None


def invoice_tables(data: InvoiceData) -> list[Table]:
    """The invoice's tables in reading order: usage by service, allowances, fees, other, taxes, top events."""
    lines = data.lines
    tables = []
    usage = lines.filter(lines["line_type"] == "USAGE")
    for service in sorted(set(usage["service"].to_list()), key=lambda s: (s not in _SERVICE_TITLES, s)):
        tables.append(_usage_table(data, usage.filter(usage["service"] == service), service))
    allowances = lines.filter(lines["line_type"] == "ALLOWANCE")
    if allowances.height:
        rows = [(r["item"] or "", _SERVICE_TITLES.get(r["service"], r["service"] or ""),
                 format_units(r["granted_units"], r["unit"]), format_units(r["free_units"], r["unit"]),
                 format_units(r["left_units"], r["unit"])) for r in allowances.iter_rows(named=True)]
        tables.append(Table("allowances", "Allowances", ("Allowance", "Service", "Granted", "Used", "Left"),
                            frozenset({2, 3, 4}), tuple(rows), (False,) * len(rows)))
    fees = lines.filter(lines["line_type"] == "PLAN_FEE")
    if fees.height:
        tables.append(_money_table(data, fees, "fees", "Plan fees", ("Fee", "Days"),
                                   lambda r: (r["description"], format_units(r["quantity"], r["unit"] or "day"))))
    other = lines.filter(~lines["line_type"].is_in(["USAGE", "ALLOWANCE", "PLAN_FEE", "TAX"]))
    if other.height:
        tables.append(_money_table(data, other, "other", "Adjustments and other lines", ("Type", "Description"),
                                   lambda r: (r["line_type"].replace("_", " ").capitalize(), r["description"])))
    taxes = lines.filter(lines["line_type"] == "TAX")
    if taxes.height:
        tables.append(_money_table(data, taxes, "taxes", "Taxes", ("Tax", "Usage of", "Lines taxed"),
                                   lambda r: (r["item"] or r["description"], r["service_cycle"], f"{r['quantity']:,}")))
    tables.append(_top_events_table(data))
    return tables


def _usage_table(data: InvoiceData, usage, service: str) -> Table:
    rows, late = [], []
    for r in usage.iter_rows(named=True):
        unit = r["unit"] or _UNIT_OF_SERVICE.get(service)
        rows.append((r["zone"] or "", r["band"] or "", f"{r['quantity']:,}", format_units(r["charged_units"], unit),
                     format_units(r["free_units"], unit), format_minor(r["amount_minor"], data.minor_digits),
                     f"LATE: usage of {r['service_cycle']}" if r["late"] else ""))
        late.append(bool(r["late"]))
    unit = usage["unit"][0] if usage.height and usage["unit"][0] else _UNIT_OF_SERVICE.get(service)
    footer = (f"{_SERVICE_TITLES.get(service, service)} total", "", f"{int(usage['quantity'].sum()):,}",
              format_units(usage["charged_units"].sum(), unit), format_units(usage["free_units"].sum(), unit),
              format_minor(int(usage["amount_minor"].sum()), data.minor_digits), "")
    title = f"{_SERVICE_TITLES.get(service, service)} usage{_UNIT_HINTS.get(service, '')}"
    return Table(f"usage-{service.lower()}", title,
                 ("Zone", "Band", "Events", "Charged", "Free", f"Amount {data.summary['currency']}", ""),
                 frozenset({2, 3, 4, 5}), tuple(rows), tuple(late), footer)


def _money_table(data: InvoiceData, lines, key: str, title: str, columns: tuple[str, ...], cells) -> Table:
    rows = tuple(tuple(cells(r)) + (format_minor(r["amount_minor"], data.minor_digits),)
                 for r in lines.iter_rows(named=True))
    footer = ("Total",) + ("",) * (len(columns) - 1) + (format_minor(int(lines["amount_minor"].sum()),
                                                                     data.minor_digits),)
    numeric = frozenset(i for i, c in enumerate(columns) if c in ("Days", "Lines taxed")) | {len(columns)}
    return Table(key, title, columns + (f"Amount {data.summary['currency']}",), numeric, rows,
                 (False,) * len(rows), footer)


def _subscriber(event: dict) -> str:
    """Who a rated event's subscriber is: its MSISDN, or the identity it was rated by (imsi:..., a SIP URI)."""
    if event["subscriber"] is None:
        return event["served_msisdn"]
    return identity_label(event["subscriber_kind"], event["subscriber"])


def _top_events_table(data: InvoiceData) -> Table:
    rows, late = [], []
    # one number of decimals for the column (exact: as many as the most precise charge needs)
    digits = max([data.minor_digits] + [len(format_micros(m, 0).partition(".")[2])
                                        for m in data.top_events["charge_micros"].to_list()])
    for rank, r in enumerate(data.top_events.iter_rows(named=True), start=1):
        unit = _UNIT_OF_SERVICE.get(r["service"])
        is_late = r["service_cycle"] != data.billing_cycle
        rows.append((str(rank), r["record_id"], _local_time(r["start_time"], data.timezone),
                     _SERVICE_TITLES.get(r["service"], r["service"]),
                     _subscriber(r), r["other_party"] or "", f"{r['zone']} {r['band']}",
                     format_units(r["charged_units"], unit), format_micros(r["charge_micros"], digits),
                     f"LATE: {r['service_cycle']}" if is_late else ""))
        late.append(is_late)
    where = data.timezone or "UTC"
    title = (f"{len(rows)} costliest events" if rows else "Costliest events") + (
        " (LATE: usage of an earlier, closed cycle)" if any(late) else "")
    return Table("top-events", title,
                 ("#", "Record", f"Start ({where})", "Service", "Subscriber", "Other party", "Zone, band", "Charged",
                  f"Charge {data.summary['currency']}", ""),
                 frozenset({0, 7, 8}), tuple(rows), tuple(late))


def _local_time(instant: dt.datetime, timezone: str | None) -> str:
    if timezone is not None:
        instant = instant.astimezone(zoneinfo.ZoneInfo(timezone))
    return instant.strftime("%Y-%m-%d %H:%M:%S")


def header_fields(data: InvoiceData) -> list[tuple[str, str]]:
    """(label, value) pairs of the invoice header."""
    s, money = data.summary, lambda v: f"{format_minor(v, data.minor_digits)} {data.summary['currency']}"
    if data.timezone is not None:
        zone = zoneinfo.ZoneInfo(data.timezone)
        first = s["cycle_start"].astimezone(zone).date()
        last = (s["cycle_end"].astimezone(zone) - dt.timedelta(days=1)).date()
        period = f"{first.isoformat()} to {last.isoformat()} ({data.timezone}, cycle day {data.bill_cycle_day})"
    else:
        period = (f"{s['cycle_start']:%Y-%m-%d %H:%M} UTC to {s['cycle_end']:%Y-%m-%d %H:%M} UTC "
                  f"(end exclusive; the account's timezone is unknown)")
    late = f" ({s['late_events']:,} late)" if s["late_events"] else ""
    return [("Account", data.account_id), ("Billing cycle", f"{data.billing_cycle}: {period}"),
            ("Currency", s["currency"]), ("Rated events", f"{s['rated_events']:,}{late}"),
            ("Subtotal", money(s["subtotal_minor"])), ("Tax", money(s["tax_minor"])),
            ("Total", money(s["total_minor"]))]


def render_text(data: InvoiceData) -> str:
    """The invoice as fixed-width plain text (UTF-8), ending with a newline."""
    title = f"INVOICE PREVIEW{' - ' + data.operator if data.operator else ''}"
    out = [title, "=" * len(title)]
    out += [f"{label:<15}{value}" for label, value in header_fields(data)]
    out += [f"NOTE: {warning}" for warning in data.warnings]
    for table in invoice_tables(data):
        out += ["", table.title, "-" * len(table.title)]
        out += _text_table(table) if table.rows else ["  (none)"]
    s, money = data.summary, lambda v: format_minor(v, data.minor_digits)
    width = max(len(money(v)) for v in (s["subtotal_minor"], s["tax_minor"], s["total_minor"]))
    out += ["", "Totals", "------",
            f"  Subtotal {money(s['subtotal_minor']):>{width}} {s['currency']}",
            f"  Tax      {money(s['tax_minor']):>{width}} {s['currency']}",
            f"  TOTAL    {money(s['total_minor']):>{width}} {s['currency']}", ""]
    return "\n".join(out)


def _text_table(table: Table) -> list[str]:
    body = list(table.rows) + ([table.footer] if table.footer else [])
    widths = [max(len(row[i]) for row in [table.columns] + body) for i in range(len(table.columns))]

    def line(cells):
        padded = (c.rjust(w) if i in table.numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  " + "  ".join(padded).rstrip()

    out = [line(table.columns)] + [line(row) for row in table.rows]
    if table.footer:
        footer = line(table.footer)
        out += ["  " + "-" * (len(footer) - 2), footer]
    return out


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif;color:#1d2430;margin:0;background:#eef1f5}
main{max-width:1160px;margin:24px auto;background:#fff;padding:32px 36px;box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid #1d4e89}
.operator{color:#5a6473;margin:0 0 20px}
.head{display:flex;gap:32px;justify-content:space-between;align-items:flex-start}
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;margin:0}
dt{color:#5a6473}
dd{margin:0}
.totals{border:2px solid #1d4e89;border-radius:6px;padding:12px 18px;min-width:260px}
.totals table{width:100%}
.totals td{padding:2px 0}
.totals .grand td{font-size:20px;font-weight:bold;border-top:1px solid #1d4e89;padding-top:6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:#5a6473;
   border-bottom:1px solid #c9d0da;padding:6px 8px}
td{padding:5px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
.num{text-align:right;white-space:nowrap}
tfoot td{font-weight:bold;border-top:1px solid #1d2430;border-bottom:none}
tr.late td{background:#fff4d6}
.badge{background:#b35c00;color:#fff;border-radius:3px;padding:0 5px;font-size:11px;font-weight:bold}
.notes{background:#fdecea;border:1px solid #e0a39b;padding:8px 12px;border-radius:4px;margin:16px 0}
.empty{color:#5a6473;font-style:italic}
#top-events td{white-space:nowrap;font-size:12.5px;padding:5px 5px}
@page{size:A4;margin:14mm}
@media print{
 body{background:#fff;font-size:11px}
 main{box-shadow:none;margin:0;max-width:none;padding:0}
 th{font-size:9px}
 #top-events td{font-size:9px;padding:3px}
 tr{break-inside:avoid}
 thead{display:table-header-group}
 h2{break-after:avoid}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def render_html(data: InvoiceData) -> str:
    """The invoice as one self-contained HTML page: inline CSS, no script, nothing fetched."""
    e = html.escape
    s = data.summary
    fields = dict(header_fields(data))
    money = lambda v: f"{format_minor(v, data.minor_digits)} {e(s['currency'])}"  # noqa: E731
    title = f"Invoice {data.account_id} {data.billing_cycle}"
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
             f"<style>{_CSS}</style></head><body><main>",
             f"<h1>Invoice preview: {e(data.account_id)}, {e(data.billing_cycle)}</h1>",
             f'<p class="operator">{e(data.operator or "")}</p><div class="head"><dl>']
    for label in ("Account", "Billing cycle", "Currency", "Rated events"):
        parts.append(f"<dt>{e(label)}</dt><dd>{e(fields[label])}</dd>")
    parts.append('</dl><div class="totals" id="totals"><table>'
                 f'<tr><td>Subtotal</td><td class="num">{money(s["subtotal_minor"])}</td></tr>'
                 f'<tr><td>Tax</td><td class="num">{money(s["tax_minor"])}</td></tr>'
                 f'<tr class="grand"><td>Total</td><td class="num" id="total">{money(s["total_minor"])}</td></tr>'
                 "</table></div></div>")
    if data.warnings:
        parts.append('<div class="notes">' + "".join(f"<p>{e(w)}</p>" for w in data.warnings) + "</div>")
    for table in invoice_tables(data):
        parts.append(_html_table(table))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    e = html.escape

    def cells(row, tag):
        out = []
        for i, cell in enumerate(row):
            text = e(cell)
            if cell.startswith("LATE: "):
                text = f'<span class="badge">LATE</span> {e(cell[len("LATE: "):])}'
            out.append(f'<{tag}{" class=num" if i in table.numeric else ""}>{text}</{tag}>')
        return "".join(out)

    out = [f'<section id="{e(table.key)}"><h2>{e(table.title)}</h2>']
    if not table.rows:
        return out[0] + '<p class="empty">None.</p></section>'
    out.append(f"<table><thead><tr>{cells(table.columns, 'th')}</tr></thead><tbody>")
    out += [f'<tr{" class=late" if late else ""}>{cells(row, "td")}</tr>' for row, late in zip(table.rows, table.late)]
    out.append("</tbody>")
    if table.footer:
        out.append(f"<tfoot><tr>{cells(table.footer, 'td')}</tr></tfoot>")
    out.append("</table></section>")
    return "\n".join(out)
