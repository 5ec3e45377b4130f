"""Re-rating, Beam-free: compare two ratings of a cycle record by record (``compare``), summarise
the revenue impact (``impact``) and move closed invoices to the new totals (``adjustments``).

Everything is vectorised Polars over whole frames, money in exact int64 micro-units. The re-rate
job (``pipelines/rerate.py``) feeds it what the output store held for a cycle and what re-rating
produced; a library user can call it on any two sets of rated events.
"""

from rating.rerate.adjustments import Adjustments, adjustment_lines, record_contributions, same_lines
from rating.rerate.compare import CHANGE_COLUMNS, RATED_COLUMNS, STATUSES, RecordDiff, compare_records
from rating.rerate.impact import account_deciles, impact_summary

__all__ = ["Adjustments", "CHANGE_COLUMNS", "RATED_COLUMNS", "STATUSES", "RecordDiff", "account_deciles",
           "adjustment_lines", "compare_records", "impact_summary", "record_contributions", "same_lines"]
