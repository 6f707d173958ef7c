"""Admission control: budgets, request and image caps, rate limits, models.

`Quota.admit()` runs before a call is forwarded (and before every Realtime
`response.create`). It either refuses — with the exact DESIGN §5 answer —
or holds the call's worst-case cost against every budget it falls under.
`settle()` swaps the hold for the real charge; `release()` drops it. All of
it is synchronous in-memory arithmetic: no database round trip per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable

from ._budget import BudgetBook, Counter, Hold, period_keys
from ._errors import openai_error
from ._metrics import Metrics
from ._policy import BudgetLimit, Policy
from ._ratelimit import Bucket, RateLimits


ADJECTIVE = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True)
class Refusal:
    status: int
    type: str
    code: str
    reason: str  # metric label: budget, request_quota, rate_limit, concurrency, model, ...
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, request_id: str):
        return openai_error(self.status, self.type, self.code, self.message,
                            headers=self.headers, request_id=request_id)


def budget_refusal(limit: BudgetLimit, used: int) -> Refusal:
    what = limit.scope.replace(":", " ", 1)
    return Refusal(
        429, "insufficient_quota", "budget_exceeded", "budget",
        f"The {ADJECTIVE[limit.period]} budget of ${limit.limit_usd} for {what} is used up "
        f"(${Decimal(used).scaleb(-9):f} spent or reserved). It resets at the start of the "
        f"next UTC {limit.period}.",
        {"x-should-retry": "false"},
    )


def rate_refusal(kind: str, wait_s: float, per_minute: int, remaining: float) -> Refusal:
    wait_ms = max(1, int(wait_s * 1000 + 0.999))
    unit = "requests" if kind == "rpm" else "tokens"
    return Refusal(
        429, "rate_limit_exceeded", "rate_limit_exceeded", "rate_limit",
        f"Rate limit reached: {per_minute} {unit} per minute. Try again in {wait_ms} ms.",
        {
            "retry-after": str(max(1, int(wait_s + 0.999))),
            "retry-after-ms": str(wait_ms),
            f"x-ratelimit-limit-{unit}": str(per_minute),
            f"x-ratelimit-remaining-{unit}": str(max(0, int(remaining))),
            f"x-ratelimit-reset-{unit}": f"{wait_ms}ms",
        },
    )


def model_refusal(model: str) -> Refusal:
    return Refusal(403, "invalid_request_error", "model_not_allowed", "model",
                   f"The model {model!r} is not allowed for this caller.")


@dataclass
class Admission:
    """What an admitted call holds."""

    policy: Policy
    hold: Hold
    tpm: Bucket | None = None
    tpm_tokens: int = 0
    budgets: tuple[tuple[BudgetLimit, Counter], ...] = ()


class Quota:
    def __init__(self, metrics: Metrics, on_spend: Callable[[Policy, tuple, datetime], None]):
        self.book = BudgetBook()
        self.rates = RateLimits()
        self.metrics = metrics
        self._on_spend = on_spend
        self._ratio_gauges: dict[tuple[str, str], object] = {}
        self._day = ""
        self.leases = None  # _leases.Leases when replicas share budgets (PostgreSQL)

    @property
    def leasing(self) -> bool:
        return self.leases is not None

    async def ensure(self, policy: Policy, amount: int, now: datetime) -> None:
        """Shared budgets: lease enough headroom first (a rare database call)."""
        if self.leases is not None and policy.budgets and policy.block:
            await self.leases.ensure(policy, amount, now)

    def _headroom(self, limit: BudgetLimit, counter: Counter) -> int:
        own = limit.limit_nanos - counter.used()
        if self.leases is None:
            return own
        return min(own, self.leases.headroom(counter))

    def budget_counters(self, policy: Policy, now: datetime):
        return tuple((b, self.book.counter(b.scope, b.period, now)) for b in policy.budgets)

    def remaining(self, policy: Policy, now: datetime) -> int | None:
        """Smallest headroom (nano-USD) across the caller's budgets, None if unlimited."""
        heads = [self._headroom(b, c) for b, c in self.budget_counters(policy, now)]
        return min(heads) if heads else None

    def used_ratio(self, policy: Policy, now: datetime) -> Decimal:
        ratios = [Decimal(c.spent) / b.limit_nanos if b.limit_nanos else Decimal(1)
                  for b, c in self.budget_counters(policy, now)]
        return max(ratios, default=Decimal(0))

    def admit(
        self, policy: Policy, amount: int, now: datetime, *, model: str | None = None,
        images: int = 0, tpm_tokens: int = 0, count_request: bool = True,
    ) -> Admission | Refusal:
        day = period_keys(now)[0]
        if day != self._day:  # a new UTC day: forget counters of periods that are over
            self._day = day
            self.book.prune(now)
        budgets = self.budget_counters(policy, now)
        refusal = self._check(policy, budgets, amount, now, model, images, count_request)
        if refusal is None:
            refusal, tpm = self._rates(policy, tpm_tokens, count_request)
        if refusal is not None:
            self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
            return refusal
        tallies = []
        if count_request:
            tallies = [self.book.counter(policy.tenant_scope, p, now) for p in ("day", "month")]
        hold = self.book.hold([c for _, c in budgets], tallies, amount, images)
        return Admission(policy, hold, tpm, tpm_tokens if tpm else 0, budgets)

    def _check(self, policy, budgets, amount, now, model, images, count_request
               ) -> Refusal | None:
        if not policy.allows(model):
            return model_refusal(model or "")
        if not policy.block:
            return None  # alert_only: spend is watched and alerted, never refused
        if count_request:
            for period, cap in (("day", policy.max_requests_per_day),
                                ("month", policy.max_requests_per_month)):
                c = self.book.counter(policy.tenant_scope, period, now)
                if cap is not None and c.requests + 1 > cap:
                    return Refusal(429, "insufficient_quota", "request_quota_exceeded",
                                   "request_quota",
                                   f"The {ADJECTIVE[period]} request quota of {cap} is used up.",
                                   {"x-should-retry": "false"})
        if images:
            for period, cap in (("day", policy.max_images_per_day),
                                ("month", policy.max_images_per_month)):
                c = self.book.counter(policy.tenant_scope, period, now)
                if cap is not None and c.images + images > cap:
                    return Refusal(429, "insufficient_quota", "request_quota_exceeded",
                                   "request_quota",
                                   f"The {ADJECTIVE[period]} image quota of {cap} would be "
                                   "exceeded "
                                   f"({c.images} used, {images} asked).",
                                   {"x-should-retry": "false"})
        for b, c in budgets:
            if amount > self._headroom(b, c):
                return budget_refusal(b, c.used())
        return None

    def _rates(self, policy, tpm_tokens, count_request):
        rpm = self.rates.bucket(policy.tenant, "rpm", policy.rpm) if policy.rpm else None
        tpm = self.rates.bucket(policy.tenant, "tpm", policy.tpm) if policy.tpm else None
        if rpm is not None and count_request:
            wait = rpm.wait_for(1)
            if wait > 0:
                return rate_refusal("rpm", wait, policy.rpm, rpm.level), None
        if tpm is not None and tpm_tokens:
            wait = tpm.wait_for(tpm_tokens)
            if wait > 0:
                return rate_refusal("tpm", wait, policy.tpm, tpm.level), None
        if rpm is not None and count_request:
            rpm.take(1)
        if tpm is not None and tpm_tokens:
            tpm.take(tpm_tokens)
        return None, tpm

    def settle(self, admission: Admission, actual: int, now: datetime,
               actual_tokens: int | None = None, model: str | None = None) -> None:
        self.book.settle(admission.hold, actual)
        if admission.tpm is not None and actual_tokens is not None:
            admission.tpm.give_back(max(0, admission.tpm_tokens - actual_tokens))
        self._after_spend(admission.policy, admission.budgets, now)

    def release(self, admission: Admission, uncount: bool = False) -> None:
        self.book.release(admission.hold, uncount)
        if admission.tpm is not None:
            admission.tpm.give_back(admission.tpm_tokens)

    def spend(self, policy: Policy, actual: int, now: datetime) -> None:
        """Spend with no reservation (Live usage increments, estimates)."""
        budgets = self.budget_counters(policy, now)
        self.book.add_spend([c for _, c in budgets], actual)
        self._after_spend(policy, budgets, now)

    def _after_spend(self, policy: Policy, budgets, now: datetime) -> None:
        for b, c in budgets:
            if b.scope == policy.tenant_scope and b.limit_nanos:
                gauge = self._ratio_gauges.get((policy.tenant, b.period))
                if gauge is None:
                    gauge = self.metrics.budget_used_ratio.labels(policy.tenant, b.period)
                    self._ratio_gauges[(policy.tenant, b.period)] = gauge
                gauge.set(c.spent / b.limit_nanos)
        if budgets:
            self._on_spend(policy, budgets, now)

    def exhausted(self, policy: Policy, now: datetime) -> BudgetLimit | None:
        """The first budget whose spend reached its limit (block mode only)."""
        if not policy.block:
            return None
        for b, c in self.budget_counters(policy, now):
            if c.spent >= b.limit_nanos:
                return b
        return None
