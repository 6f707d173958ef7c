"""Upkeep of a serving ledger: partitions ahead, crash-cut sessions, retention.

Runs hourly (first a few seconds after start) from the ledger's own task;
`maintain()` can also be called directly. It never raises: a failed run is
logged and tried again at the next.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable

from . import _retention
from ._store import Store

log = logging.getLogger("faregate.ledger")

#: Partitions ahead and retention run this often (and once soon after start).
MAINTAIN_EVERY_S = 3600.0
MAINTAIN_FIRST_S = 5.0


class LedgerUpkeep:
    """A mixin of `Ledger` (next to `LedgerQueries`, which gives `shared` and
    `rebuild_now`)."""

    _store: Store
    keep_charges_days: int | None
    expired_before_ms: int | None
    shared: bool
    rebuild_now: Callable[[], Awaitable[int]]

    async def _maintain_loop(self) -> None:
        await asyncio.sleep(MAINTAIN_FIRST_S)
        while True:
            await self.maintain()
            await asyncio.sleep(MAINTAIN_EVERY_S)

    async def maintain(self, now: datetime | None = None) -> None:
        """Partitions for this month and the next; crash-cut sessions (PostgreSQL);
        retention if configured. Never raises."""
        now = now or datetime.now(timezone.utc)
        try:
            await self._store.maintain(int(now.timestamp() * 1000))
            if self.shared:  # safe while serving: only sessions silent for hours
                rebuilt = await self.rebuild_now()
                if rebuilt:
                    log.warning("rebuilt sessions cut off by a crash", extra={"sessions": rebuilt})
            if self.keep_charges_days:
                self.expired_before_ms = await _retention.expire(
                    self._store, self.keep_charges_days, now)
        except Exception as exc:  # retried at the next run
            log.error("ledger maintenance failed; will retry",
                      extra={"error": f"{type(exc).__name__}: {exc}"})
