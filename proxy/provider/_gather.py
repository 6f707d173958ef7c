"""One reconciliation run: fetch both sides for a range of days, compare them.

Shared by `faregate reconcile` and serve's daily job. The provider's side is
the Admin API's daily costs (grouped as asked); the ledger's side is its
daily totals (`Ledger.daily_totals`, `line_item_totals`) and the calls and
keys created past faregate. Everything after the fetch is the pure
arithmetic of `_reconcile` and `_attribute`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable

from faregate.pricing import PriceTable
from faregate.storage import Ledger, Reconciliation

from .._config import Settings
from ._api import ProviderApi
from ._attribute import LOOKBACK, Attribution, attribute
from ._keys import known_keys, match_keys, upstream_key
from ._reconcile import (
    UNMAPPED,
    Cells,
    KeyMap,
    ProjectMap,
    by_api_key,
    by_line_item,
    by_project,
    compare,
    unseen_counts,
)


@dataclass
class Outcome:
    grouping: str
    first: date
    last: date
    rows: list[Reconciliation]
    attributions: list[Attribution] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # group -> its tenants


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, timezone.utc)


def _day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).date()


def project_map(settings: Settings) -> ProjectMap:
    return ProjectMap({n: t.openai_project for n, t in settings.tenants.items()
                       if t.openai_project})


def finality(settings: Settings, now: datetime) -> Callable[[date], bool]:
    """A day is final once `final_after_hours` have passed since it ended."""
    wait = timedelta(hours=settings.provider.final_after_hours)
    return lambda day: now >= _midnight(day + timedelta(days=1)) + wait


def project_labels(projects: ProjectMap, groups: set[str]) -> dict[str, str]:
    out = {g: ",".join(projects.tenants_of(g)) for g in groups if g != UNMAPPED}
    return {g: t for g, t in out.items() if t}


async def key_map(settings: Settings, api: ProviderApi) -> KeyMap:
    """Match the keys faregate sends upstream with the provider's API key ids."""
    listed: list[tuple[str, str]] = []
    for project in await api.projects():
        listed.extend(await api.project_keys(project))
    return KeyMap(upstream_key(settings), match_keys(known_keys(settings), listed))


async def _by_project(settings: Settings, ledger: Ledger, api: ProviderApi, first: date,
                      last: date, final: Callable[[date], bool]
                      ) -> tuple[Cells, list[Attribution], ProjectMap]:
    projects = project_map(settings)
    provider = await api.costs(first, last, ["project_id", "line_item"])
    totals = await ledger.daily_totals(first, last)
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    sessions = await ledger.delegated_sessions(start - LOOKBACK, end)
    in_range = [s for s in sessions if s.created_ms >= int(start.timestamp()) * 1000]
    cells = by_project(provider, totals, projects, unseen_counts(in_range, projects, _day_of))
    return cells, attribute(provider, totals, sessions, projects, final), projects


async def reconcile_days(settings: Settings, prices: PriceTable, ledger: Ledger,
                         api: ProviderApi, first: date, last: date, grouping: str,
                         now: datetime | None = None) -> Outcome:
    """Compare `first`..`last` (inclusive UTC days) grouped by project, api_key or line_item."""
    now = now or datetime.now(timezone.utc)
    final = finality(settings, now)
    attributions: list[Attribution] = []
    labels: dict[str, str] = {}
    if grouping == "project":
        cells, attributions, projects = await _by_project(settings, ledger, api, first, last,
                                                          final)
        labels = project_labels(projects, {g for _, g in cells})
    elif grouping == "api_key":
        provider = await api.costs(first, last, ["api_key_id"])
        cells = by_api_key(provider, await ledger.daily_totals(first, last),
                           await key_map(settings, api))
    elif grouping == "line_item":
        provider = await api.costs(first, last, ["line_item"])
        cells = by_line_item(provider, await ledger.line_item_totals(first, last),
                             prices.resolve)
    else:
        raise ValueError(f"grouping must be project, api_key or line_item, not {grouping!r}")
    rows = compare(cells, grouping, settings.provider.drift_tolerance, final, now)
    return Outcome(grouping, first, last, rows, attributions, labels)
