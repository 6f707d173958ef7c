"""Admission control: budgets, request and image caps, rate limits, models.

`Quota.reserve()` runs before a call is forwarded (and before every Realtime
response). It either refuses — with the exact DESIGN §5 answer — or holds
the call's reservation against every budget it falls under, and takes its
share of the per-tenant and the shared `[upstream_limits]` rate buckets.
`settle()` swaps the hold for the real charge; `release()` drops it.

The promise: **spent ≤ limit + what one call costs beyond its reservation**,
for any concurrency. An estimate is not an upper bound (a prompt held
upstream, an image, a file), so each call also names its worst case, the
most it can cost at all. Far from a limit every worst case fits and calls
go side by side, each holding its worst case; near the limit a call whose
worst case does not fit goes *one at a time*: it waits (at most
`[server] admission_wait_s`) for the counter's lane, then 429 with
`retry-after`. All of it is in-memory arithmetic: no database round trip per
call (with shared budgets, a lease now and then; see `_leases`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable

from .._config import UpstreamLimitSettings
from .._metrics import Metrics
from ._asks import Admission, Ask, Budgets, Queued, Sizing
from ._budget import BudgetBook, Counter, period_keys
from ._leases import Leases
from ._policy import BudgetLimit, Policy
from ._ratelimit import Bucket, RateLimits
from ._ratios import InputRatios
from ._refusals import (
    ADJECTIVE,
    Refusal,
    budget_refusal,
    concurrency_refusal,
    contention_refusal,
    model_refusal,
    rate_refusal,
    request_quota_refusal,
    upstream_refusal,
)
from ._slots import SessionTicket, Slots
from ._status import LimitStatus, limit_statuses
from ._upstream import UpstreamLimits

MAX_RECENT = 100_000  # callers whose latest model is remembered
SpendHook = Callable[[Policy, Budgets, datetime], None]


class Quota:
    def __init__(self, metrics: Metrics, on_spend: SpendHook):
        self.book = BudgetBook()
        self.rates = RateLimits()
        self.upstream = UpstreamLimits()
        self.ratios = InputRatios()
        self.metrics = metrics
        self._on_spend = on_spend
        self._ratio_gauges: dict[tuple[str, str], object] = {}
        self._day = ""
        self.leases: Leases | None = None  # when replicas share limits (PostgreSQL)
        self.slots = Slots()  # concurrent sessions (shared with the leases when they are)
        #: (tenant, user) -> model of its latest admitted call (the quota view's typical call)
        self._recent: dict[tuple[str, str | None], str] = {}

    def share(self, leases: Leases) -> None:
        """Replicas share one ledger: every limit is leased from it from now on."""
        self.leases = leases
        self.slots = leases.slots
        leases.start()

    @property
    def leasing(self) -> bool:
        return self.leases is not None

    async def prepare(self, policy: Policy, ask: Ask, now: datetime) -> None:
        """With shared limits: lease what `ask` needs now (before sizing a clamp)."""
        if self.leases is not None:
            await self.leases.prepare(self, policy, ask, now)

    def _headroom(self, limit: BudgetLimit, counter: Counter) -> int:
        own = limit.limit_nanos - counter.used()
        if self.leases is None:
            return own
        return min(own, self.leases.headroom(counter))

    def budget_counters(self, policy: Policy, now: datetime) -> Budgets:
        return tuple((b, self.book.counter(b.scope, b.period, now)) for b in policy.budgets)

    def remaining(self, policy: Policy, now: datetime) -> int | None:
        """What a new call may hold now (nano-USD, smallest across the caller's
        budgets, beside what calls in flight may still cost); None if unlimited."""
        heads = [self._headroom(b, c) - c.exposure for b, c in self.budget_counters(policy, now)]
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

    async def reserve(self, policy: Policy, ask: Ask, now: datetime, wait_s: float
                      ) -> Admission | Refusal:
        """Admit the call, waiting (at most `wait_s`) for its turn near a limit."""
        deadline: float | None = None  # taken only once a call has to wait
        while True:
            if self.leases is not None:
                await self.leases.prepare(self, policy, ask, now)
            result = self.admit(policy, ask, now)
            if isinstance(result, Refusal):
                return result
            if isinstance(result, Admission) and (self.leases is None or not result.hold.lane):
                return result
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + wait_s
            if isinstance(result, Admission):
                return await self.leases.take_turns(self, result, deadline)  # type: ignore
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                refusal = contention_refusal(result.limit, wait_s)
                self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
                return refusal
            await result.wait(left)

    def admit(self, policy: Policy, ask: Ask, now: datetime) -> Admission | Refusal | Queued:
        """Hold the call's reservation (and counts) now, refuse it, or say it must wait."""
        day = period_keys(now)[0]
        if day != self._day:  # a new UTC day: forget counters of periods that are over
            self._day = day
            self.book.prune(now)
        budgets = self.budget_counters(policy, now)
        counts = ((self.book.counter(policy.tenant_scope, "day", now),
                   self.book.counter(policy.tenant_scope, "month", now))
                  if ask.count_request or ask.images else ())
        refusal = self._check(policy, ask, counts)
        if refusal is not None:
            self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
            return refusal
        lane = self._lanes(policy, budgets, ask)
        if isinstance(lane, Refusal):
            self.metrics.quota_rejections.labels(policy.tenant, lane.reason).inc()
            return lane
        if isinstance(lane, Queued):
            return lane
        refusal, tpm = self._rates(policy, ask.tpm_tokens, ask.count_request)
        if refusal is not None:
            self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
            return refusal
        tallies = list(counts) if ask.count_request else []
        exposure = max(0, (ask.worst or ask.amount) - ask.amount) if policy.block else 0
        hold = self.book.hold([c for _, c in budgets], tallies, ask.amount, ask.images,
                              exposure, lane)
        admission = Admission(policy, hold, tpm, ask.tpm_tokens if tpm else 0, budgets,
                              learn=ask.learn)
        shared = ask.shared
        if shared is not None and (shared.rpm or shared.tpm):
            refused = self._upstream(policy, ask, shared)
            if refused is not None:
                self.release(admission, uncount=True)
                self.metrics.quota_rejections.labels(policy.tenant, refused.reason).inc()
                return refused
            admission.upstream_tokens = ask.tpm_tokens if shared.tpm else 0
        if ask.model:
            self._note_model(policy, ask.model)
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
                    model: str | None = None, tpm_tokens: int = 0,
                    sizing: Sizing | None = None) -> Refusal | None:
        """The refusal a call of `amount` nano-USD would get now, or None; holds nothing.

        Budgets count this replica's spend and reservations (as `/admin/budgets`
        does), not how much of a shared budget it has leased so far. Creates no
        counter or bucket (anyone identified may ask, as often as it likes).
        """
        counts = (self._peek(policy.tenant_scope, "day", now),
                  self._peek(policy.tenant_scope, "month", now))
        refusal = self._check(policy, Ask(amount, model=model), counts, dry=True)
        if refusal is not None or not policy.block:
            return refusal
        for b in policy.budgets:
            c = self._peek(b.scope, b.period, now)
            if amount > b.limit_nanos - c.used():
                return budget_refusal(b, c.used(), Ask(amount, model=model, sizing=sizing))
        return self._rates(policy, tpm_tokens, True, take=False)[0]

    def _peek(self, scope: str, period: str, now: datetime) -> Counter:
        return self.book.peek(scope, period, now) or Counter()

    def _upstream(self, policy: Policy, ask: Ask, shared: UpstreamLimitSettings
                  ) -> Refusal | None:
        """The operator's account limits: this replica's fair share, and (shared
        ledger) the minute's allowance of all replicas together."""
        leases = self.leases
        rpm = 1 if ask.count_request else 0
        if leases is not None:
            for kind, limit, amount in (("rpm", shared.rpm, rpm),
                                        ("tpm", shared.tpm, ask.tpm_tokens)):
                wait = leases.window_wait("upstream", kind, amount) if limit and amount else 0
                if wait > 0:
                    return upstream_refusal(f"The shared upstream limit of {limit} "
                                            f"{'requests' if kind == 'rpm' else 'tokens'} per "
                                            "minute is reached across replicas.", wait)
        refused = self.upstream.admit(policy.tenant, shared.rpm, shared.tpm, ask.tpm_tokens)
        if refused is None and leases is not None:
            if shared.rpm and rpm:
                leases.window_take("upstream", "rpm", rpm)
            if shared.tpm and ask.tpm_tokens:
                leases.window_take("upstream", "tpm", ask.tpm_tokens)
        return refused

    def _check(self, policy: Policy, ask: Ask, counts: tuple[Counter, ...], dry: bool = False
               ) -> Refusal | None:
        """Model allowlist, request and image caps (`counts`: the tenant's day and month;
        `dry`: a read-only question, leases left alone)."""
        if not policy.allows(ask.model):
            return model_refusal(ask.model or "")
        if not policy.block:
            return None  # alert_only: spend is watched and alerted, never refused
        leases = None if dry else self.leases
        if ask.count_request:
            for period, cap, c in (("day", policy.max_requests_per_day, counts[0]),
                                   ("month", policy.max_requests_per_month, counts[1])):
                if cap is not None and (c.requests + 1 > cap or (
                        leases is not None and leases.counts_left(c, "requests") < 1)):
                    return request_quota_refusal(
                        f"The {ADJECTIVE[period]} request quota of {cap} is used up.")
        if ask.images:
            for period, cap, c in (("day", policy.max_images_per_day, counts[0]),
                                   ("month", policy.max_images_per_month, counts[1])):
                if cap is not None and (c.images + ask.images > cap or (
                        leases is not None and leases.counts_left(c, "images") < ask.images)):
                    return request_quota_refusal(
                        f"The {ADJECTIVE[period]} image quota of {cap} would be exceeded "
                        f"({c.images} used, {ask.images} asked).")
        return None

    def _lanes(self, policy: Policy, budgets: Budgets, ask: Ask
               ) -> tuple[Counter, ...] | Refusal | Queued:
        """Per budget: side by side (the worst case fits), one at a time (only the
        reservation fits: the lane), wait (calls in flight hold the room), or refuse."""
        if not policy.block:
            return ()
        worst = max(ask.worst or ask.amount, ask.amount)
        lane: list[Counter] = []
        for b, c in budgets:
            room = self._headroom(b, c) - c.exposure  # beside everything in flight
            if ask.amount > room + c.reserved + c.exposure:  # even with nothing in flight
                return budget_refusal(b, c.used(), ask, room + c.reserved + c.exposure)
            if ask.amount > room and not ask.force:
                return Queued(c, b) if ask.wait else budget_refusal(
                    b, c.used(), ask, room, c.reserved + c.exposure)
            if worst > room:
                if c.lane and not ask.force:
                    return Queued(c, b)
                lane.append(c)
        return tuple(lane)

    def _rates(self, policy: Policy, tpm_tokens: int, count_request: bool, take: bool = True
               ) -> tuple[Refusal | None, Bucket | None]:
        find = self.rates.bucket if take else self.rates.peek
        rpm = find(policy.tenant, "rpm", policy.rpm) if policy.rpm else None
        tpm = find(policy.tenant, "tpm", policy.tpm) if policy.tpm else None
        leases = self.leases
        if rpm is not None and count_request:
            wait = max(rpm.wait_for(1), leases.window_wait(policy.tenant_scope, "rpm", 1)
                       if leases is not None else 0.0)
            if wait > 0:
                return rate_refusal("rpm", wait, policy.rpm or 0, rpm.level), None
        if tpm is not None and tpm_tokens:
            wait = max(tpm.wait_for(tpm_tokens),
                       leases.window_wait(policy.tenant_scope, "tpm", tpm_tokens)
                       if leases is not None else 0.0)
            if wait > 0:
                return rate_refusal("tpm", wait, policy.tpm or 0, tpm.level), None
        if not take:
            return None, None
        if rpm is not None and count_request:
            rpm.take(1)
            if leases is not None:
                leases.window_take(policy.tenant_scope, "rpm", 1)
        if tpm is not None and tpm_tokens:
            tpm.take(tpm_tokens)
            if leases is not None:
                leases.window_take(policy.tenant_scope, "tpm", tpm_tokens)
        return None, tpm

    def settle(self, admission: Admission, actual: int, now: datetime,
               actual_tokens: int | None = None) -> None:
        """The call was charged `actual`: swap its hold for that, give back unused tokens."""
        self.book.settle(admission.hold, actual)
        if actual_tokens is not None:
            if admission.tpm is not None:
                unused = max(0, admission.tpm_tokens - actual_tokens)
                admission.tpm.give_back(unused)
                if self.leases is not None:
                    self.leases.windows.give_back(admission.policy.tenant_scope, "tpm", unused)
            if admission.upstream_tokens:
                self.upstream.give_back(admission.policy.tenant,
                                        admission.upstream_tokens - actual_tokens)
                admission.upstream_tokens = 0
        if self.leases is not None:
            self.leases.settled(admission)
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
            if self.leases is not None:
                self.leases.windows.give_back(admission.policy.tenant_scope, "tpm",
                                              admission.tpm_tokens)
            admission.tpm_tokens = 0
        if admission.upstream_tokens:
            self.upstream.give_back(admission.policy.tenant, admission.upstream_tokens)
            admission.upstream_tokens = 0
        if self.leases is not None:
            self.leases.settled(admission)

    def learn(self, admission: Admission, real_input: int) -> None:
        """A settled call's real input teaches the estimate of the next one."""
        if admission.learn is not None:
            key, raw, recorded = admission.learn
            self.ratios.observe(key, raw, real_input - recorded)

    def spend(self, policy: Policy, actual: int, now: datetime) -> None:
        """Spend with no reservation (Live usage increments, estimates)."""
        budgets = self.budget_counters(policy, now)
        self.book.add_spend([c for _, c in budgets], actual)
        if self.leases is not None:
            self.leases.overdrawn(budgets, now)
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

    async def take_session(self, policy: Policy, shared_limit: int | None,
                           active: dict[str, int]) -> SessionTicket | Refusal:
        """The concurrency slots of a new session, taken before the upstream is dialled
        (given back by the ticket on every exit path): the tenant's
        `max_concurrent_sessions` and the shared `[upstream_limits]` one."""
        ticket = SessionTicket(self.slots)
        limit = policy.max_concurrent_sessions
        if limit is not None:
            scope = f"sessions|{policy.tenant_scope}"
            if not await self.slots.take(scope, limit):
                return self._refused(policy, concurrency_refusal(limit))
            ticket.scopes += (scope,)
        if shared_limit:
            refused = self.upstream.admit_session(policy.tenant, shared_limit, active)
            if refused is None and not await self.slots.take("sessions|upstream", shared_limit):
                refused = upstream_refusal(f"The shared upstream limit of {shared_limit} "
                                           "concurrent sessions is reached.", 1.0)
            if refused is not None:
                ticket.release()
                return self._refused(policy, refused)
            ticket.scopes += ("sessions|upstream",)
        return ticket

    def _refused(self, policy: Policy, refusal: Refusal) -> Refusal:
        self.metrics.quota_rejections.labels(policy.tenant, refusal.reason).inc()
        return refusal

    async def admit_session(self, policy: Policy, now: datetime, model: str | None,
                            first_response: tuple[int, int], wait_s: float
                            ) -> Refusal | None:
        """A new Realtime/Live session counts as a request and is refused only when the
        budget cannot pay for its first response (`first_response`: the reservation
        and worst case of the smallest one faregate admits), by the same rules a
        response is admitted by. With shared limits it leases first, as a REST call
        does. Its responses are admitted one by one."""
        amount, worst = first_response
        ask = Ask(max(1, amount), worst, model=model,
                  sizing=Sizing(0, 0, model, noun="session's first response"))
        result = await self.reserve(policy, ask, now, wait_s)
        if isinstance(result, Refusal):
            return result
        self.release(result)  # the session's responses hold their own reservations
        return None
