"""Who owns which object: a bounded memory in front of the ledger's `objects` rows.

`bind()` runs when an answer names an object faregate saw created: the
owner goes into memory at once (the client's next call finds it) and into
the ledger (journal, then database) so other replicas and later runs know
too. The first owner of an id wins, in memory and in the ledger alike.
`owners()` answers from memory — no database round trip for a known object;
only a miss (an object this process never saw: created on another replica,
before faregate, or long ago) asks the ledger, by primary key, once per id
(misses are remembered for `MISS_TTL_S`). On PostgreSQL a miss that would be
refused is asked once more after the writers' flush interval, so an object
created a moment ago on another replica is found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Iterable

from faregate.storage import Ledger, ObjectRecord

from ..caller import Caller

log = logging.getLogger("faregate.objects")

MAX_KNOWN = 200_000  # owners remembered in memory
MAX_MISSES = 50_000
MISS_TTL_S = 10.0  # an id the ledger did not know is asked again after this
LOOKUP_TIMEOUT_S = 3.0
LOOKUP_CHUNK = 500


class LookupFailed(Exception):
    """The ledger could not say who owns an object (database away or too slow)."""


class Owners:
    """Object id -> owning tenant."""

    def __init__(self, ledger: Ledger, settle_s: float = 0.5) -> None:
        self.ledger = ledger
        self.settle_s = settle_s  # how long another replica may take to write a new row
        self._known: OrderedDict[str, str] = OrderedDict()
        self._misses: dict[str, float] = {}

    def known(self, object_id: str) -> str | None:
        """The owner if memory has it (no I/O)."""
        return self._known.get(object_id)

    def bind(self, object_id: str, kind: str, caller: Caller,
             later: list[ObjectRecord] | None = None) -> bool:
        """`caller`'s tenant owns `object_id` (created through faregate); False if
        another owner was there first. With `later`, its ledger record is put there
        (to go into the journal with the call's charge, one write) instead of now."""
        owner = self._known.get(object_id)
        if owner is not None:
            return owner == caller.tenant
        self._remember(object_id, caller.tenant)
        self._misses.pop(object_id, None)
        record = ObjectRecord(id=object_id, kind=kind, tenant=caller.tenant, user=caller.user,
                              key_id=caller.key_id)
        if later is None:
            self.ledger.record(record)
        else:
            later.append(record)
        return True

    def _remember(self, object_id: str, tenant: str) -> None:
        known = self._known
        known[object_id] = tenant
        if len(known) > MAX_KNOWN:
            known.popitem(last=False)

    async def owners(self, ids: Iterable[str], *, again: bool = False) -> dict[str, str]:
        """Owner of each id the ledger knows (absent: created outside faregate).

        `again`: ask the ledger a second time, a flush interval later, for ids it
        did not know (a row another replica is still writing). Raises
        `LookupFailed` when the ledger cannot answer.
        """
        found: dict[str, str] = {}
        ask: list[str] = []
        now = time.monotonic()
        for i in dict.fromkeys(ids):
            owner = self._known.get(i)
            if owner is not None:
                found[i] = owner
            elif self._misses.get(i, 0.0) <= now:
                ask.append(i)
        if ask:
            found.update(await self._lookup(ask))
            if again and self.ledger.shared and any(i not in found for i in ask):
                await asyncio.sleep(self.settle_s)
                found.update(await self._lookup([i for i in ask if i not in found]))
            self._missed([i for i in ask if i not in found], now)
        return found

    async def _lookup(self, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(ids), LOOKUP_CHUNK):
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                    rows = await self.ledger.objects_by_id(ids[start:start + LOOKUP_CHUNK])
            except Exception as exc:
                log.warning("object owner lookup failed",
                            extra={"ids": len(ids), "error": type(exc).__name__})
                raise LookupFailed(str(exc)) from exc
            for row in rows:
                self._remember(row.id, row.tenant)
                out[row.id] = row.tenant
        return out

    def _missed(self, ids: list[str], now: float) -> None:
        misses = self._misses
        if len(misses) + len(ids) > MAX_MISSES:
            misses.clear()
        for i in ids:
            misses[i] = now + MISS_TTL_S
