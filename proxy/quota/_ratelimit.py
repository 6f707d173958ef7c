"""Requests- and tokens-per-minute as token buckets, per tenant.

A bucket holds up to one minute's allowance and refills continuously, so a
burst of `rpm` is allowed and then calls are admitted at `rpm / 60` per
second. A refused call learns exactly how long to wait (`retry-after`).
Tokens for TPM are the request's estimate (prompt + max output), as
OpenAI counts them; unused estimate is given back when the call settles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Bucket:
    per_minute: int
    level: float = -1.0  # starts full
    stamp: float = field(default_factory=time.monotonic)

    def _refill(self, now: float) -> None:
        if self.level < 0:
            self.level = float(self.per_minute)
        else:
            rate = self.per_minute / 60.0
            self.level = min(float(self.per_minute), self.level + (now - self.stamp) * rate)
        self.stamp = now

    def wait_for(self, amount: float, now: float | None = None) -> float:
        """Seconds until `amount` fits (0.0 = now). Does not take."""
        now = time.monotonic() if now is None else now
        self._refill(now)
        amount = min(amount, float(self.per_minute))  # a huge call waits for a full bucket
        if self.level >= amount:
            return 0.0
        if self.per_minute <= 0:
            return 60.0
        return (amount - self.level) * 60.0 / self.per_minute

    def available(self, now: float | None = None) -> float:
        """What the bucket holds now, without refilling it (read-only views)."""
        if self.level < 0:
            return float(self.per_minute)
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        return min(float(self.per_minute), self.level + max(0.0, now - self.stamp) * rate)

    def take(self, amount: float) -> None:
        self.level -= min(amount, float(self.per_minute))

    def give_back(self, amount: float) -> None:
        self.level = min(float(self.per_minute), self.level + amount)


class RateLimits:
    """Buckets by (tenant, kind); rebuilt when a tenant's limit changes."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def bucket(self, tenant: str, kind: str, per_minute: int) -> Bucket:
        key = (tenant, kind)
        b = self._buckets.get(key)
        if b is None or b.per_minute != per_minute:
            b = self._buckets[key] = Bucket(per_minute)
        return b

    def peek(self, tenant: str, kind: str, per_minute: int) -> Bucket:
        """The bucket if `tenant` has one at this limit, else a full one not kept."""
        b = self._buckets.get((tenant, kind))
        return b if b is not None and b.per_minute == per_minute else Bucket(per_minute)

    def available(self, tenant: str, kind: str, per_minute: int) -> float:
        """What `tenant`'s `kind` bucket holds now (full if it has none yet)."""
        b = self._buckets.get((tenant, kind))
        if b is None or b.per_minute != per_minute:
            return float(per_minute)
        return b.available()
