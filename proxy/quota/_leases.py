"""Budgets shared by several replicas: lease a slice, spend it locally.

On a PostgreSQL ledger several faregate processes may serve one tenant. Each
keeps its in-memory counters (no database round trip per call) but may only
spend what it has *leased* from the budget's shared row (`budget_leases`):
`granted` grows by a slice when the local headroom runs low, under a row
lock, and the shared `leased_nanos` never exceeds the limit. So the replicas
together cannot pass the limit (beyond one call's usage exceeding its own
reservation, as on one replica); the price is capacity stranded in other
replicas' unspent slices — at most N × one slice, returned at shutdown.

The slice adapts to the spend rate: about `LEASE_HORIZON_S` seconds of this
replica's recent spend, between `min_fraction` and `max_fraction` of the
limit, and never less than what the waiting call needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from typing import TYPE_CHECKING

from ._budget import Counter, period_key
from ._policy import BudgetLimit

if TYPE_CHECKING:
    from faregate.storage import Ledger

log = logging.getLogger("faregate.leases")

LEASE_HORIZON_S = 30.0


class Leases:
    def __init__(self, ledger: "Ledger", *, max_fraction: float = 0.05,
                 min_fraction: float = 0.005):
        self.ledger = ledger
        self.max_fraction = max_fraction
        self.min_fraction = min_fraction
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._held: dict[tuple[str, str, str], Counter] = {}
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}  # (when, local spend)

    @staticmethod
    def headroom(counter: Counter) -> int:
        """What this replica may still commit: its grant minus its own use."""
        return counter.granted - (counter.used() - counter.base)

    def slice(self, limit: BudgetLimit, counter: Counter, key: tuple[str, str, str]) -> int:
        lo = int(limit.limit_nanos * self.min_fraction)
        hi = max(lo, int(limit.limit_nanos * self.max_fraction))
        now = time.monotonic()
        spent_here = counter.spent - counter.base
        when, before = self._last.get(key, (now, spent_here))
        rate = (spent_here - before) / max(now - when, 1.0)
        return max(lo, min(hi, int(rate * LEASE_HORIZON_S)))

    async def ensure(self, budgets: tuple[tuple[BudgetLimit, Counter], ...], amount: int,
                     now: datetime) -> None:
        """Lease more of each budget whose local headroom cannot cover `amount`.

        With `amount == 0` (a Realtime response about to be sized) it keeps at
        least a quarter slice of headroom.
        """
        for limit, counter in budgets:
            key = (limit.scope, limit.period, period_key(limit.period, now))
            size = self.slice(limit, counter, key)
            target = amount if amount > 0 else size // 4
            if self.headroom(counter) >= target:
                continue
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                need = target - self.headroom(counter)
                if need <= 0:
                    continue
                want = max(need, size)
                try:
                    got = await self.ledger.lease(*key, want, limit.limit_nanos, counter.base)
                except Exception as exc:  # database down: spend only what is held
                    log.error("budget lease failed", extra={"scope": key[0], "error": str(exc)})
                    continue
                counter.granted += got
                self._held[key] = counter
                self._last[key] = (time.monotonic(), counter.spent - counter.base)

    async def release(self) -> int:
        """Return every unspent slice (at shutdown, after the drain)."""
        returned = 0
        for key, counter in list(self._held.items()):
            unused = counter.granted - (counter.spent - counter.base) - counter.reserved
            if unused <= 0:
                continue
            try:
                await self.ledger.unlease(*key, unused)
            except Exception as exc:
                log.error("returning a budget lease failed",
                          extra={"scope": key[0], "error": str(exc)})
                continue
            counter.granted -= unused
            returned += unused
        return returned
