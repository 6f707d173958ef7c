"""Where a caller's limits stand: one `LimitStatus` per limit, and the budget headers.

Read-only views over the very counters admission uses (nothing here creates
or changes a counter): every USD budget, request and image cap, rpm/tpm
bucket and the concurrent-session cap that applies to a `Policy`, each with
its limit, use, reservation, remaining headroom, reset time and a status
(`ok | warning | critical | exceeded`, the same rule `/admin/budgets` and the
alerts use). `budget_headers` is the cheap per-call form of the tightest USD
budget for the `x-faregate-budget-*` answer headers.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable

from faregate.storage import format_usd

from ._budget import BudgetBook, Counter
from ._policy import BudgetLimit, Policy
from ._ratelimit import RateLimits

Budgets = tuple[tuple[BudgetLimit, Counter], ...]
STATUSES = ("ok", "warning", "critical", "exceeded")


def level_for(threshold: Decimal) -> str:
    """warning below 95% of the limit, critical below 100%, exceeded at or above."""
    if threshold < Decimal("0.95"):
        return "warning"
    if threshold < Decimal("1"):
        return "critical"
    return "exceeded"


def status_for(spent: int, limit: int, thresholds: Iterable[Decimal]) -> str:
    """exceeded at or over the limit; else the level of the highest alert
    threshold reached (0.8 → warning, 0.95 → critical by default); else ok."""
    if limit <= 0 or spent >= limit:
        return "exceeded" if spent >= limit else "ok"
    ratio = Decimal(spent) / limit
    reached = [t for t in thresholds if ratio >= t]
    return level_for(max(reached)) if reached else "ok"


def period_end(period: str, now: datetime) -> datetime:
    """The start of the next UTC day or month: when a budget of `period` resets."""
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day + timedelta(days=1)
    days = calendar.monthrange(now.year, now.month)[1]
    return day.replace(day=1) + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit of one caller, now. Money in nano-USD, everything else a count."""

    kind: str  # usd | requests | images | rpm | tpm | concurrent_sessions
    scope: str  # "tenant:acme" | "user:acme/alice"
    period: str | None  # day | month | minute; None for concurrent sessions
    limit: int
    used: int  # spent (usd), counted (requests, images), taken (rpm, tpm), open (sessions)
    reserved: int  # held by calls in flight (usd); 0 for the others
    resets_at: datetime | None
    status: str

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used - self.reserved)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape: money as exact decimal strings, counts as integers."""
        show = format_usd if self.kind == "usd" else int
        return {
            "kind": self.kind,
            "scope": self.scope,
            "period": self.period,
            "limit": show(self.limit),
            "used": show(self.used),
            "reserved": show(self.reserved),
            "remaining": show(self.remaining),
            "resets_at": iso_utc(self.resets_at),
            "status": self.status,
        }


def iso_utc(at: datetime | None) -> str | None:
    """`2026-11-23T00:00:00Z` (None stays None)."""
    if at is None:
        return None
    return at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def limit_statuses(policy: Policy, book: BudgetBook, rates: RateLimits, now: datetime,
                   thresholds: Iterable[Decimal], active_sessions: int) -> list[LimitStatus]:
    """Every limit that applies to `policy`: its USD budgets (tenant, then user), request
    and image caps, rpm/tpm and concurrent sessions."""
    thresholds = tuple(thresholds)
    out = []
    for b in policy.budgets:
        c = book.peek(b.scope, b.period, now)
        spent, reserved = (c.spent, c.reserved) if c is not None else (0, 0)
        out.append(LimitStatus("usd", b.scope, b.period, b.limit_nanos, spent, reserved,
                               period_end(b.period, now),
                               status_for(spent, b.limit_nanos, thresholds)))
    scope = policy.tenant_scope
    for kind, caps in (("requests", (("day", policy.max_requests_per_day),
                                     ("month", policy.max_requests_per_month))),
                       ("images", (("day", policy.max_images_per_day),
                                   ("month", policy.max_images_per_month)))):
        for period, cap in caps:
            if cap is None:
                continue
            c = book.peek(scope, period, now)
            used = (c.requests if kind == "requests" else c.images) if c is not None else 0
            out.append(LimitStatus(kind, scope, period, cap, used, 0, period_end(period, now),
                                   status_for(used, cap, thresholds)))
    for kind, per_minute in (("rpm", policy.rpm), ("tpm", policy.tpm)):
        if per_minute:
            level = rates.available(policy.tenant, kind, per_minute)
            used = per_minute - math.floor(level)
            refill_s = (per_minute - level) * 60.0 / per_minute
            out.append(LimitStatus(kind, scope, "minute", per_minute, used, 0,
                                   now + timedelta(seconds=math.ceil(refill_s)),
                                   status_for(used, per_minute, thresholds)))
    cap = policy.max_concurrent_sessions
    if cap is not None:
        out.append(LimitStatus("concurrent_sessions", scope, None, cap, active_sessions, 0,
                               None, status_for(active_sessions, cap, thresholds)))
    return out


def tightest(budgets: Budgets) -> tuple[BudgetLimit, int] | None:
    """The USD budget with the least left (limit − spent − reserved, may be < 0)."""
    best: tuple[BudgetLimit, int] | None = None
    for b, c in budgets:
        left = b.limit_nanos - c.spent - c.reserved
        if best is None or left < best[1]:
            best = (b, left)
    return best


DAY_S = 86_400
#: (start, end) epoch seconds of the UTC month last asked about (hot path)
_MONTH: list[float] = [0.0, 0.0]
#: limit nano-USD -> its decimal string, memoised (limits are few and change on reload)
_LIMIT_TEXT: dict[int, str] = {}


def seconds_left(period: str, epoch: float) -> int:
    """Whole seconds from `epoch` until the UTC day or month resets (POSIX days are 86400 s)."""
    if period == "day":
        return math.ceil(DAY_S - epoch % DAY_S)
    start, end = _MONTH
    if not start <= epoch < end:
        now = datetime.fromtimestamp(epoch, timezone.utc)
        end = period_end("month", now).timestamp()
        _MONTH[:] = [now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp(),
                     end]
    return math.ceil(end - epoch)


def budget_headers(budgets: Budgets, epoch: float) -> list[tuple[str, str]]:
    """`x-faregate-budget-*` of the tightest USD budget at `epoch` (`time.time()`);
    none without a USD budget. About 2 µs: it is on every admitted call."""
    found = tightest(budgets)
    if found is None:
        return []
    b, left = found
    limit = _LIMIT_TEXT.get(b.limit_nanos)
    if limit is None:
        if len(_LIMIT_TEXT) > 1024:
            _LIMIT_TEXT.clear()
        limit = _LIMIT_TEXT[b.limit_nanos] = format_usd(b.limit_nanos)
    return [
        ("x-faregate-budget-remaining", format_usd(left) if left > 0 else "0.000000"),
        ("x-faregate-budget-limit", limit),
        ("x-faregate-budget-reset", str(seconds_left(b.period, epoch))),
        ("x-faregate-budget-scope", f"{b.scope}:{b.period}"),
    ]
