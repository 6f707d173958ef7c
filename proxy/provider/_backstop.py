"""Backstop limits: the provider's own hard monthly cap per mapped project.

Money faregate cannot see (WebRTC media, a minted key used at the upstream)
is still capped if OpenAI itself stops the project: each project a tenant
maps to gets a hard monthly spend limit of its tenants' `monthly_usd` ×
`[provider] backstop_factor`, rounded up to the cent (the limit is in cents).
`plan` compares that with what the project has; `apply` sets what differs
and records every change. A project whose tenants have no monthly budget is
left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Callable

from faregate.storage import LimitChange

from .._config import Settings
from ._api import ProviderApi, ProviderError

log = logging.getLogger("faregate.provider")


@dataclass(frozen=True, slots=True)
class Backstop:
    project: str
    tenants: tuple[str, ...]
    monthly_usd: Decimal  # the tenants' monthly budgets, summed
    cents: int  # the hard limit the project should have


@dataclass(frozen=True, slots=True)
class LimitPlan:
    backstop: Backstop
    current_cents: int | None  # None: the project has no hard limit

    @property
    def changes(self) -> bool:
        return self.current_cents != self.backstop.cents


def monthly_usd(settings: Settings, tenant: str) -> Decimal | None:
    """The tenant's monthly budget: its own, else its tier's."""
    t = settings.tenants[tenant]
    if t.monthly_usd is not None:
        return t.monthly_usd
    tier = settings.tiers.get(t.tier) if t.tier else None
    return tier.monthly_usd if tier is not None else None


def backstops(settings: Settings) -> list[Backstop]:
    """The hard limit every mapped project should have (tenants sharing one are summed)."""
    by_project: dict[str, list[tuple[str, Decimal]]] = {}
    for name, tenant in settings.tenants.items():
        budget = monthly_usd(settings, name)
        if tenant.openai_project and budget is not None:
            by_project.setdefault(tenant.openai_project, []).append((name, budget))
    factor = settings.provider.backstop_factor
    out = []
    for project, entries in sorted(by_project.items()):
        total = sum((b for _, b in entries), Decimal(0))
        cents = int((total * factor * 100).to_integral_value(rounding=ROUND_CEILING))
        out.append(Backstop(project, tuple(sorted(n for n, _ in entries)), total, cents))
    return out


async def plan(api: ProviderApi, wanted: list[Backstop]) -> list[LimitPlan]:
    return [LimitPlan(b, await api.spend_limit(b.project)) for b in wanted]


async def apply(api: ProviderApi, plans: list[LimitPlan],
                record: Callable[[LimitChange], None]) -> list[LimitChange]:
    """Set every limit that differs; each change (or failure) is logged and recorded."""
    changes = []
    for p in plans:
        if not p.changes:
            continue
        b = p.backstop
        try:
            kept = await api.set_spend_limit(b.project, b.cents)
        except ProviderError as exc:
            change = LimitChange(b.project, b.tenants, p.current_cents, b.cents, "failed", str(exc))
            log.error("provider hard limit not set", extra={
                "project": b.project, "cents": b.cents, "error": str(exc)})
        else:
            change = LimitChange(b.project, b.tenants, p.current_cents, kept, "applied")
            log.warning("provider hard limit set", extra={
                "project": b.project, "tenants": list(b.tenants), "old_cents": p.current_cents,
                "new_cents": kept})
        record(change)
        changes.append(change)
    return changes


def _cents(c: int | None) -> str:
    return "none" if c is None else f"${Decimal(c).scaleb(-2):.2f}"


def render_plans(plans: list[LimitPlan], applied: bool) -> str:
    """The changes as a table: what each project has, what it gets."""
    head = ("project", "tenants", "monthly_usd", "current", "backstop", "action")
    rows = [head]
    for p in plans:
        b = p.backstop
        action = ("set" if applied else "would set") if p.changes else "unchanged"
        rows.append((b.project, ",".join(b.tenants), f"{b.monthly_usd:f}",
                     _cents(p.current_cents), _cents(b.cents), action))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if not plans:
        lines.append("(no tenant maps to an openai_project with a monthly_usd budget)")
    return "\n".join(lines)
