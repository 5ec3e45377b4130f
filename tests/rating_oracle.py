"""Compare the rating kernels with their slow twin (``rating.twin``), row by row, exactly."""

from __future__ import annotations

from cdr_schemas.reasons import Reason
from rating.twin import rate_rows_twin
from tests.usage_rows import usage_batch

# Fields the rated output and the twin both give, under the same name.
COMPARED = ("charge_micros", "charged_units", "free_units", "band", "band_split", "tier", "connect_fee_micros",
            "rate_id", "zone", "rounding_nanos", "destination_e164", "plan_version", "raw_units", "account_id")


def kernel_view(rated_row: dict) -> dict:
    """What the twin can be compared on, from one row of the rated output."""
    view = {f: rated_row[f] for f in COMPARED}
    view["plan_id"] = rated_row["plan_id"]
    view["service_cycle"] = rated_row["service_cycle"]
    view["allowance_units"] = [(a["allowance"], a["units"]) for a in rated_row["allowance_units"]]
    return view


def twin_view(twin_row: dict) -> dict:
    view = {f: twin_row[f] for f in COMPARED}
    view["plan_id"] = twin_row["plan"].plan_id
    view["service_cycle"] = twin_row["cycle"]
    view["allowance_units"] = twin_row["allowance_units"]
    return view


def assert_same_as_twin(engine, reference, rows: list[dict]):
    """Rate ``rows`` (usage row dicts) with ``engine`` and with the twin; every row must end the same:
    the same reject reason, or the same priced fields and allowance use. Returns (rated, rejected, twin)."""
    rated, rejected = engine.rate(usage_batch(rows))
    assert rated.num_rows + rejected.num_rows == len(rows)
    by_key = {(r["source"], r["record_id"]): r for r in rated.to_pylist()}
    rejected_by_key = {(r["source"], r["record_id"]): r["reason"] for r in rejected.to_pylist()}
    twin_rows = rate_rows_twin(rows, reference)
    for row, twin in zip(rows, twin_rows):
        key = (row["source"], row["record_id"])
        if twin["reason"] != Reason.RATED:
            got = rejected_by_key.get(key, "RATED" if key in by_key else "missing")
            assert got == twin["reason"].name, (
                f"kernel: {got}, twin: {twin['reason'].name}\nrow: {row}\n"
                f"kernel output: {by_key.get(key)}")
            continue
        assert key in by_key, f"kernel rejected {rejected_by_key.get(key)}, twin rated\nrow: {row}\ntwin: {twin}"
        got, want = kernel_view(by_key[key]), twin_view(twin)
        if got != want:
            diff = {f: (got[f], want[f]) for f in got if got[f] != want[f]}
            raise AssertionError(f"kernel != twin on {{field: (kernel, twin)}} {diff}\nrow: {row}\n"
                                 f"kernel: {got}\ntwin: {want}")
    return rated, rejected, twin_rows
