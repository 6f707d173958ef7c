"""Admission control: budgets, request and image caps, rate limits, models.

`Quota.admit()` runs before a call is forwarded (and before every Realtime
`response.create`). It either refuses — with the exact DESIGN §5 answer —
or holds the call's worst-case cost against every budget it falls under,
and takes its share of the per-tenant and the shared `[upstream_limits]`
rate buckets. `settle()` swaps the hold for the real charge; `release()`
drops it. All of it is synchronous in-memory arithmetic: no database round
trip per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterable

from .._config import UpstreamLimitSettings
from .._metrics import Metrics
from ._budget import BudgetBook, Counter, Hold, period_keys
from ._leases import Leases
from ._policy import BudgetLimit, Policy
from ._ratelimit import Bucket, RateLimits
from ._refusals import (
    ADJECTIVE,
    Refusal,
    budget_refusal,
    model_refusal,
    rate_refusal,
    request_quota_refusal,
)
from ._status import Budgets, LimitStatus, limit_statuses
from ._upstream import UpstreamLimits

MAX_RECENT = 100_000  # callers whose latest model is remembered
SpendHook = Callable[[Policy, Budgets, datetime], None]


@dataclass
class Admission:
    """What an admitted call holds, until it is settled or released."""

    policy: Policy
    hold: Hold
    tpm: Bucket | None = None
    tpm_tokens: int = 0
    budgets: Budgets = ()
    upstream_tokens: int = 0  # taken from the shared [upstream_limits] tpm
    worst: Any = None  # the worst-case `Usage` held: what an unbelievable report is charged
    marker: str | None = None  # the ledger id of its start marker (the charge's id too)


class Quota:
    def __init__(self, metrics: Metrics, on_spend: SpendHook):
        self.book = BudgetBook()
        self.rates = RateLimits()
        self.upstream = UpstreamLimits()
        self.metrics = metrics
        self._on_spend = on_spend
        self._ratio_gauges: dict[tuple[str, str], object] = {}
        self._day = ""
        self.leases: Leases | None = None  # when replicas share budgets (PostgreSQL)
        #: (tenant, user) -> model of its latest admitted call (the quota view's typical call)
        self._recent: dict[tuple[str, str | None], str] = {}

    @property
    def leasing(self) -> bool:
        return self.leases is not None

    async def ensure(self, policy: Policy, amount: int, now: datetime) -> None:
        """Shared budgets: lease enough headroom first (a rare database call)."""
        if self.leases is not None and policy.budgets and policy.block:
            await self.leases.ensure(self.budget_counters(policy, now), amount, now)

    def _headroom(self, limit: BudgetLimit, counter: Counter) -> int:
        own = limit.limit_nanos - counter.used()
        if self.leases is None:
            return own
        return min(own, self.leases.headroom(counter))

    def budget_counters(self, policy: Policy, now: datetime) -> Budgets:
        return tuple((b, self.book.counter(b.scope, b.period, now)) for b in policy.budgets)

    def remaining(self, policy: Policy, now: datetime) -> int | None:
        """Smallest headroom (nano-USD) across the caller's budgets, None if unlimited."""
        heads = [self._headroom(b, c) for b, c in self.budget_counters(policy, now)]
        return min(heads) if heads else None

    def tightest(self, policy: Policy, now: datetime) -> tuple[BudgetLimit, Counter] | None:
        """The budget with the least headroom, or None if the caller has none."""
        counters = self.budget_counters(policy, now)
        if not counters:
            return None
        return min(counters, key=lambda bc: self._headroom(*bc))

    def used_ratio(self, policy: Policy, now: datetime) -> Decimal:
        ratios = [Decimal(c.spent) / b.limit_nanos if b.limit_nanos else Decimal(1)
                  for b, c in self.budget_counters(policy, now)]
        return max(ratios, default=Decimal(0))

    def admit(
        self, policy: Policy, amount: int, now: datetime, *, model: str | None = None,
        images: int = 0, tpm_tokens: int = 0, count_request: bool = True,
        shared: UpstreamLimitSettings | None = None,
    ) -> Admission | Refusal:
        """Hold `amount` nano-USD (and the call's counts) or refuse the call."""
        day = period_keys(now)[0]
        if day != self._day:  # a new UTC day: forget counters of periods that are over
            self._day = day
            self.book.prune(now)
        budgets = self.budget_counters(policy, now)
        refusal = self._check(policy, budgets, amount, now, model, images, count_request)
        tpm = None
        if refusal is None:
            refusal, tpm = self._rates(policy, tpm_tokens, count_request)
        if refusal is not None:
            self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
            return refusal
        tallies = []
        if count_request:
            tallies = [self.book.counter(policy.tenant_scope, p, now) for p in ("day", "month")]
        hold = self.book.hold([c for _, c in budgets], tallies, amount, images)
        admission = Admission(policy, hold, tpm, tpm_tokens if tpm else 0, budgets)
        if shared is not None and (shared.rpm or shared.tpm):
            refused = self.upstream.admit(policy.tenant, shared.rpm, shared.tpm, tpm_tokens)
            if refused is not None:
                self.release(admission, uncount=True)
                self.metrics.quota_rejections.labels(policy.tenant, refused.reason).inc()
                return refused
            admission.upstream_tokens = tpm_tokens if shared.tpm else 0
        if model:
            self._note_model(policy, model)
        return admission

    def _note_model(self, policy: Policy, model: str) -> None:
        key = (policy.tenant, policy.user)
        if self._recent.get(key) != model:
            if len(self._recent) >= MAX_RECENT:
                self._recent.clear()
            self._recent[key] = model

    def recent_model(self, policy: Policy) -> str | None:
        """The model of the caller's latest admitted call here, if it made one."""
        return self._recent.get((policy.tenant, policy.user))

    def statuses(self, policy: Policy, now: datetime, thresholds: Iterable[Decimal],
                 active_sessions: int) -> list[LimitStatus]:
        """Where each of the caller's limits stands (read-only)."""
        return limit_statuses(policy, self.book, self.rates, now, thresholds, active_sessions)

    def would_admit(self, policy: Policy, amount: int, now: datetime, *,
                    model: str | None = None, tpm_tokens: int = 0) -> Refusal | None:
        """The refusal a call of `amount` nano-USD would get now, or None; holds nothing.

        Budgets count this replica's spend and reservations (as `/admin/budgets`
        does), not how much of a shared budget it has leased so far. Creates no
        counter or bucket (anyone identified may ask, as often as it likes).
        """
        budgets = tuple((b, self._peek(b.scope, b.period, now)) for b in policy.budgets)
        refusal = self._check(policy, budgets, amount, now, model, 0, True, dry=True)
        if refusal is not None:
            return refusal
        return self._rates(policy, tpm_tokens, True, take=False)[0]

    def _peek(self, scope: str, period: str, now: datetime) -> Counter:
        return self.book.peek(scope, period, now) or Counter()

    def _check(self, policy: Policy, budgets: Budgets, amount: int, now: datetime,
               model: str | None, images: int, count_request: bool, dry: bool = False
               ) -> Refusal | None:
        counter = self._peek if dry else self.book.counter
        if not policy.allows(model):
            return model_refusal(model or "")
        if not policy.block:
            return None  # alert_only: spend is watched and alerted, never refused
        if count_request:
            for period, cap in (("day", policy.max_requests_per_day),
                                ("month", policy.max_requests_per_month)):
                c = counter(policy.tenant_scope, period, now)
                if cap is not None and c.requests + 1 > cap:
                    return request_quota_refusal(
                        f"The {ADJECTIVE[period]} request quota of {cap} is used up.")
        if images:
            for period, cap in (("day", policy.max_images_per_day),
                                ("month", policy.max_images_per_month)):
                c = counter(policy.tenant_scope, period, now)
                if cap is not None and c.images + images > cap:
                    return request_quota_refusal(
                        f"The {ADJECTIVE[period]} image quota of {cap} would be exceeded "
                        f"({c.images} used, {images} asked).")
        for b, c in budgets:
            if amount > (b.limit_nanos - c.used() if dry else self._headroom(b, c)):
                return budget_refusal(b, c.used())
        return None

    def _rates(self, policy: Policy, tpm_tokens: int, count_request: bool, take: bool = True
               ) -> tuple[Refusal | None, Bucket | None]:
        find = self.rates.bucket if take else self.rates.peek
        rpm = find(policy.tenant, "rpm", policy.rpm) if policy.rpm else None
        tpm = find(policy.tenant, "tpm", policy.tpm) if policy.tpm else None
        if rpm is not None and count_request:
            wait = rpm.wait_for(1)
            if wait > 0:
                return rate_refusal("rpm", wait, policy.rpm or 0, rpm.level), None
        if tpm is not None and tpm_tokens:
            wait = tpm.wait_for(tpm_tokens)
            if wait > 0:
                return rate_refusal("tpm", wait, policy.tpm or 0, tpm.level), None
        if not take:
            return None, None
        if rpm is not None and count_request:
            rpm.take(1)
        if tpm is not None and tpm_tokens:
            tpm.take(tpm_tokens)
        return None, tpm

    def settle(self, admission: Admission, actual: int, now: datetime,
               actual_tokens: int | None = None) -> None:
        """The call was charged `actual`: swap its hold for that, give back unused tokens."""
        self.book.settle(admission.hold, actual)
        if actual_tokens is not None:
            if admission.tpm is not None:
                admission.tpm.give_back(max(0, admission.tpm_tokens - actual_tokens))
            if admission.upstream_tokens:
                self.upstream.give_back(admission.policy.tenant,
                                        admission.upstream_tokens - actual_tokens)
                admission.upstream_tokens = 0
        self._after_spend(admission.policy, admission.budgets, now)

    def hold(self, policy: Policy, amount: int, now: datetime) -> Admission:
        """Hold `amount` without checking the limits: a reservation made before a restart
        (a background response still running) is held again."""
        budgets = self.budget_counters(policy, now)
        return Admission(policy, self.book.hold([c for _, c in budgets], [], amount, 0),
                         budgets=budgets)

    def count_images(self, policy: Policy, admission: Admission | None, images: int,
                     now: datetime) -> None:
        """A call made `images` images (image caps count them from every endpoint): the
        difference from what its admission counted is added to the tenant's tallies."""
        if admission is not None:
            hold = admission.hold
            delta, hold.images = images - hold.images, images
            tallies = hold.tallies
        else:
            delta = images
            tallies = [self.book.counter(policy.tenant_scope, p, now) for p in ("day", "month")]
        if delta:
            for c in tallies:
                c.images += delta

    def release(self, admission: Admission, uncount: bool = False) -> None:
        """Nothing was charged: drop the hold (and with `uncount`, the call's counts)."""
        self.book.release(admission.hold, uncount)
        if admission.tpm is not None:
            admission.tpm.give_back(admission.tpm_tokens)
        if admission.upstream_tokens:
            self.upstream.give_back(admission.policy.tenant, admission.upstream_tokens)
            admission.upstream_tokens = 0

    def spend(self, policy: Policy, actual: int, now: datetime) -> None:
        """Spend with no reservation (Live usage increments, estimates)."""
        budgets = self.budget_counters(policy, now)
        self.book.add_spend([c for _, c in budgets], actual)
        self._after_spend(policy, budgets, now)

    def _after_spend(self, policy: Policy, budgets: Budgets, now: datetime) -> None:
        for b, c in budgets:
            if b.scope == policy.tenant_scope and b.limit_nanos:
                gauge = self._ratio_gauges.get((policy.tenant, b.period))
                if gauge is None:
                    gauge = self.metrics.budget_used_ratio.labels(policy.tenant, b.period)
                    self._ratio_gauges[(policy.tenant, b.period)] = gauge
                gauge.set(c.spent / b.limit_nanos)  # type: ignore[attr-defined]
        if budgets:
            self._on_spend(policy, budgets, now)

    def exhausted(self, policy: Policy, now: datetime) -> Refusal | None:
        """The refusal for the first budget whose spend reached its limit (block mode)."""
        if not policy.block:
            return None
        for b, c in self.budget_counters(policy, now):
            if c.spent >= b.limit_nanos:
                return budget_refusal(b, c.used())
        return None

    def admit_session(self, policy: Policy, now: datetime, model: str | None
                      ) -> Refusal | None:
        """A new Realtime/Live session counts as a request; a spent budget refuses it
        (one nano-dollar must still fit). Its responses are admitted one by one."""
        result = self.admit(policy, 1, now, model=model)
        if isinstance(result, Refusal):
            return result
        self.settle(result, 0, now)
        return None
