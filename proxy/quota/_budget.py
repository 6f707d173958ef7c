"""Budget counters: spent and reserved money, request and image counts.

Pure, in memory, single-threaded (the event loop), so check-and-reserve is
atomic. A call holds its *reservation* (the estimate it is charged against
until its real charge settles it) and, since an estimate is not always an
upper bound, what it could cost beyond it — up to its *worst case*, the
most the call can cost at all (the model's context window and longest
answer). Calls whose worst cases all fit are admitted side by side and hold
that difference as `exposure`; near the limit, a call whose worst case does
not fit is admitted only as the counter's one `lane` call. So spend passes a
limit by at most what one call costs beyond its reservation — the bound the
tests prove (see `_quota`).

Counters are keyed by (scope, period, period key) in UTC, so a new day or
month starts at zero by itself; they are seeded from the ledger at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

PERIODS = ("day", "month")


_KEYS: dict[tuple[int, int, int], tuple[str, str]] = {}


def period_keys(now: datetime) -> tuple[str, str]:
    """("YYYY-MM-DD", "YYYY-MM") of a UTC instant, memoised per date (hot path)."""
    if now.tzinfo is not timezone.utc:
        now = now.astimezone(timezone.utc)
    date = (now.year, now.month, now.day)
    keys = _KEYS.get(date)
    if keys is None:
        if len(_KEYS) > 64:
            _KEYS.clear()
        keys = _KEYS[date] = (f"{date[0]:04d}-{date[1]:02d}-{date[2]:02d}",
                              f"{date[0]:04d}-{date[1]:02d}")
    return keys


def period_key(period: str, now: datetime) -> str:
    day, month = period_keys(now)
    return day if period == "day" else month


@dataclass(slots=True)
class Counter:
    spent: int = 0  # nano-USD settled
    reserved: int = 0  # nano-USD held for calls in flight
    requests: int = 0
    images: int = 0
    base: int = 0  # spend already in the ledger at start (shared budgets)
    granted: int = 0  # leased to this replica (shared budgets)
    exposure: int = 0  # what calls in flight side by side may cost beyond their holds
    lane: int = 0  # calls in flight admitted one at a time (near the limit: at most one)
    requests_base: int = 0  # request and image counts in the ledger at start, and
    requests_granted: int = 0  # leased to this replica (shared caps)
    images_base: int = 0
    images_granted: int = 0
    wake: Any = None  # an asyncio.Event that calls waiting for this counter sleep on

    def used(self) -> int:
        return self.spent + self.reserved

    def committed(self) -> int:
        """Spent, held and exposed: what a call admitted side by side must fit beside."""
        return self.spent + self.reserved + self.exposure

    def notify(self) -> None:
        """Something in flight on this counter ended: wake the calls waiting for it."""
        if self.wake is not None:
            self.wake.set()
            self.wake = None


@dataclass(slots=True)
class Hold:
    """What one admitted call holds, to be settled or released exactly once."""

    counters: list[Counter] = field(default_factory=list)  # budget counters (money)
    tallies: list[Counter] = field(default_factory=list)  # request/image count counters
    amount: int = 0
    images: int = 0
    done: bool = False
    exposure: int = 0  # worst case - amount, held on the counters not in `lane`
    lane: tuple[Counter, ...] = ()  # counters this call is the one-at-a-time call of


class BudgetBook:
    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, str], Counter] = {}

    def counter(self, scope: str, period: str, now: datetime) -> Counter:
        key = (scope, period, period_key(period, now))
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = Counter()
        return c

    def peek(self, scope: str, period: str, now: datetime) -> Counter | None:
        """The counter if it exists (read-only views must not create counters)."""
        return self._counters.get((scope, period, period_key(period, now)))

    def seed(self, scope: str, period: str, key: str, spent: int, requests: int, images: int
             ) -> None:
        c = self._counters.setdefault((scope, period, key), Counter())
        c.spent += spent
        c.base += spent
        c.requests += requests
        c.requests_base += requests
        c.images += images
        c.images_base += images

    def seed_spend(self, rows: Iterable[tuple], now: datetime) -> None:
        """Spend so far this month and today, from the ledger's per (tenant, user) rows:
        (tenant, user, month cost, month requests, month images, day cost, ...)."""
        dkey, mkey = period_keys(now)
        for tenant, user, m_cost, m_req, m_img, d_cost, d_req, d_img in rows:
            scopes = [(f"tenant:{tenant}", True)]
            if user:
                scopes.append((f"user:{tenant}/{user}", False))
            for scope, counts in scopes:
                self.seed(scope, "month", mkey, int(m_cost or 0),
                          int(m_req or 0) if counts else 0, int(m_img or 0) if counts else 0)
                self.seed(scope, "day", dkey, int(d_cost or 0),
                          int(d_req or 0) if counts else 0, int(d_img or 0) if counts else 0)

    def hold(self, counters: list[Counter], tallies: list[Counter], amount: int, images: int,
             exposure: int = 0, lane: tuple[Counter, ...] = ()) -> Hold:
        for c in counters:
            c.reserved += amount
            if any(c is x for x in lane):
                c.lane += 1
            else:
                c.exposure += exposure
        for c in tallies:
            c.requests += 1
            c.images += images
        return Hold(counters, tallies, amount, images, exposure=exposure, lane=lane)

    @staticmethod
    def _end(hold: Hold, actual: int) -> None:
        for c in hold.counters:
            c.reserved -= hold.amount
            c.spent += actual
            if any(c is x for x in hold.lane):
                c.lane -= 1
            else:
                c.exposure -= hold.exposure
            c.notify()

    @classmethod
    def settle(cls, hold: Hold, actual: int) -> None:
        """Replace the reservation with the real charge."""
        if hold.done:
            return
        hold.done = True
        cls._end(hold, actual)

    @classmethod
    def release(cls, hold: Hold, uncount: bool = False) -> None:
        """Drop the reservation (nothing was charged); optionally the counts too."""
        if hold.done:
            return
        hold.done = True
        cls._end(hold, 0)
        if uncount:
            for c in hold.tallies:
                c.requests -= 1
                c.images -= hold.images

    @staticmethod
    def add_spend(counters: list[Counter], actual: int) -> None:
        """Spend that had no reservation (e.g. a Live usage increment)."""
        for c in counters:
            c.spent += actual

    def prune(self, now: datetime) -> None:
        """Forget counters of periods that are over."""
        live = set(period_keys(now))
        for key in [k for k in self._counters if k[2] not in live]:
            del self._counters[key]

    def items(self):
        return self._counters.items()
