"""``usage-rating invoice``: one account's invoice read back from a real output store.

Two stores are built once per module from the same generated month: one with every cycle open,
one with 2025-12 closed (its usage billed late on 2026-01). Expected values are computed here
independently, with Polars, from whole-table reads of the store's Iceberg tables.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.expressions import EqualTo

from pipelines.batch import run_batch
from pipelines.cli import main
from synth import GeneratorConfig, generate
from pipelines.invoice import load_invoice, rated_events_query
from pipelines.invoice_render import format_micros, format_minor, format_units, render_html, render_text
from pipelines.options import BatchConfig
from sinks.iceberg import IcebergStore
from tests.month_cdrs import month_rows, reference_with, rerate, write_jsonl
from tests.paths import DIRECT

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("invoice-gen")
    generate(GeneratorConfig(out_dir=out, subscribers=120, records=5_000, days=30, files=2, fmt="parquet", seed=7))
    return out


def _store(generated: Path, output: Path, closed_through: str | None, reference: Path | None = None) -> Path:
    reference = reference or generated / "reference"
    config = BatchConfig(input_glob=str(generated / "cdrs" / "*"), reference_dir=str(reference),
                         output_dir=str(output), shards=4, batch_size=1000, closed_through=closed_through)
    assert run_batch(config, DIRECT)["balanced"]
    return output


@pytest.fixture(scope="module")
def store(generated, tmp_path_factory) -> Path:
    return _store(generated, tmp_path_factory.mktemp("invoice-open") / "out", None)


@pytest.fixture(scope="module")
def late_store(generated, tmp_path_factory) -> Path:
    return _store(generated, tmp_path_factory.mktemp("invoice-late") / "out", "2025-12")


def _table(store: Path, table: str) -> pl.DataFrame:
    """Every row of ``table`` as of the store's latest run."""
    return pl.from_arrow(IcebergStore.open(str(store), create=False).read(table))


def _summaries(store: Path) -> pl.DataFrame:
    return _table(store, "invoices")


def _lines(store: Path, account: str, cycle: str) -> pl.DataFrame:
    lines = _table(store, "charges")
    return lines.filter((pl.col("account_id") == account) & (pl.col("billing_cycle") == cycle))


def _busiest(store: Path, cycle: str, *, late: bool = False) -> str:
    """The account with the most rated events on its ``cycle`` invoice (with late events if asked)."""
    summaries = _summaries(store).filter(pl.col("billing_cycle") == cycle)
    if late:
        summaries = summaries.filter(pl.col("late_events") > 0)
    return summaries.sort(["rated_events", "account_id"], descending=[True, False])["account_id"][0]


def _expected_top_ten(store: Path, account: str, cycle: str) -> list[str]:
    """Record ids of the ten costliest events billed on the invoice, from every rated event of the store."""
    usage = _lines(store, account, cycle).filter(pl.col("line_type") == "USAGE")
    service_cycles = set(usage["service_cycle"].to_list())
    events = _table(store, "rated")
    billed = events.filter((pl.col("account_id") == account) & pl.col("service_cycle").is_in(service_cycles))
    summary = _summaries(store).filter((pl.col("account_id") == account) & (pl.col("billing_cycle") == cycle))
    assert billed.height == summary["rated_events"][0]  # the service cycles are exactly the invoice's usage
    top = billed.sort(["charge_micros", "start_time", "record_id"], descending=[True, False, False]).head(10)
    return top["record_id"].to_list()


