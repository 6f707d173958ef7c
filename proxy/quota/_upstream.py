"""Org-wide upstream limits, shared fairly between tenants.

The operator's OpenAI account has one requests-per-minute, tokens-per-minute
and concurrency allowance for everyone behind faregate. `[upstream_limits]`
mirrors it so faregate refuses (429 `upstream_limit`) before the upstream
would, and so one noisy tenant cannot take the whole allowance:

* One global token bucket per kind (rpm, tpm), like the per-tenant ones.
* Fair share: while another tenant is waiting (it was refused and told to
  retry, and has not been served since) and has used less than this one in
  the last minute, a tenant over its share (`limit / active tenants`) is
  refused too, so the allowance that refills goes to the one that has had
  less (max-min fairness). With nobody like that waiting, any tenant may use
  all of it (work-conserving).

In memory and per process, like the other rate limits; with several replicas
on one PostgreSQL, the minute's allowance and the session slots are leased
from shared rows as well (`_windows`, `_slots`), so the account's limits hold
across all of them, and fair shares are kept by each replica among its own.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ._ratelimit import Bucket
from ._refusals import Refusal, upstream_refusal

WINDOW_S = 60.0  # "recent use" for fair shares, one rate-limit minute
WAITING_GRACE_S = 5.0  # a refused tenant counts as waiting until retry-after + this


@dataclass
class _Use:
    """A tenant's use of one kind in the last minute."""

    events: deque = field(default_factory=deque)  # (time, amount)
    total: float = 0.0

    def trim(self, now: float) -> float:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]
        return self.total

    def add(self, now: float, amount: float) -> None:
        self.events.append((now, amount))
        self.total += amount

    def remove(self, amount: float) -> None:
        """Take back part of the newest use (an estimate that turned out smaller)."""
        for i in range(len(self.events) - 1, -1, -1):
            if amount <= 0:
                break
            at, used = self.events[i]
            cut = min(used, amount)
            self.events[i] = (at, used - cut)
            self.total -= cut
            amount -= cut


class UpstreamLimits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._use: dict[tuple[str, str], _Use] = {}
        self._waiting: dict[str, float] = {}  # tenant -> waiting until (monotonic)

    def _bucket(self, kind: str, per_minute: int) -> Bucket:
        b = self._buckets.get(kind)
        if b is None or b.per_minute != per_minute:
            b = self._buckets[kind] = Bucket(per_minute, stamp=self.clock())
        return b

    def _waiters(self, tenant: str, now: float) -> list[str]:
        """Other tenants refused recently and not served since."""
        for other, until in list(self._waiting.items()):
            if now > until:
                del self._waiting[other]
        return [t for t in self._waiting if t != tenant]

    def _used(self, kind: str, tenant: str, now: float) -> float:
        use = self._use.get((kind, tenant))
        return use.trim(now) if use is not None else 0.0

    def _active(self, kind: str, tenant: str, now: float) -> int:
        tenants = {t for (k, t), use in self._use.items() if k == kind and use.trim(now) > 0}
        tenants.update(self._waiting)
        tenants.add(tenant)
        return len(tenants)

    def _refuse(self, tenant: str, now: float, message: str, wait_s: float) -> Refusal:
        self._waiting[tenant] = now + wait_s + WAITING_GRACE_S
        return upstream_refusal(message, wait_s)

    def admit(self, tenant: str, rpm: int | None, tpm: int | None, tokens: int
              ) -> Refusal | None:
        """Take one request and `tokens` from the shared allowance, or refuse."""
        now = self.clock()
        asks = [(kind, limit, amount) for kind, limit, amount in
                (("rpm", rpm, 1), ("tpm", tpm, tokens)) if limit and amount > 0]
        waiters = self._waiters(tenant, now)
        for kind, limit, amount in asks:
            used = self._used(kind, tenant, now)
            share = limit / self._active(kind, tenant, now)
            starved = any(self._used(kind, w, now) < used for w in waiters)
            if starved and used + amount > share:
                use = self._use.get((kind, tenant))
                oldest = use.events[0][0] if use is not None and use.events else now
                return self._refuse(
                    tenant, now, f"The shared upstream {kind} limit ({limit}/min) is "
                    f"contended; this tenant has used its fair share ({share:.0f}).",
                    max(1.0, oldest + WINDOW_S - now))
            wait = self._bucket(kind, limit).wait_for(amount, now)
            if wait > 0:
                return self._refuse(
                    tenant, now, f"The shared upstream {kind} limit ({limit}/min) is used up.",
                    wait)
        for kind, limit, amount in asks:
            self._bucket(kind, limit).take(amount)
            self._use.setdefault((kind, tenant), _Use()).add(now, amount)
        self._waiting.pop(tenant, None)
        return None

    def give_back(self, tenant: str, tokens: int) -> None:
        """Unused estimated tokens of a finished call return to the shared bucket."""
        bucket = self._buckets.get("tpm")
        if bucket is not None and tokens > 0:
            bucket.give_back(tokens)
            use = self._use.get(("tpm", tenant))
            if use is not None:
                use.remove(tokens)

    def admit_session(self, tenant: str, limit: int | None, active: dict[str, int]
                      ) -> Refusal | None:
        """A new Realtime/Live session under the shared concurrency limit."""
        if not limit:
            return None
        now = self.clock()
        total = sum(active.values())
        mine = active.get(tenant, 0)
        waiters = self._waiters(tenant, now)
        if waiters:
            tenants = {t for t, n in active.items() if n} | set(waiters) | {tenant}
            share = limit / len(tenants)
            if mine + 1 > share and any(active.get(w, 0) < mine for w in waiters):
                return self._refuse(tenant, now, f"The shared upstream limit of {limit} "
                                    "concurrent sessions is contended; this tenant has its "
                                    "fair share.", 1.0)
        if total >= limit:
            return self._refuse(tenant, now, f"The shared upstream limit of {limit} concurrent "
                                "sessions is reached.", 1.0)
        self._waiting.pop(tenant, None)
        return None
