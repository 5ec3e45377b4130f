"""The checks every fuzz case must pass, comparing its run with the unmutated one.

``evaluate`` returns {check name: None when it held, or a message saying what broke}; a check
missing from the dict did not apply to the case. The blast-radius checks compare the case's run
with a reference run: the baseline input plus, for the record kinds, the added records that were
not mutated. Accounts that received a *rated mutated* record (for file kinds: any rated added
record) may legitimately change: their other records stay rated and keep every field that does
not depend on earlier usage (allowances and tiers do; not even monotonically: an earlier event
in smaller increments can leave a remainder a later one uses). Everything else is identical.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas.decoders import InputFileError
from tests.fuzz.cases import Case
from tests.fuzz.library import Outcome

CHECKS = ("no_crash", "file_refusal", "records_accounted", "record_count", "originals_unchanged",
          "charges_unchanged", "intact_rated", "rated_values", "no_hang", "memory_bounded")
DESCRIPTIONS = {
    "no_crash": "no exception but InputFileError naming the file",
    "file_refusal": "a whole file refused only when it is broken as a whole",
    "records_accounted": "records in = rated + rejected + duplicates",
    "record_count": "the input's records counted exactly, never more than its bytes",
    "originals_unchanged": "every other record rated, rejected or duplicate as without the mutation",
    "charges_unchanged": "charge lines and invoices of untouched accounts unchanged",
    "intact_rated": "untouched added records still rated (no collateral rejects)",
    "rated_values": "rated added records hold the exact units and start written, nothing negative",
    "no_hang": "each case within its time limit",
    "memory_bounded": "each case within its memory limit",
}
_PROVENANCE = ["input_file", "input_position"]
# Fields of a rated row that do not depend on the account's earlier usage in the cycle.
_STATELESS = ("service", "served_msisdn", "other_party", "destination_e164", "start_time", "account_id", "plan_id",
              "plan_version", "currency", "service_cycle", "zone", "band", "band_split", "raw_units")
_MAX_SHOWN = 3


def refusal_checks(case: Case, error: InputFileError, path: str) -> dict:
    """A file case whose input was refused as a whole."""
    named = error.path == path or path in str(error)
    if not case.may_refuse:
        problem = f"the file was refused as a whole, but its damage is local to records: {error}"
    elif not named:
        problem = f"the refusal does not name the file {path}: {error}"
    else:
        problem = None
    return {"no_crash": None, "file_refusal": problem}


def evaluate(case: Case, labels: list[str], added_records_in: dict[str, int], baseline_files: set[str],
             reference: Outcome, outcome: Outcome) -> dict:
    """All checks of a case whose input decoded (not refused). ``labels``: the ``input_file`` of the
    added file, or of each message in order; ``added_records_in``: records decoded from each."""
    results = {"no_crash": None}
    added_labels = set(labels)
    added = _is_added(outcome.rated, added_labels)
    if case.file_name is not None:
        results["file_refusal"] = ("the file was accepted, but it is broken as a whole and must be refused"
                                   if case.must_refuse else None)
    results["records_accounted"] = _accounted(outcome, added_labels, added_records_in)
    results["record_count"] = _record_count(case, outcome, labels, added_records_in)
    rated_added = outcome.rated.filter(added)
    mutated_rated = rated_added.filter(pc.invert(pc.is_in(rated_added.column("record_id"),
                                                         pa.array(sorted(case.intact), pa.string()))))
    touched_rows = mutated_rated if case.reference_rows is not None else rated_added
    touched = set(touched_rows.column("account_id").to_pylist())
    results["originals_unchanged"] = _originals(reference, outcome, baseline_files, touched)
    results["charges_unchanged"] = _charges(reference, outcome, touched, touched_rows)
    if case.intact:
        rated_ids = set(rated_added.column("record_id").to_pylist())
        missing = sorted(case.intact - rated_ids)
        results["intact_rated"] = None if not missing else (
            f"{len(missing)} untouched added record(s) not rated: {_why(outcome, added_labels, missing)}")
    results["rated_values"] = _rated_values(case, rated_added)
    return results


def _is_added(table: pa.Table, labels: set[str]) -> pa.ChunkedArray:
    return pc.is_in(table.column("input_file"), pa.array(sorted(labels), pa.string()))


def _count_by_file(outcome: Outcome) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in (outcome.rated, outcome.rejected, outcome.duplicates):
        grouped = pa.TableGroupBy(table.select(["input_file"]), "input_file").aggregate([("input_file", "count")])
        for name, n in zip(grouped.column("input_file").to_pylist(), grouped.column("input_file_count").to_pylist()):
            counts[name] = counts.get(name, 0) + n
    return counts


def _accounted(outcome: Outcome, labels: set[str], added_in: dict[str, int]) -> str | None:
    if outcome.records_in != outcome.records_out:
        return (f"records in {outcome.records_in:,} != rated {outcome.rated.num_rows:,} + rejected "
                f"{outcome.rejected.num_rows:,} + duplicates {outcome.duplicates.num_rows:,}")
    out = _count_by_file(outcome)
    wrong = {label: (n, out.get(label, 0)) for label, n in added_in.items() if out.get(label, 0) != n}
    if wrong:
        shown = "; ".join(f"{label}: {n} in, {m} out" for label, (n, m) in list(wrong.items())[:_MAX_SHOWN])
        return f"added input not balanced: {shown}"
    return None


def _record_count(case: Case, outcome: Outcome, labels: list[str], added_in: dict[str, int]) -> str | None:
    total = sum(added_in.values())
    if total > case.max_records_in:
        return f"{total:,} records from {case.max_records_in - 1:,} bytes of input (phantom records)"
    if case.file_name is not None:
        if case.records_in is not None and total not in _allowed(case.records_in):
            return f"{total:,} records accounted for, {' or '.join(map(str, _allowed(case.records_in)))} expected"
        return None
    problems = []
    for label, message in zip(labels, case.messages):
        got = added_in.get(label, 0)
        whole = got == 1 and _whole_reject(outcome, label)
        if message.records_in is not None and got not in _allowed(message.records_in) and \
                not (message.may_reject_whole and whole):
            problems.append(f"{label}: {got} records, {' or '.join(map(str, _allowed(message.records_in)))} "
                            f"expected")
        elif message.records_in is None and not (1 <= got <= message.max_records_in):
            problems.append(f"{label}: {got} records from {message.max_records_in - 1} bytes")
    return None if not problems else f"{len(problems)} message(s) miscounted: " + "; ".join(problems[:_MAX_SHOWN])


def _allowed(records_in: int | tuple[int, ...]) -> tuple[int, ...]:
    return (records_in,) if isinstance(records_in, int) else records_in


def _whole_reject(outcome: Outcome, label: str) -> bool:
    rows = outcome.rejected.filter(pc.equal(outcome.rejected.column("input_file"), label))
    return rows.num_rows == 1 and rows.column("reason")[0].as_py() == "MALFORMED_RECORD"


def _kept(table: pa.Table, touched: set[str]) -> pa.Table:
    """Rated rows of untouched accounts, provenance dropped (added rows move), in key order."""
    keep = pc.invert(pc.is_in(table.column("account_id"), pa.array(sorted(touched), pa.string())))
    return table.filter(keep).drop_columns(_PROVENANCE).sort_by([("source", "ascending"), ("record_id", "ascending")])


def _originals(reference: Outcome, outcome: Outcome, base_files: set[str], touched: set[str]) -> str | None:
    problems = []
    # Rows only the case has are rated added records: their accounts are touched, so not kept.
    ref_kept = _kept(reference.rated, touched)
    case_rated = outcome.rated
    case_kept = _kept(case_rated, touched)
    if not case_kept.equals(ref_kept):
        problems.append(_rated_diff(ref_kept, case_kept, "untouched account"))
    ref_rows = {(r["source"], r["record_id"]): r for r in _of_accounts(reference.rated, touched).to_pylist()}
    case_rows = {(r["source"], r["record_id"]): r for r in _of_accounts(case_rated, touched).to_pylist()}
    for key, before in ref_rows.items():
        after = case_rows.get(key)
        if after is None:
            problems.append(f"{key} (touched account {before['account_id']}) was rated, now is not")
            continue
        changed = [f for f in _STATELESS if before[f] != after[f]]
        if changed:
            problems.append(f"{key}: {', '.join(f'{f} {before[f]!r} -> {after[f]!r}' for f in changed[:3])}")
    for name, columns in (("rejected", ["input_file", "input_position", "reason"]),
                          ("duplicates", ["input_file", "input_position", "original_input_file",
                                          "original_input_position"])):
        before = _of_files(getattr(reference, name), base_files, columns)
        after = _of_files(getattr(outcome, name), base_files, columns)
        if not before.equals(after):
            problems.append(f"{name} of the original input changed: {before.num_rows} rows -> {after.num_rows}; "
                            f"first differences {_row_diff(before, after)}")
    return None if not problems else f"{len(problems)} problem(s): " + "; ".join(problems[:_MAX_SHOWN])


def _of_accounts(table: pa.Table, accounts: set[str]) -> pa.Table:
    return table.filter(pc.is_in(table.column("account_id"), pa.array(sorted(accounts), pa.string())))


def _of_files(table: pa.Table, files: set[str], columns: list[str]) -> pa.Table:
    rows = table.filter(pc.is_in(table.column("input_file"), pa.array(sorted(files), pa.string())))
    return rows.select(columns).sort_by([(c, "ascending") for c in columns[:2]])


def _rated_diff(before: pa.Table, after: pa.Table, what: str) -> str:
    old = {(r["source"], r["record_id"]): r for r in before.to_pylist()}
    new = {(r["source"], r["record_id"]): r for r in after.to_pylist()}
    shown = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None or b is None:
            shown.append(f"{key} {'appeared' if a is None else 'disappeared'} ({what} {(a or b)['account_id']})")
        else:
            fields = [f for f in a if a[f] != b[f]]
            shown.append(f"{key} ({what} {a['account_id']}): " + ", ".join(f"{f} {a[f]!r} -> {b[f]!r}"
                                                                            for f in fields[:4]))
        if len(shown) == _MAX_SHOWN:
            break
    changed = sum(1 for key in set(old) | set(new) if old.get(key) != new.get(key))
    return f"{changed} rated row(s) of untouched accounts changed: " + "; ".join(shown)


def _row_diff(before: pa.Table, after: pa.Table) -> str:
    a, b = before.to_pylist(), after.to_pylist()
    only_a = [r for r in a if r not in b][:2]
    only_b = [r for r in b if r not in a][:2]
    return f"before only {only_a}, after only {only_b}"


def _charges(reference: Outcome, outcome: Outcome, touched: set[str], touched_rows: pa.Table) -> str | None:
    ref_cycles = set(reference.period.billed)
    new_cycles = set(outcome.period.billed) - ref_cycles
    opened = set(touched_rows.column("service_cycle").to_pylist())
    problems = []
    if new_cycles - opened:
        problems.append(f"billing cycles {sorted(new_cycles - opened)} appeared without a rated added record in them")
    if set(outcome.period.billed) < ref_cycles:
        problems.append(f"billing cycles {sorted(ref_cycles - set(outcome.period.billed))} disappeared")
    for name in ("lines", "invoices"):
        before = _untouched(getattr(reference, name), touched, ref_cycles)
        after = _untouched(getattr(outcome, name), touched, ref_cycles)
        if not after.equals(before):
            problems.append(f"{name} of untouched accounts changed: {_line_diff(before, after)}")
    return None if not problems else "; ".join(problems)


def _untouched(table: pa.Table, touched: set[str], cycles: set[str]) -> pa.Table:
    keep = pc.and_(pc.invert(pc.is_in(table.column("account_id"), pa.array(sorted(touched), pa.string()))),
                   pc.is_in(table.column("billing_cycle"), pa.array(sorted(cycles), pa.string())))
    return table.filter(keep)


def _line_diff(before: pa.Table, after: pa.Table) -> str:
    a, b = before.to_pylist(), after.to_pylist()
    only_a = [r for r in a if r not in b]
    only_b = [r for r in b if r not in a]
    accounts = sorted({r["account_id"] for r in only_a + only_b})
    first = (only_a[:1], only_b[:1])
    return (f"{len(only_a)} row(s) gone, {len(only_b)} new, accounts {accounts[:5]}; first: before "
            f"{_brief(first[0])} after {_brief(first[1])}")


def _brief(rows: list[dict]) -> str:
    keys = ("account_id", "billing_cycle", "line_type", "service", "item", "amount_micros", "total_minor")
    return str([{k: r[k] for k in keys if k in r} for r in rows])


def _why(outcome: Outcome, labels: set[str], record_ids: list[str]) -> str:
    """What happened to added records that should have been rated: reject reasons, first few."""
    rejected = outcome.rejected.filter(pc.is_in(outcome.rejected.column("input_file"), pa.array(sorted(labels))))
    reasons = {r["record_id"]: f"{r['reason']} ({r['detail'][:120]})" for r in
               rejected.select(["record_id", "reason", "detail"]).to_pylist()}
    return "; ".join(f"{rid}: {reasons.get(rid, 'missing')}" for rid in record_ids[:_MAX_SHOWN])


def _rated_values(case: Case, rated_added: pa.Table) -> str | None:
    problems = []
    start_us = rated_added.column("start_time").cast(pa.int64()).to_pylist()
    for row, start in zip(rated_added.select(["record_id", "service", "raw_units", "charged_units", "free_units",
                                              "charge_micros", "connect_fee_micros"]).to_pylist(), start_us):
        rid = row["record_id"]
        if min(row["raw_units"], row["charge_micros"], row["free_units"], row["connect_fee_micros"]) < 0 or \
                row["free_units"] > row["charged_units"] or row["raw_units"] > row["charged_units"]:
            problems.append(f"{rid}: raw {row['raw_units']}, charged {row['charged_units']}, free {row['free_units']}, "
                            f"charge {row['charge_micros']} micros")
            continue
        if not case.exact_values:
            continue
        expected = case.expected.get(rid)
        if expected is None:
            problems.append(f"rated record {rid!r} was never written")
        elif expected.raw_units is not None and row["raw_units"] != expected.raw_units:
            problems.append(f"{rid}: raw units {row['raw_units']}, written {expected.raw_units}")
        elif expected.start_us is not None and start != expected.start_us:
            problems.append(f"{rid}: start {start} us, written {expected.start_us} us")
    return None if not problems else f"{len(problems)} rated row(s): " + "; ".join(problems[:_MAX_SHOWN])