def _section(text: str, title: str) -> list[str]:
    """Lines of one section of the text invoice (from its title to the next blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 2:end]


# --- formatting helpers -------------------------------------------------------------------------

def test_money_is_formatted_exactly_from_integers():
    assert format_minor(154181, 2) == "1,541.81"
    assert format_minor(-5, 2) == "-0.05"
    assert format_minor(1234, 0) == "1,234"
    assert format_minor(1234567, 3) == "1,234.567"
    assert format_minor(2 ** 62 + 1, 2) == "46,116,860,184,273,879.05"  # beyond a float's 53 bits
    assert format_micros(49_000, 2) == "0.049"
    assert format_micros(2_000_000, 2) == "2.00"
    assert format_micros(-1_347_333, 2) == "-1.347333"
    assert format_micros(7_000_000, 0) == "7"


def test_units_are_human():
    assert format_units(125, "second") == "2:05"
    assert format_units(4_500, "second") == "75:00"
    assert format_units(3, "message") == "3 msg"
    assert format_units(31, "day") == "31 days"
    assert format_units(0, "byte") == "0 KB"
    assert format_units(1536, "byte") == "2 KB"
    assert format_units(3 * (1 << 19), "byte") == "1.5 MB"
    assert format_units(3 << 30, "byte") == "3.00 GB"


# --- data and text ------------------------------------------------------------------------------

def test_text_invoice_shows_every_line_group_and_the_summary_total(store):
    account = _busiest(store, "2026-01")
    data = load_invoice(store, account)
    assert data.billing_cycle == "2026-01"  # default: the account's latest cycle
    text = render_text(data)
    summary = _summaries(store).filter((pl.col("account_id") == account) & (pl.col("billing_cycle") == "2026-01"))
    total = format_minor(summary["total_minor"][0], data.minor_digits)
    currency = summary["currency"][0]
    assert f"Account        {account}" in text
    assert re.search(rf"^  TOTAL +{re.escape(total)} {currency}$", text, re.M)
    assert f"Total          {total} {currency}" in text  # and in the header
    lines = _lines(store, account, "2026-01")
    titles = {"VOICE": "Voice usage", "SMS": "SMS usage", "DATA": "Data usage"}
    usage = lines.filter(pl.col("line_type") == "USAGE")
    assert usage.height and lines.filter(pl.col("line_type") == "PLAN_FEE").height
    money = lambda minor: format_minor(minor, data.minor_digits)  # noqa: E731
    for service in set(usage["service"].to_list()):
        section = _section(text, titles[service])
        expected = usage.filter(pl.col("service") == service)
        assert len(section) == 1 + expected.height + 2  # header, one row per line, rule and subtotal
        for zone, band, amount in expected.select(["zone", "band", "amount_minor"]).iter_rows():
            assert any(re.match(rf"  {zone} +{band} .* {re.escape(money(amount))}$", row) for row in section)
        assert section[-1].endswith(money(int(expected["amount_minor"].sum())))
    for line_type, title, label in (("ALLOWANCE", "Allowances", "item"), ("PLAN_FEE", "Plan fees", "description"),
                                    ("TAX", "Taxes", "item")):
        group = lines.filter(pl.col("line_type") == line_type)
        if group.height:
            section = "\n".join(_section(text, title))
            assert all(value in section for value in group[label].to_list())
            if line_type != "ALLOWANCE":
                assert section.endswith(money(int(group["amount_minor"].sum())))


def test_an_earlier_cycle_can_be_asked_for(store):
    account = _busiest(store, "2025-12")
    data = load_invoice(store, account, "2025-12")
    summary = _summaries(store).filter((pl.col("account_id") == account) & (pl.col("billing_cycle") == "2025-12"))
    assert data.summary["total_minor"] == summary["total_minor"][0]
    assert "2025-12" in data.account_cycles and data.account_cycles == tuple(sorted(data.account_cycles))
    assert set(data.top_events["service_cycle"].to_list()) == {"2025-12"}


def test_ten_costliest_events_are_the_true_top_ten_in_descending_order(store):
    account = _busiest(store, "2026-01")
    data = load_invoice(store, account)
    expected = _expected_top_ten(store, account, "2026-01")
    assert data.top_events["record_id"].to_list() == expected
    rows = _section(render_text(data), "10 costliest events")[1:]
    assert [row.split()[1] for row in rows] == expected
    charges = [int(re.sub(r"[,.]", "", row.split()[-1])) for row in rows]  # same decimals on every row
    assert charges == sorted(charges, reverse=True) and charges[0] > 0


def test_late_usage_is_marked_with_its_service_cycle(late_store):
    account = _busiest(late_store, "2026-01", late=True)
    data = load_invoice(late_store, account, "2026-01")
    lines = _lines(late_store, account, "2026-01")
    late_lines = lines.filter(pl.col("late"))
    assert late_lines.height > 0 and set(late_lines["service_cycle"].to_list()) == {"2025-12"}
    text = render_text(data)
    assert text.count("LATE: usage of 2025-12") == late_lines.height
    assert f"({data.summary['late_events']:,} late)" in text
    # the costliest events span both service cycles billed on this invoice
    assert data.top_events["record_id"].to_list() == _expected_top_ten(late_store, account, "2026-01")
    late_events = data.top_events.filter(pl.col("service_cycle") == "2025-12").height
    assert "\n".join(_section(text, "10 costliest events")).count("LATE: 2025-12") == late_events
    with pytest.raises(ValueError, match=r"no invoice for 2025-12 .* its billing cycles: 2026-01$"):
        load_invoice(late_store, account, "2025-12")  # closed: its usage went to 2026-01


def test_rated_events_are_read_with_the_account_filter_in_the_scan(store, monkeypatch):
    account = _busiest(store, "2026-01")
    iceberg = IcebergStore.open(str(store), create=False)
    scans = []
    scan = iceberg.scan
    monkeypatch.setattr(iceberg, "scan", lambda *args, **kwargs: scans.append(scan(*args, **kwargs)) or scans[-1])
    events = rated_events_query(iceberg, account, ["2026-01"]).collect()
    assert events.height and set(events["service_cycle"]) == {"2026-01"}
    [rated] = scans
    assert "account_id" in str(rated.row_filter) and account in str(rated.row_filter)
    # other service cycles' partitions are pruned: only 2026-01's files are planned
    planned = list(rated.plan_files())
    assert {str(task.file.partition[0]) for task in planned} == {"2026-01"}
    assert iceberg.partition_values("rated") > {"2026-01"}
    # each shard holds a range of account ids (rating.partition): of the cycle's files, only the one
    # whose account_id bounds hold the account is planned
    files = [task for task in iceberg.scan("rated", row_filter=EqualTo("service_cycle", "2026-01")).plan_files()]
    assert len(files) > 1 and len(planned) == 1


def test_unknown_account_or_cycle_says_what_exists(store, tmp_path):
    account = _busiest(store, "2026-01")
    with pytest.raises(ValueError, match=r"account 'NOPE' has no invoice .* accounts have one, e\.g\. ACC"):
        load_invoice(store, "NOPE")
    with pytest.raises(ValueError, match=rf"account '{account.lower()}' has no invoice .*{account}"):
        load_invoice(store, account.lower())
    with pytest.raises(ValueError, match=rf"{account} has no invoice for 2024-01 .*: 2025-12, 2026-01$"):
        load_invoice(store, account, "2024-01")
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        load_invoice(store, account, "January")
    with pytest.raises(ValueError, match="is not a rating store"):
        load_invoice(tmp_path, account)


# --- command line -------------------------------------------------------------------------------

def test_cli_prints_the_invoice_and_exits_0(store, capsys):
    account = _busiest(store, "2026-01")
    assert main(["invoice", "--output", str(store), "--account", account]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("INVOICE PREVIEW") and account in captured.out
    assert captured.err == ""


def test_cli_errors_exit_1_with_a_message(store, tmp_path, capsys):
    assert main(["invoice", "--output", str(store), "--account", "NOPE"]) == 1
    assert capsys.readouterr().err.startswith("usage-rating invoice: account 'NOPE' has no invoice")
    account = _busiest(store, "2026-01")
    assert main(["invoice", "--output", str(store), "--account", account, "--cycle", "2030-01"]) == 1
    assert "its billing cycles: 2025-12, 2026-01" in capsys.readouterr().err
    assert main(["invoice", "--output", str(store), "--account", account, "--out", str(tmp_path / "no" / "x")]) == 1
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["invoice", "--output", str(store), "--account", account, "--format", "pdf"])
    assert exit_.value.code == 2


def test_cli_writes_html_to_a_file(store, tmp_path, capsys):
    account = _busiest(store, "2026-01")
    target = tmp_path / "invoice.html"
    assert main(["invoice", "--output", str(store), "--account", account, "--format", "html",
                 "--out", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_digits_come_from_the_runs_reference_and_fall_back_to_2_with_a_warning(generated, tmp_path, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(generated / "reference", reference)
    copy = _store(generated, tmp_path / "out", None, reference)  # the run log names this reference
    account = _busiest(copy, "2026-01")
    total = _summaries(copy).filter((pl.col("account_id") == account)
                                    & (pl.col("billing_cycle") == "2026-01"))["total_minor"][0]
    operator = reference / "operator.yaml"
    operator.write_text(re.sub(r"minor_unit_digits: 2", "minor_unit_digits: 3", operator.read_text()))
    assert main(["invoice", "--output", str(copy), "--account", account]) == 0
    assert f"TOTAL    {format_minor(total, 3)} " in capsys.readouterr().out

    shutil.rmtree(reference)
    assert main(["invoice", "--output", str(copy), "--account", account]) == 0
    captured = capsys.readouterr()
    assert "usage-rating invoice: warning: reference data" in captured.err and "2 decimals" in captured.err
    assert f"TOTAL    {format_minor(total, 2)} " in captured.out
    assert "UTC" in captured.out


# --- HTML ---------------------------------------------------------------------------------------

class _Structure(html.parser.HTMLParser):
    """Tags, section ids, late rows, the text of #total, and anything that would fetch or run."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.sections: list[str] = []
        self.late_rows = 0
        self.total = ""
        self._in_total = False
        self.fetching: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "tr" and attrs.get("class") == "late":
            self.late_rows += 1
        self._in_total = attrs.get("id") == "total"
        for name in ("src", "href", "action"):
            if name in attrs:
                self.fetching.append(f"{tag} {name}={attrs[name]}")

    def handle_data(self, data):
        if self._in_total:
            self.total += data

    def handle_endtag(self, tag):
        self._in_total = False


