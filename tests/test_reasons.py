"""Every reason code is reachable: one JSON lines file with one record per way to fail."""

from __future__ import annotations

import json
import shutil


from cdr_schemas.decoders import decode_file
from cdr_schemas.reasons import Reason
from cdr_schemas.validate import validate_usage
from rating.engine import RatingEngine
from tests.paths import REFERENCE_EXAMPLES

GOOD = dict(source="sw1", service="VOICE", served_msisdn="491510000001", other_party="030123456",
            start_time="2026-01-05T10:00:00Z", duration_s=60)

CASES = {
    "RATED": {},
    "MISSING_FIELD": dict(record_id=""),
    "INVALID_FIELD": dict(duration_s=-5),
    "MISSING_DESTINATION": dict(other_party=None),
    "INVALID_NUMBER": dict(other_party="01x5"),
    "UNKNOWN_SUBSCRIBER": dict(served_msisdn="499999999999"),
    "NO_PLAN_VERSION": dict(served_msisdn="491510000009", start_time="2025-07-01T10:00:00Z"),
    "UNKNOWN_USAGE_TYPE": dict(service="OTHER", usage_type="TELEPATHY", quantity=3),
    "NO_ZONE": dict(other_party="0099912345"),
    "NO_RATE": dict(visited_network="310260"),
    "OVERFLOW": dict(service="DATA", other_party=None, duration_s=0, bytes_down=2**45),
}


def test_every_reason_code_is_reached(tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(REFERENCE_EXAMPLES, reference)
    with open(reference / "subscriptions.csv", "a") as f:  # subscribed before the plan has a version
        f.write("491510000009,ACC_A,EXAMPLE,2025-06-01T00:00:00+02:00,\n")
    lines = [json.dumps({"record_id": reason, **GOOD, **fields}) for reason, fields in CASES.items()]
    lines.insert(1, '{"record_id": "MALFORMED_RECORD", "source": ')  # broken JSON
    path = tmp_path / "cdrs.jsonl"
    path.write_text("\n".join(lines) + "\n")

    reasons: dict[str, str] = {}
    engine = RatingEngine.load(str(reference))
    for decoded in decode_file(str(path)):
        valid, rejected = validate_usage(decoded.usage)
        rated, rating_rejects = engine.rate(valid)
        for batch in (decoded.rejected, rejected, rating_rejects):
            for row in batch.to_pylist():
                reasons[row["reason"]] = row["record_id"] or "line %d" % row["input_position"]
        for row in rated.to_pylist():
            reasons["RATED"] = row["record_id"]

    # CYCLE_CLOSED is the stream's, against a store with closed cycles: tests/test_stream_store.py reaches it.
    assert set(reasons) == {r.name for r in Reason} - {"CYCLE_CLOSED"}
    for reason, record in reasons.items():
        if reason not in ("MALFORMED_RECORD", "MISSING_FIELD"):
            assert record == reason  # each failure came from the record built for it
