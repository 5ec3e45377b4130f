"""A month of traffic on ``tests/data/reference_min``, as JSON lines, and the re-rate helpers the
re-rate, invoice and store tests share: each expected change can be named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.rerate import RerateConfig, run_rerate
from tests.paths import DIRECT

DE_S = "4915100000001"      # ACC000001 (bill cycle day 1), MOBILE_S
DE_L = "4915100000002"      # ACC000001, MOBILE_L
DE_S15 = "4915100000003"    # ACC000002 (bill cycle day 15), MOBILE_S in January
UK = "447700900001"         # ACC000004, GBP, UK_BASIC
UNKNOWN = "4915100000099"   # no subscription in reference_min
FRANCE = "0033123456789"    # EUROPE for both numbering plans
BERLIN = "030123456"        # NATIONAL


def cdr(n: int, msisdn: str, start: str, service: str = "VOICE", other: str | None = BERLIN, duration_s: int = 0,
        source: str = "MSC-1") -> dict:
    """One JSON-lines usage record: record id ``n`` (six digits), a call unless ``service`` says not."""
    return {"record_id": f"{n:06d}", "source": source, "service": service, "served_msisdn": msisdn,
            "other_party": other, "start_time": start, "duration_s": duration_s,
            "message_count": 1 if service == "SMS" else 0}


def write_jsonl(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))


def month_rows() -> list[dict]:
    """January traffic of four subscribers (calls to France and Berlin, SMS), a few February calls,
    and a call from a subscriber the reference data does not know."""
    rows, n = [], 0
    for msisdn in (DE_S, DE_L, DE_S15, UK):
        for day in range(5, 27, 3):
            for hour in (9, 21):
                start = f"2026-01-{day:02d}T{hour:02d}:15:00Z"
                rows.append(cdr(n := n + 1, msisdn, start, other=FRANCE, duration_s=95 + day))
                rows.append(cdr(n := n + 1, msisdn, start.replace(":15:", ":40:"), duration_s=200 + hour))
                rows.append(cdr(n := n + 1, msisdn, start.replace(":15:", ":50:"), service="SMS",
                                other="015112345678"))
    rows += [cdr(n := n + 1, DE_S, "2026-02-05T10:00:00Z", other=FRANCE, duration_s=300),
             cdr(n := n + 1, DE_S, "2026-02-06T10:00:00Z", duration_s=120),
             cdr(n := n + 1, UNKNOWN, "2026-01-10T12:00:00Z", other=FRANCE, duration_s=60)]
    return rows


def reference_with(month: Path, tmp_path: Path, *, europe_price: str | None = None,
                   subscription: str | None = None) -> Path:
    """A copy of ``month/reference`` with the EUROPE voice price of MOBILE_S changed and/or one more
    subscriptions.csv row."""
    ref = tmp_path / "reference-new"
    shutil.copytree(month / "reference", ref)
    if europe_price is not None:
        plan = ref / "plans" / "MOBILE_S.yaml"
        text = plan.read_text()
        assert text.count('price: "0.29"') == 1  # the EUROPE voice rate of version 1
        plan.write_text(text.replace('price: "0.29"', f'price: "{europe_price}"'))
    if subscription is not None:
        with open(ref / "subscriptions.csv", "a") as f:
            f.write(subscription + "\n")
    return ref


def rerate(month: Path, out: Path, reference: Path, *, glob: str | None = None, **options) -> dict:
    """Re-rate a cycle (default 2026-01) of ``month/cdrs`` into the store ``out``."""
    config = RerateConfig(cycle=options.pop("cycle", "2026-01"), input_glob=glob or str(month / "cdrs" / "*"),
                          reference_dir=str(reference), output_dir=str(out), shards=3, **options)
    return run_rerate(config, DIRECT)
