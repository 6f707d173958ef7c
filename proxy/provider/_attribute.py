"""Realtime cost faregate could not see, attributed to the sessions that caused it.

A WebRTC/SIP call or an ephemeral key created through faregate whose session
never came back through it (no sideband socket, the key used straight at the
upstream) is billed by the provider but never metered. For each final UTC day
and project group, the provider's Realtime line items minus the Realtime cost
faregate metered is that unseen cost; it is split evenly (to the nano-dollar,
remainder to the earliest) over the group's unseen sessions of that day and
charged to their creators, flagged `from_provider`. Pure: the daily job
records what this returns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterable

from faregate.storage import DailyTotal, DelegatedSession

from ._costs import CostLine
from ._reconcile import ProjectMap

#: A session created this long before a day began may still spend on that day.
LOOKBACK = timedelta(hours=2)


def is_realtime_line(line_item: str | None) -> bool:
    """A provider line item of a Realtime/Live model ("gpt-realtime, audio input")."""
    if not line_item:
        return False
    model = line_item.split(",", 1)[0].strip().lower()
    return "realtime" in model or model.startswith("gpt-live")


def _day_bounds(day: date) -> tuple[int, int]:
    start = int(datetime.combine(day, time.min, timezone.utc).timestamp()) * 1000
    return start, start + 86_400_000


@dataclass(frozen=True, slots=True)
class Attribution:
    """The provider's unseen Realtime cost of one day, charged to one session's creator."""

    day: date
    group: str
    session: DelegatedSession
    nanos: int

    @property
    def record_id(self) -> str:
        """Deterministic, so attributing a day again adds nothing (time-ordered like ids)."""
        _, end = _day_bounds(self.day)
        digest = hashlib.sha256(
            f"from_provider|{self.day.isoformat()}|{self.session.session_id}".encode())
        return f"{end - 1:012x}{digest.hexdigest()[:20]}"

    @property
    def response_id(self) -> str:
        return f"from_provider:{self.day.isoformat()}"

    @property
    def at(self) -> datetime:
        """The last millisecond of the day the cost belongs to."""
        _, end = _day_bounds(self.day)
        return datetime.fromtimestamp((end - 1) / 1000, timezone.utc)


def realtime_residuals(provider: Iterable[CostLine], ledger: Iterable[DailyTotal],
                       projects: ProjectMap) -> dict[tuple[date, str], int]:
    """Per (day, project group): the provider's Realtime cost minus faregate's metered one."""
    out: dict[tuple[date, str], int] = {}
    for line in provider:
        if is_realtime_line(line.line_item):
            key = (line.day, projects.of_project(line.project))
            out[key] = out.get(key, 0) + line.nanos
    for total in ledger:
        key = (total.day, projects.of_tenant(total.tenant))
        if key in out:
            out[key] -= total.realtime_nanos
    return out


def _split(nanos: int, sessions: list[DelegatedSession]) -> list[int]:
    share, rest = divmod(nanos, len(sessions))
    return [share + (1 if i < rest else 0) for i in range(len(sessions))]


def attribute(provider: Iterable[CostLine], ledger: Iterable[DailyTotal],
              sessions: Iterable[DelegatedSession], projects: ProjectMap,
              final: Callable[[date], bool]) -> list[Attribution]:
    """Every final day's unseen Realtime cost, split over that day's unseen sessions."""
    unseen = sorted((s for s in sessions if s.seen_ms is None),
                    key=lambda s: (s.created_ms, s.ref))
    out: list[Attribution] = []
    for (day, group), residual in sorted(realtime_residuals(provider, ledger, projects).items()):
        if residual <= 0 or not final(day):
            continue
        start, end = _day_bounds(day)
        lookback = int(LOOKBACK.total_seconds() * 1000)
        mine = [s for s in unseen if projects.of_project(s.project) == group
                and start - lookback <= s.created_ms < end]
        if not mine:
            continue
        out.extend(Attribution(day, group, s, n) for s, n in zip(mine, _split(residual, mine)))
    return out
