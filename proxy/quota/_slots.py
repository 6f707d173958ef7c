"""Limits that are held, not spent: concurrent sessions, and one-at-a-time turns.

A slot is taken before the thing it limits starts (a session: before the
upstream is dialled) and given back when it ends, on every exit path. On
one replica that is a counter per scope, checked and raised without awaiting,
so N simultaneous upgrades under a cap of k admit exactly k. With a shared
ledger the replica's count of each scope is mirrored in `slot_holds`, and a
count may only rise while every replica's live holds stay within the limit;
holds are renewed while held and expire, so a crashed replica's slots stop
counting after `HOLD_TTL_S`. If the database cannot be reached, each replica
enforces the limit on its own (logged).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from faregate.storage import random_hex

if TYPE_CHECKING:
    from faregate.storage import Ledger

log = logging.getLogger("faregate.slots")

HOLD_TTL_S = 30.0
RENEW_S = 10.0
UNBOUNDED = 1 << 62


class Slots:
    def __init__(self, ledger: "Ledger | None" = None,
                 maintain: Callable[[], object] | None = None) -> None:
        self.ledger = ledger
        self.holder = random_hex(64)  # this replica, in the shared rows
        self._held: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._maintain = maintain  # more upkeep to run with each renewal
        self._task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()

    def held(self, scope: str) -> int:
        return self._held.get(scope, 0)

    async def take(self, scope: str, limit: int) -> bool:
        """One more of `scope`, if that stays within `limit` (here and across replicas)."""
        if self._held.get(scope, 0) + 1 > limit:
            return False
        if self.ledger is None:
            self._held[scope] = self._held.get(scope, 0) + 1
            return True
        async with self._locks.setdefault(scope, asyncio.Lock()):
            count = self._held.get(scope, 0) + 1
            if count > limit:
                return False
            try:
                ok = await self.ledger.hold_slots(scope, self.holder, count, limit, HOLD_TTL_S)
            except Exception as exc:
                log.error("taking a shared slot failed; this replica's own count decides",
                          extra={"scope": scope, "error": str(exc)})
                ok = True
            if ok:
                self._held[scope] = self._held.get(scope, 0) + 1
            return ok

    def give_soon(self, scope: str) -> None:
        """One fewer of `scope`, now; the shared row follows in the background."""
        count = max(0, self._held.get(scope, 0) - 1)
        if count:
            self._held[scope] = count
        else:
            self._held.pop(scope, None)
        if self.ledger is not None:
            task = asyncio.get_running_loop().create_task(self._write(scope))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def give(self, scope: str) -> None:
        """One fewer of `scope`, and the shared row updated before returning."""
        self.give_soon(scope)
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _write(self, scope: str) -> None:
        assert self.ledger is not None
        async with self._locks.setdefault(scope, asyncio.Lock()):
            try:
                await self.ledger.hold_slots(scope, self.holder, self._held.get(scope, 0),
                                             UNBOUNDED, HOLD_TTL_S)
            except Exception as exc:
                log.error("giving back a shared slot failed; it expires by itself",
                          extra={"scope": scope, "error": str(exc)})

    # -- keeping shared holds alive --------------------------------------------

    def start(self) -> None:
        if self.ledger is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        assert self.ledger is not None
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                await self.ledger.renew_slots(self.holder, HOLD_TTL_S)
                if self._maintain is not None:
                    await self._maintain()  # type: ignore[misc]
            except Exception as exc:
                log.error("renewing shared slots failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """Give back every held slot (at shutdown)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for scope in list(self._held):
            self._held[scope] = 0
            if self.ledger is not None:
                await self._write(scope)
        self._held.clear()
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)


@dataclass(eq=False)
class SessionTicket:
    """The concurrency slots one session holds: given back exactly once."""

    slots: Slots
    scopes: tuple[str, ...] = ()
    done: bool = field(default=False)

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        for scope in self.scopes:
            self.slots.give_soon(scope)