def test_html_is_one_self_contained_page(late_store):
    account = _busiest(late_store, "2026-01", late=True)
    data = load_invoice(late_store, account)
    page = render_html(data)
    parser = _Structure()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>") and parser.tags[:2] == ["html", "head"]
    assert "style" in parser.tags and "script" not in parser.tags and "link" not in parser.tags
    assert parser.fetching == [] and "url(" not in page and "@import" not in page
    services = {"VOICE": "usage-voice", "SMS": "usage-sms", "DATA": "usage-data"}
    usage = data.lines.filter(pl.col("line_type") == "USAGE")
    expected = [services[s] for s in ("DATA", "SMS", "VOICE") if s in set(usage["service"].to_list())]
    assert parser.sections[:len(expected)] == expected
    assert {"fees", "taxes", "top-events"} <= set(parser.sections)
    assert parser.total == f"{format_minor(data.summary['total_minor'], data.minor_digits)} {data.summary['currency']}"
    late_events = data.top_events.filter(pl.col("service_cycle") != "2026-01").height
    assert parser.late_rows == data.lines.filter(pl.col("late")).height + late_events


def _png_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct RGB colours) of an 8-bit RGB(A) PNG, decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "expected 8-bit RGB(A), not interlaced"
        elif kind == b"IDAT":
            idat.append(body)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    previous = bytearray(stride)
    colours = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride) if kind else ():  # undo the row filter (PNG spec, section 9)
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], (previous[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        previous = line
    return width, height, len(colours)


@pytest.fixture
def chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed; run tests/install_system_deps.sh (as root) to get it"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} - CI must run the browser check")
        pytest.skip(reason)
    return path


def _headless(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_html_renders_in_a_real_browser(late_store, chromium, tmp_path):
    account = _busiest(late_store, "2026-01", late=True)
    data = load_invoice(late_store, account)
    page = tmp_path / "invoice.html"
    page.write_text(render_html(data), encoding="utf-8")
    total = f"{format_minor(data.summary['total_minor'], data.minor_digits)} {data.summary['currency']}"

    png = tmp_path / "invoice.png"
    shot = _headless(chromium, tmp_path, f"--screenshot={png}", "--window-size=1200,1600", page.as_uri())
    assert png.is_file(), f"no screenshot; chromium said: {shot.stderr[-2000:]}"
    assert png.stat().st_size > 20_000
    width, height, colours = _png_colours(png)
    assert (width, height) == (1200, 1600)
    assert colours > 50, f"the screenshot has {colours} colour(s): the page did not render"

    dom = _headless(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'id="total">{total}<' in dom.stdout
    assert "10 costliest events" in dom.stdout and 'class="late"' in dom.stdout


# --- re-rated cycles ----------------------------------------------------------------------------

def test_invoice_reads_the_current_version_of_re_rated_cycles(reference_min_dir, tmp_path):
    """An open re-rate replaces the cycle's lines, summaries and events; a closed one adds adjustments
    to the next invoice. The invoice shows what the store holds after the latest run, and, as of
    an earlier run, what it held then."""
    month = tmp_path / "month"
    shutil.copytree(reference_min_dir, month / "reference")
    write_jsonl(month / "cdrs" / "a.jsonl", month_rows())
    out = month / "store"
    run_batch(BatchConfig(input_glob=str(month / "cdrs" / "*"), reference_dir=str(month / "reference"),
                          output_dir=str(out), shards=3), DIRECT)
    account = "ACC000001"  # MOBILE_S calls to France (EUROPE) in January, calls in February
    europe = (pl.col("line_type") == "USAGE") & (pl.col("zone") == "EUROPE")
    before = load_invoice(out, account, "2026-01")

    def read(table, column, value):
        return pl.from_arrow(IcebergStore.open(str(out), create=False).read(table, row_filter=EqualTo(column, value)))

    def check_current(data, cycle):
        expected = read("charges", "billing_cycle", cycle).filter(pl.col("account_id") == account)
        key = ["line_type", "service_cycle", "service", "zone", "band", "item"]
        assert data.lines.sort(key, nulls_last=False).equals(expected.sort(key, nulls_last=False))
        summary = read("invoices", "billing_cycle", cycle).filter(pl.col("account_id") == account).row(0, named=True)
        assert data.summary == summary and not any("add up" in w for w in data.warnings)
        cycles = sorted(set(data.lines.filter(pl.col("line_type") == "USAGE")["service_cycle"]))
        events = pl.concat([read("rated", "service_cycle", c) for c in cycles]).filter(
            pl.col("account_id") == account)
        top = events.sort(["charge_micros", "start_time", "record_id"], descending=[True, False, False]).head(10)
        assert data.top_events.select(["record_id", "charge_micros"]).equals(top.select(["record_id", "charge_micros"]))
        return expected

    # Open cycle: a higher EUROPE price replaces 2026-01's lines, summary and events.
    first = rerate(month, out, reference_with(month, tmp_path / "v2", europe_price="0.35"))
    assert first["version"] == first["previous_version"] + 1
    rerated = load_invoice(out, account, "2026-01")
    check_current(rerated, "2026-01")
    old, new = (int(d.lines.filter(europe)["amount_micros"].sum()) for d in (before, rerated))
    assert new > old > 0 and rerated.summary["total_minor"] > before.summary["total_minor"]
    assert rerated.top_events["charge_micros"].max() > before.top_events["charge_micros"].max()
    assert "ADJUSTMENT" not in rerated.lines["line_type"].to_list()

    # The invoice as it was before the re-rate stays readable (as of the batch run).
    batch_run = IcebergStore.open(str(out), create=False).runs()[-2].run_id
    earlier = load_invoice(out, account, "2026-01", as_of=batch_run)
    assert earlier.summary == before.summary and earlier.lines.equals(before.lines)

    # Closed cycle: 2026-01 stays as billed (first re-rate); the credit lands on the 2026-02 invoice.
    february = load_invoice(out, account, "2026-02")
    IcebergStore.open(str(out), create=False).close_cycles("close-2026-01", "2026-01")
    second = rerate(month, out, reference_with(month, tmp_path / "v3", europe_price="0.29"))
    assert second["closed"] and second["version"] == second["previous_version"] + 1 > first["version"]
    billed = load_invoice(out, account, "2026-01")
    assert billed.lines.equals(rerated.lines) and billed.summary == rerated.summary
    adjusted = load_invoice(out, account, "2026-02")
    check_current(adjusted, "2026-02")
    adjustments = adjusted.lines.filter(pl.col("line_type") == "ADJUSTMENT")
    assert adjustments.height == 1 and adjustments.row(0, named=True)["service_cycle"] == "2026-01"
    assert adjustments["late"].all() and adjustments["amount_micros"][0] == old - new
    added = adjusted.lines.filter(pl.col("service_cycle") == "2026-01")
    assert sorted(added["line_type"].to_list()) == ["ADJUSTMENT", "TAX"]  # the credit and its tax
    assert adjusted.lines.filter(pl.col("service_cycle") != "2026-01").equals(february.lines)
    assert adjusted.summary["total_minor"] == february.summary["total_minor"] + int(added["amount_minor"].sum()) < \
        february.summary["total_minor"]
    assert adjustments["description"][0] in "\n".join(_section(render_text(adjusted), "Adjustments and other lines"))


def test_an_invoice_reads_only_the_operator_and_its_account_of_the_reference(store, monkeypatch):
    """A big operator's reference takes seconds to load (a million subscriptions); an invoice needs
    operator.yaml and one row of accounts.csv, so it never loads the rest."""
    import rating.reference
    import rating.reference.loader

    def whole_reference(*args, **kwargs):
        raise AssertionError("load_reference called by an invoice")

    monkeypatch.setattr(rating.reference.loader, "load_reference", whole_reference)
    monkeypatch.setattr(rating.reference, "load_reference", whole_reference)
    data = load_invoice(store, _busiest(store, "2026-01"))
    assert data.warnings == () and data.timezone and data.bill_cycle_day and data.operator
