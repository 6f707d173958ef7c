"""Requests and tokens per minute shared by replicas: a window's allowance in slices.

Each replica keeps its own token buckets (`_ratelimit`: a burst, then a
steady refill) and, with a shared ledger, may only admit what it leased of
the current UTC minute's allowance from the row (scope, "rpm"|"tpm",
minute) in `budget_leases` — the rows' total never above the limit. So in
any UTC minute the replicas together admit at most the limit; a slice a
replica did not use lapses with its window (nothing to return). A call the
window cannot take waits for the next minute (`retry-after`). If the
database cannot be reached, the replica falls back to its own buckets for
that minute (logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faregate.storage import Ledger

log = logging.getLogger("faregate.windows")

WINDOW_S = 60
#: Window rows are forgotten this long after their minute (they are never read again).
KEEP_S = 600


@dataclass(slots=True)
class _Window:
    minute: int
    limit: int = 0
    granted: int = 0
    used: int = 0
    dry: bool = False  # the shared allowance of this minute is used up
    unshared: bool = False  # the database failed: this replica's buckets decide

    def left(self) -> int:
        return self.granted - self.used


class Windows:
    def __init__(self, ledger: "Ledger", max_fraction: float) -> None:
        self.ledger = ledger
        self.max_fraction = max_fraction
        self._windows: dict[tuple[str, str], _Window] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @staticmethod
    def _minute() -> int:
        return int(time.time() // WINDOW_S)

    def _window(self, scope: str, kind: str) -> _Window:
        minute = self._minute()
        w = self._windows.get((scope, kind))
        if w is None or w.minute != minute:
            limit = w.limit if w is not None else 0
            w = self._windows[(scope, kind)] = _Window(minute, limit)
        return w

    async def ensure(self, scope: str, kind: str, limit: int, amount: int) -> None:
        """Lease enough of this minute for `amount` (a call waits on it at most once)."""
        w = self._window(scope, kind)
        w.limit = limit
        amount = min(amount, limit)
        if w.unshared or w.dry or w.left() >= amount:
            return
        async with self._locks.setdefault((scope, kind), asyncio.Lock()):
            w = self._window(scope, kind)
            need = amount - w.left()
            if need <= 0 or w.dry:
                return
            size = max(1, int(limit * self.max_fraction))
            try:
                got = await self.ledger.lease(scope, kind, str(w.minute), max(need, size),
                                              limit, 0)
            except Exception as exc:
                log.error("leasing a rate window failed; this replica's buckets decide",
                          extra={"scope": scope, "kind": kind, "error": str(exc)})
                w.unshared = True
                return
            w.granted += got
            if got < need:
                w.dry = True

    def wait(self, scope: str, kind: str, amount: int) -> float:
        """Seconds until `amount` fits (0.0: now): the rest of the minute if the shared
        allowance of this one is used up."""
        w = self._window(scope, kind)
        if w.unshared or w.limit <= 0 or w.left() >= min(amount, w.limit):
            return 0.0
        return max(0.001, WINDOW_S - time.time() % WINDOW_S)

    def take(self, scope: str, kind: str, amount: int) -> None:
        w = self._window(scope, kind)
        w.used += min(amount, w.limit) if w.limit else amount

    def give_back(self, scope: str, kind: str, amount: int) -> None:
        """Unused estimated tokens return to the window they came from (same minute)."""
        w = self._windows.get((scope, kind))
        if w is not None and w.minute == self._minute() and amount > 0:
            w.used = max(0, w.used - amount)

    async def prune(self) -> None:
        """Forget the shared rows of windows long over."""
        await self.ledger.prune_leases(("rpm", "tpm"), KEEP_S)
