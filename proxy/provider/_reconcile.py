"""Reconciliation arithmetic: the ledger's days beside the provider's, as pure functions.

Both sides are summed into cells of (UTC day, group) — a project, an API key
or a line item — in integer nano-USD, and each cell becomes one
`Reconciliation`: ledger and provider totals, the drift (provider − ledger),
whether it is within the tolerance, and the reasons faregate can name.

A cell is within tolerance when |drift| ≤ max(tolerance × provider cost,
one cent): the provider's amounts are decimals of floats, so a day of a few
thousandths of a dollar must not fail on rounding alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime
from decimal import Decimal
from typing import Callable, Iterable, Mapping

from faregate.storage import DailyTotal, DelegatedSession, LineItemTotal, Reconciliation
from faregate.storage import format_usd

from ._costs import CostLine

GROUPINGS = ("project", "api_key", "line_item")
UNMAPPED = "unmapped"  # tenants without openai_project / projects no tenant maps to
MIN_DRIFT_NANOS = 10_000_000  # one cent

#: Line-item kinds as the provider spells them -> faregate's price classes.
LINE_KINDS = {
    "input": "input", "uncached_input": "input", "text_input": "input",
    "cached_input": "cached_input", "cached_text_input": "cached_input",
    "output": "output", "text_output": "output",
    "audio_input": "audio_input", "cached_audio_input": "cached_audio_input",
    "audio_output": "audio_output", "image_input": "image_input",
    "cached_image_input": "cached_image_input", "image_output": "image_output",
    "seconds": "seconds", "characters": "characters", "images": "images",
}


@dataclass(slots=True)
class Cell:
    """One day and group, summed from both sides."""

    ledger: int = 0
    provider: int = 0
    unpriced: int = 0
    estimated: int = 0
    estimated_nanos: int = 0
    unconfirmed: int = 0
    unconfirmed_nanos: int = 0
    from_provider: int = 0
    unseen: int = 0
    extra: set[str] = field(default_factory=set)

    def add_total(self, t: DailyTotal) -> None:
        self.ledger += t.cost_nanos
        self.unpriced += t.unpriced
        self.estimated += t.estimated
        self.estimated_nanos += t.estimated_nanos
        self.unconfirmed += t.unconfirmed
        self.unconfirmed_nanos += t.unconfirmed_nanos
        self.from_provider += t.from_provider_nanos


Cells = dict[tuple[date, str], Cell]


@dataclass(frozen=True)
class ProjectMap:
    """Tenants' `openai_project`s. Provider projects no tenant maps to, and tenants
    without a project, meet in one `unmapped` group (a single-project setup
    reconciles as that one group)."""

    tenants: Mapping[str, str]  # tenant -> project

    def of_tenant(self, tenant: str) -> str:
        return self.tenants.get(tenant, UNMAPPED)

    def of_project(self, project: str | None) -> str:
        return project if project is not None and project in self._mapped else UNMAPPED

    @cached_property
    def _mapped(self) -> frozenset[str]:
        return frozenset(self.tenants.values())

    def tenants_of(self, group: str) -> list[str]:
        return sorted(t for t, p in self.tenants.items() if p == group)


@dataclass(frozen=True)
class KeyMap:
    """Which provider API key carried a ledger row's call upstream.

    `upstream(tenant, key_id)` is the fingerprint of the key faregate sent (the
    caller's own in passthrough, the configured one in keys mode); `provider`
    maps fingerprints to the provider's API key ids (matched by redacted value).
    """

    upstream: Callable[[str, str | None], str | None]
    provider: Mapping[str, str]

    def group(self, tenant: str, key_id: str | None) -> tuple[str, bool]:
        fingerprint = self.upstream(tenant, key_id)
        if fingerprint is not None and fingerprint in self.provider:
            return self.provider[fingerprint], True
        return fingerprint or f"tenant:{tenant}", False


def _cell(cells: Cells, day: date, group: str) -> Cell:
    cell = cells.get((day, group))
    if cell is None:
        cell = cells[(day, group)] = Cell()
    return cell


def by_project(provider: Iterable[CostLine], ledger: Iterable[DailyTotal], projects: ProjectMap,
               unseen: Mapping[tuple[date, str], int] | None = None) -> Cells:
    cells: Cells = {}
    for line in provider:
        group = projects.of_project(line.project)
        cell = _cell(cells, line.day, group)
        cell.provider += line.nanos
        if group == UNMAPPED and line.project:
            cell.extra.add(f"unmapped_project: {line.project}")
    for total in ledger:
        _cell(cells, total.day, projects.of_tenant(total.tenant)).add_total(total)
    for key, n in (unseen or {}).items():
        _cell(cells, *key).unseen += n
    return cells


def by_api_key(provider: Iterable[CostLine], ledger: Iterable[DailyTotal], keys: KeyMap
               ) -> Cells:
    cells: Cells = {}
    known = set(keys.provider.values())
    for line in provider:
        group = line.api_key or "(no key)"
        cell = _cell(cells, line.day, group)
        cell.provider += line.nanos
        if group not in known:
            cell.extra.add("key_unknown_to_faregate")
    for total in ledger:
        group, matched = keys.group(total.tenant, total.key_id)
        cell = _cell(cells, total.day, group)
        cell.add_total(total)
        if not matched:
            cell.extra.add("key_not_matched_to_provider")
    return cells


def _kind(text: str) -> str:
    k = text.strip().lower().replace(" ", "_").replace("-", "_")
    return k[: -len("_tokens")] if k.endswith("_tokens") else k


def line_item_group(name: str, family_of: Callable[[str], str | None]) -> tuple[str, bool]:
    """A provider line item ("gpt-4o-mini-2024-07-18, input") as faregate's
    "family, class" group, and whether faregate meters it at all."""
    model, sep, kind = name.rpartition(",")
    if sep:
        family = family_of(model.strip())
        cls = LINE_KINDS.get(_kind(kind))
        if family is not None and cls is not None:
            return f"{family}, {cls}", True
    return name.strip(), False


def by_line_item(provider: Iterable[CostLine], ledger: Iterable[LineItemTotal],
                 family_of: Callable[[str], str | None]) -> Cells:
    cells: Cells = {}
    for line in provider:
        group, metered = line_item_group(line.line_item or "(no line item)", family_of)
        cell = _cell(cells, line.day, group)
        cell.provider += line.nanos
        if not metered:
            cell.extra.add("not_metered_by_faregate")
    for item in ledger:
        cell = _cell(cells, item.day, f"{family_of(item.model) or item.model}, {item.item}")
        cell.ledger += item.nanos
        if item.item == "from_provider":
            cell.from_provider += item.nanos
    return cells


def within(ledger: int, provider: int, tolerance: Decimal) -> bool:
    """|provider − ledger| ≤ max(tolerance × provider, one cent)."""
    drift = abs(provider - ledger)
    return drift <= MIN_DRIFT_NANOS or Decimal(drift) <= tolerance * Decimal(abs(provider))


def notes(cell: Cell, final: bool) -> tuple[str, ...]:
    """The reasons faregate can name for a cell's drift."""
    out = [] if final else ["provider_day_not_final"]
    if cell.unpriced:
        out.append(f"unpriced: {cell.unpriced} calls recorded at $0")
    if cell.estimated:
        out.append(f"estimated: {cell.estimated} calls, ${format_usd(cell.estimated_nanos)}")
    if cell.unconfirmed:
        out.append(f"unconfirmed_prices: {cell.unconfirmed} calls, "
                   f"${format_usd(cell.unconfirmed_nanos)}")
    if cell.unseen:
        out.append(f"unseen_sessions: {cell.unseen}")
    if cell.from_provider:
        out.append(f"from_provider: ${format_usd(cell.from_provider)}")
    if cell.provider and not cell.ledger:
        out.append("provider_only")
    elif cell.ledger and not cell.provider:
        out.append("ledger_only")
    out.extend(sorted(cell.extra))
    return tuple(out)


def compare(cells: Cells, grouping: str, tolerance: Decimal, final: Callable[[date], bool],
            checked_at: datetime) -> list[Reconciliation]:
    """Each cell as a `Reconciliation`, by day then group."""
    out = []
    for (day, group), cell in sorted(cells.items()):
        is_final = final(day)
        out.append(Reconciliation(
            day=day, grouping=grouping, group=group, ledger_nanos=cell.ledger,
            provider_nanos=cell.provider, notes=notes(cell, is_final), final=is_final,
            within=within(cell.ledger, cell.provider, tolerance), checked_at=checked_at))
    return out


def failing(results: Iterable[Reconciliation]) -> list[Reconciliation]:
    """Final days outside the tolerance (a day the provider has not closed yet is shown,
    never failed)."""
    return [r for r in results if r.final and not r.within]


def unseen_counts(sessions: Iterable[DelegatedSession], projects: ProjectMap,
                  day_of: Callable[[int], date]) -> dict[tuple[date, str], int]:
    """Calls and keys no session through faregate used, per creation day and project group."""
    counts: dict[tuple[date, str], int] = {}
    for s in sessions:
        if s.seen_ms is None:
            key = (day_of(s.created_ms), projects.of_project(s.project))
            counts[key] = counts.get(key, 0) + 1
    return counts
