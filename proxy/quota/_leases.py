"""Limits shared by several replicas: lease a slice, spend it locally.

On a PostgreSQL ledger several faregate processes may serve one tenant. Each
keeps its in-memory counters (no database round trip per call) but may only
use what it has *leased* from the limit's shared row (`budget_leases`),
under a row lock, the shared total never above the limit:

* USD budgets, and request and image caps: `granted` grows by a slice when
  the local headroom runs low; unspent slices are returned at shutdown.
* rpm and tpm (per tenant and `[upstream_limits]`): per UTC minute window
  (`_windows`); a window's slices lapse with it.
* Concurrent sessions (per tenant and upstream), and the one call a budget
  admits at a time near its limit (its *turn*): held slots (`_slots`).

A call that costs more than its reservation may push a replica past its
grant: the excess is *overdrawn* into the shared row, so the other replicas
see the limit as passed, and the next one-at-a-time call anywhere is refused
— the one-call promise holds across replicas. The price is capacity parked
in other replicas' unspent grants: at most about one slice per replica
beyond what its calls in flight hold (a grant grown past `SPARE_SLICES`
slices goes back to the row when a call settles).

The USD slice adapts to the spend rate: about `LEASE_HORIZON_S` seconds of
this replica's recent spend, between `min_fraction` and `max_fraction` of the
limit, and never less than the waiting call's reservation. A call whose worst
case does not fit in one slice goes one at a time across the replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._budget import Counter, period_key
from ._policy import BudgetLimit, Policy
from ._refusals import budget_refusal, contention_refusal
from ._slots import Slots
from ._windows import Windows

if TYPE_CHECKING:
    from faregate.storage import Ledger

    from ._asks import Admission, Ask
    from ._quota import Quota

log = logging.getLogger("faregate.leases")

LEASE_HORIZON_S = 30.0
#: After a lease came back short, the shared row is not asked again this soon.
DRY_S = 0.25
#: How often a call waiting for its turn on another replica asks again.
TURN_POLL_S = 0.02
#: Slices of spare grant a replica keeps beyond its calls in flight (more goes back).
SPARE_SLICES = 2
_FREE = asyncio.Lock()

Key = tuple[str, str, str]  # (scope, period, period key) of a shared row


class Leases:
    def __init__(self, ledger: "Ledger", *, max_fraction: float = 0.05,
                 min_fraction: float = 0.005):
        self.ledger = ledger
        self.max_fraction = max_fraction
        self.min_fraction = min_fraction
        self.windows = Windows(ledger, max_fraction)
        self.slots = Slots(ledger, maintain=self.windows.prune)
        self._locks: dict[Key, asyncio.Lock] = {}
        self._held: dict[Key, tuple[Counter, str]] = {}  # key -> (counter, measure)
        self._last: dict[Key, tuple[float, int]] = {}  # (when, local spend)
        self._dry: dict[Key, float] = {}  # key -> monotonic time the row came back short
        self._owed: dict[Key, int] = {}  # overdrafts recorded, not yet covered by a grant
        self._tasks: set[asyncio.Task] = set()

    # -- what this replica may still use --------------------------------------

    @staticmethod
    def headroom(counter: Counter) -> int:
        """Money this replica may still commit: its grant minus its own use."""
        return counter.granted - (counter.used() - counter.base)

    @staticmethod
    def counts_left(counter: Counter, measure: str) -> int:
        """Requests or images this replica may still admit under a shared cap."""
        if measure == "requests":
            return counter.requests_granted - (counter.requests - counter.requests_base)
        return counter.images_granted - (counter.images - counter.images_base)

    def window_wait(self, scope: str, kind: str, amount: int) -> float:
        return self.windows.wait(scope, kind, amount)

    def window_take(self, scope: str, kind: str, amount: int) -> None:
        self.windows.take(scope, kind, amount)

    # -- before a call is admitted ---------------------------------------------

    async def prepare(self, quota: "Quota", policy: Policy, ask: "Ask", now: datetime) -> None:
        """Lease what this call needs of every shared limit it is subject to (a rare
        database call: only when the local slice runs low)."""
        if not policy.block:
            return
        if policy.budgets:
            await self._money(quota.budget_counters(policy, now), ask, now)
        for period, cap in (("day", policy.max_requests_per_day),
                            ("month", policy.max_requests_per_month)):
            if cap is not None and ask.count_request:
                await self._counts(quota.book.counter(policy.tenant_scope, period, now),
                                   policy.tenant_scope, period, "requests", cap, 1, now)
        for period, cap in (("day", policy.max_images_per_day),
                            ("month", policy.max_images_per_month)):
            if cap is not None and ask.images:
                await self._counts(quota.book.counter(policy.tenant_scope, period, now),
                                   policy.tenant_scope, period, "images", cap, ask.images, now)
        rates = [(policy.tenant_scope, "rpm", policy.rpm, 1 if ask.count_request else 0),
                 (policy.tenant_scope, "tpm", policy.tpm, ask.tpm_tokens)]
        if ask.shared is not None:
            rates += [("upstream", "rpm", ask.shared.rpm, 1 if ask.count_request else 0),
                      ("upstream", "tpm", ask.shared.tpm, ask.tpm_tokens)]
        for scope, kind, limit, amount in rates:
            if limit and amount:
                await self.windows.ensure(scope, kind, limit, amount)

    def slice(self, limit: BudgetLimit, counter: Counter, key: Key) -> int:
        lo = int(limit.limit_nanos * self.min_fraction)
        hi = max(lo, int(limit.limit_nanos * self.max_fraction))
        now = time.monotonic()
        spent_here = counter.spent - counter.base
        when, before = self._last.get(key, (now, spent_here))
        rate = (spent_here - before) / max(now - when, 1.0)
        return max(lo, min(hi, int(rate * LEASE_HORIZON_S)))

    async def _money(self, budgets: tuple[tuple[BudgetLimit, Counter], ...], ask: "Ask",
                     now: datetime) -> None:
        worst = max(ask.worst or ask.amount, ask.amount)
        for limit, counter in budgets:
            key = (limit.scope, limit.period, period_key(limit.period, now))
            size = self.slice(limit, counter, key)
            # Enough for the call one at a time (its reservation beside what is in
            # flight) and, within one slice, for its worst case side by side.
            hi = max(size, int(limit.limit_nanos * self.max_fraction))
            must = ask.amount + counter.exposure
            wish = min(worst + counter.exposure, max(must, hi))
            if self.headroom(counter) >= wish:
                continue
            if self.headroom(counter) >= must and self._is_dry(key):
                continue
            async with self._locks.setdefault(key, asyncio.Lock()):
                need = wish - self.headroom(counter)
                if need <= 0:
                    continue
                got = await self._lease(key, max(need, size), limit.limit_nanos, counter.base)
                counter.granted += got
                self._held[key] = (counter, "money")
                self._last[key] = (time.monotonic(), counter.spent - counter.base)
                if got < need:
                    self._dry[key] = time.monotonic()

    async def _counts(self, counter: Counter, scope: str, period: str, measure: str, cap: int,
                      amount: int, now: datetime) -> None:
        if self.counts_left(counter, measure) >= amount:
            return
        key = (scope, f"{period}:{measure}", period_key(period, now))
        if self._is_dry(key):
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            need = amount - self.counts_left(counter, measure)
            if need <= 0:
                return
            size = max(1, int(cap * self.max_fraction))
            base = counter.requests_base if measure == "requests" else counter.images_base
            got = await self._lease(key, max(need, size), cap, base)
            if measure == "requests":
                counter.requests_granted += got
            else:
                counter.images_granted += got
            self._held[key] = (counter, measure)
            if got < need:
                self._dry[key] = time.monotonic()

    def _is_dry(self, key: Key) -> bool:
        when = self._dry.get(key)
        return when is not None and time.monotonic() - when < DRY_S

    async def _lease(self, key: Key, want: int, limit: int, seed: int) -> int:
        try:
            return await self.ledger.lease(*key, want, limit, seed)
        except Exception as exc:  # database down: use only what is held
            log.error("lease failed", extra={"scope": key[0], "period": key[1],
                                             "error": str(exc)})
            return 0

    # -- the one call at a time, across replicas ---------------------------------

    async def take_turns(self, quota: "Quota", admission: "Admission", deadline: float
                         ) -> "Admission | Any":
        """An admission that is its counters' one-at-a-time call on this replica takes
        the same turn across replicas (waiting for it until `deadline`), unless the
        shared budget was already passed by another replica's call."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        lane = admission.hold.lane
        now = datetime.now(timezone.utc)
        keys = [((b.scope, b.period, period_key(b.period, now)), b)
                for b, c in admission.budgets if any(c is x for x in lane)]
        taken: list[Key] = []
        for key, limit in keys:
            while not await self.slots.take(turn_scope(key), 1):
                if loop.time() >= deadline:
                    self._end_turns(taken)
                    quota.release(admission, uncount=True)
                    quota.metrics.quota_rejections.labels(admission.policy.tenant,
                                                          "budget").inc()
                    return contention_refusal(limit, round(loop.time() - started, 2))
                await asyncio.sleep(TURN_POLL_S)
            taken.append(key)
            state = await self._state(key)
            if state is not None and state[0] > state[1]:  # another replica passed it
                self._end_turns(taken)
                quota.release(admission, uncount=True)
                quota.metrics.quota_rejections.labels(admission.policy.tenant, "budget").inc()
                return budget_refusal(limit, state[0])
        admission.turns = tuple(taken)
        return admission

    async def _state(self, key: Key) -> tuple[int, int] | None:
        try:
            return await self.ledger.lease_state(*key)
        except Exception as exc:
            log.error("reading a lease failed", extra={"scope": key[0], "error": str(exc)})
            return None

    def _end_turns(self, keys: list[Key] | tuple[Key, ...], overdrafts: tuple = ()) -> None:
        if keys or overdrafts:
            self._spawn(self._give_back(tuple(keys), tuple(overdrafts)))

    async def _give_back(self, turns: tuple[Key, ...], overdrafts: tuple) -> None:
        for key, amount in overdrafts:  # first the excess, then the turn
            try:
                await self.ledger.overdraw(*key, amount)
            except Exception as exc:
                log.error("recording an overdraft failed",
                          extra={"scope": key[0], "nanos": amount, "error": str(exc)})
        for key in turns:
            await self.slots.give(turn_scope(key))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- after a call ---------------------------------------------------------------

    def settled(self, admission: "Admission") -> None:
        """A call ended: count any spend beyond this replica's grant in the shared
        rows, hand its turns back, and return a grant grown far past what this
        replica needs (leased for worst cases that did not happen)."""
        now = datetime.now(timezone.utc)
        overdrafts = self._overdrafts(admission.budgets, now)
        turns, admission.turns = admission.turns, ()
        self._end_turns(turns, overdrafts)
        for limit, counter in admission.budgets:
            self._trim(limit, counter, now)

    def _trim(self, limit: BudgetLimit, counter: Counter, now: datetime) -> None:
        """Give back spare grant: first what covered reservations that settled lower
        after an overdraft (so the row says again what is really spent), then what
        grew past `SPARE_SLICES` slices."""
        key = (limit.scope, limit.period, period_key(limit.period, now))
        if self._locks.get(key, _FREE).locked():
            return
        owed = self._owed.get(key, 0)
        spare = self.headroom(counter) - counter.exposure
        if owed and spare > 0:
            back = min(owed, spare)
            self._owed[key] = owed - back
            counter.granted -= back
            self._spawn(self._return(key, back))
        size = self.slice(limit, counter, key)
        keep = SPARE_SLICES * max(size, int(limit.limit_nanos * self.max_fraction))
        extra = self.headroom(counter) - counter.exposure - keep
        if extra > size:
            counter.granted -= extra
            self._spawn(self._return(key, extra))

    async def _return(self, key: Key, amount: int) -> None:
        try:
            await self.ledger.unlease(*key, amount)
        except Exception as exc:  # kept in the row: parked until shutdown or the period
            log.error("returning spare lease failed", extra={"scope": key[0],
                                                             "error": str(exc)})

    def overdrawn(self, budgets: tuple[tuple[BudgetLimit, Counter], ...], now: datetime
                  ) -> None:
        """Spend without a reservation: the same overdraft bookkeeping."""
        self._end_turns((), self._overdrafts(budgets, now))

    def _overdrafts(self, budgets: tuple[tuple[BudgetLimit, Counter], ...], now: datetime
                    ) -> tuple[tuple[Key, int], ...]:
        out = []
        for limit, counter in budgets:
            over = -self.headroom(counter)
            if over > 0:
                key = (limit.scope, limit.period, period_key(limit.period, now))
                counter.granted += over
                self._owed[key] = self._owed.get(key, 0) + over
                out.append((key, over))
        return tuple(out)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.slots.start()

    async def release(self) -> int:
        """Return every unspent slice and every held slot (at shutdown, after the drain)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        returned = 0
        for key, (counter, measure) in list(self._held.items()):
            unused = self._unused(counter, measure)
            if unused <= 0:
                continue
            try:
                await self.ledger.unlease(*key, unused)
            except Exception as exc:
                log.error("returning a lease failed",
                          extra={"scope": key[0], "error": str(exc)})
                continue
            if measure == "money":
                counter.granted -= unused
                returned += unused
            elif measure == "requests":
                counter.requests_granted -= unused
            else:
                counter.images_granted -= unused
        await self.slots.close()
        return returned

    @staticmethod
    def _unused(counter: Counter, measure: str) -> int:
        if measure == "money":
            return counter.granted - (counter.spent - counter.base) - counter.reserved
        return Leases.counts_left(counter, measure)


def turn_scope(key: Key) -> str:
    """The slot scope of a budget's one-at-a-time turn."""
    return "turn|" + "|".join(key)
