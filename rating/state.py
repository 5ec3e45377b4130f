"""Allowance and tier balances carried between ``rate`` calls (the streaming job's per-key state).

Batch rating starts every (subscription, cycle) from its prorated grant and every (account, cycle)
tier counter from zero, because all of a cycle's events are rated in one call. A streaming job
rates a cycle's events across many calls; it passes a ``RatingState`` so each call starts from
where the previous one left off. Keys are row numbers of one compiled reference load: a state is
only meaningful with the reference data it was built with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MONTH_KEY = 100_000  # cycle months (year*12 + month-1) stay far below this


def slot_key(row: np.ndarray | int, cycle_month: np.ndarray | int):
    """Key of a (subscription row, cycle) allowance slot or an (account row, cycle) tier slot."""
    return row * MONTH_KEY + cycle_month


@dataclasses.dataclass
class RatingState:
    """Remaining allowance units per (subscription, cycle), paid tier units per (account, cycle) and
    remaining pooled allowance units per (account, cycle) (``pool: account``; arrays by allowance name)."""
    allowances: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    tiers: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    pools: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def __setstate__(self, saved: dict) -> None:
        """Unpickle a state saved before pools existed (a running stream's Beam state) too."""
        self.__dict__.update({"pools": {}, **saved})

    def update(self, other: "RatingState") -> None:
        """Take ``other``'s balances, replacing those of the same keys (a re-rated account's)."""
        self.allowances.update(other.allowances)
        self.tiers.update(other.tiers)
        self.pools.update(other.pools)

    def drop_cycles_before(self, cycle_month: int) -> None:
        """Forget balances of cycles before ``cycle_month`` (they can no longer change)."""
        self.allowances = {k: v for k, v in self.allowances.items() if k % MONTH_KEY >= cycle_month}
        self.tiers = {k: v for k, v in self.tiers.items() if k % MONTH_KEY >= cycle_month}
        self.pools = {k: v for k, v in self.pools.items() if k % MONTH_KEY >= cycle_month}
