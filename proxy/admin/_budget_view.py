"""Budget status for operators: where each budget stands and where it is heading.

Pure: from the limits in force (the same `Policy` the hot path enforces)
and the in-memory counters, each budget scope becomes a `BudgetView` —
spent, reserved, remaining, used ratio, period-end projection at the
current run rate, and a status of ok / warning / critical / exceeded. The
admin API and the dashboard read these; nothing here touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Mapping

from faregate.pricing import PriceTable
from faregate.storage import format_usd

from .._config import Settings
from ..alerts import projected
from ..caller import Caller
from ..quota import BudgetBook, BudgetLimit, period_key, policy_for, status_for

_RATIO = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class BudgetView:
    scope: str
    tenant: str
    user: str | None
    period: str
    period_start: str
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    projected_nanos: int
    status: str
    block: bool

    @property
    def remaining_nanos(self) -> int:
        return max(0, self.limit_nanos - self.spent_nanos - self.reserved_nanos)

    @property
    def used_ratio(self) -> Decimal:
        if self.limit_nanos <= 0:
            return Decimal(1) if self.spent_nanos else Decimal(0)
        return (Decimal(self.spent_nanos) / self.limit_nanos).quantize(_RATIO, ROUND_HALF_EVEN)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tenant": self.tenant,
            "user": self.user,
            "period": self.period,
            "period_start": self.period_start,
            "limit_usd": format_usd(self.limit_nanos),
            "spent_usd": format_usd(self.spent_nanos),
            "reserved_usd": format_usd(self.reserved_nanos),
            "remaining_usd": format_usd(self.remaining_nanos),
            "used_ratio": str(self.used_ratio),
            "projected_period_end_usd": format_usd(self.projected_nanos),
            "status": self.status,
            "on_exceed": "block" if self.block else "alert_only",
        }


def callers(settings: Settings, book: BudgetBook) -> list[Caller]:
    """Everyone who may have a budget: configured tenants and keys, and every
    tenant or user that has spent something this period."""
    seen: dict[tuple[str, str | None], str | None] = {}
    for name in settings.tenants:
        seen.setdefault((name, None), None)
    for key in settings.keys:
        seen.setdefault((key.tenant, None), None if key.tenant in settings.tenants else key.tier)
        if key.user:
            seen.setdefault((key.tenant, key.user), key.tier)
    for (scope, _, _), _counter in book.items():
        kind, _, name = scope.partition(":")
        if kind == "tenant":
            seen.setdefault((name, None), None)
        elif kind == "user":
            tenant, _, user = name.partition("/")
            seen.setdefault((tenant, user), None)
    return [Caller(t, u, tier, None, None) for (t, u), tier in seen.items()]


def budget_views(
    settings: Settings,
    table: PriceTable,
    book: BudgetBook,
    now: datetime,
    ledger_spend: Mapping[tuple[str, str], int] | None = None,
) -> list[BudgetView]:
    """Every budget in force, fullest first.

    `ledger_spend` maps (scope, period) to spend the shared database knows of
    (other replicas' charges); a scope shows the larger of it and this
    replica's own count.
    """
    views: dict[tuple[str, str], BudgetView] = {}
    thresholds = settings.alerts.thresholds
    for caller in callers(settings, book):
        policy = policy_for(settings, caller, table)
        for limit in policy.budgets:
            if (limit.scope, limit.period) in views:
                continue
            if caller.user is not None and limit.scope == policy.tenant_scope:
                continue  # listed under the tenant itself
            views[(limit.scope, limit.period)] = _view(
                limit, policy.tenant, caller.user, policy.block, book, now, thresholds,
                (ledger_spend or {}).get((limit.scope, limit.period), 0),
            )
    return sorted(views.values(), key=lambda v: (-v.used_ratio, v.scope, v.period))


def _view(limit: BudgetLimit, tenant: str, user: str | None, block: bool, book: BudgetBook,
          now: datetime, thresholds: list[Decimal], shared_spent: int) -> BudgetView:
    counter = book.peek(limit.scope, limit.period, now)
    spent = max(counter.spent if counter else 0, shared_spent)
    reserved = counter.reserved if counter else 0
    return BudgetView(
        scope=limit.scope,
        tenant=tenant,
        user=user if limit.scope.startswith("user:") else None,
        period=limit.period,
        period_start=period_key(limit.period, now),
        limit_nanos=limit.limit_nanos,
        spent_nanos=spent,
        reserved_nanos=reserved,
        projected_nanos=projected(spent, limit.period, now),
        status=status_for(spent, limit.limit_nanos, thresholds),
        block=block,
    )


def ledger_spend(rows: Iterable[tuple]) -> dict[tuple[str, str], int]:
    """(scope, period) → spend from `Ledger.spend_since` rows (shared databases)."""
    out: dict[tuple[str, str], int] = {}
    for tenant, user, m_cost, _mr, _mi, d_cost, _dr, _di in rows:
        scopes = [f"tenant:{tenant}"] + ([f"user:{tenant}/{user}"] if user else [])
        for scope in scopes:
            for period, cost in (("month", m_cost), ("day", d_cost)):
                out[(scope, period)] = out.get((scope, period), 0) + int(cost or 0)
    return out
