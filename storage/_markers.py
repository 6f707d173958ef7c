"""Start markers: the calls that were forwarded and have not settled yet.

Before a metered call goes upstream, the proxy journals a *start marker*: the
charge row the call would get at its reservation, under the id its real
charge will use. Markers live only in the journal (never in the database).
When the real charge is confirmed written, its marker is confirmed with it,
so the journal segment can go. After a crash, replay meets markers whose
charge never came: each becomes its reservation charge (flagged
`interrupted` by the proxy that built it), under the same id — so if the
real charge reached the database some other way, the insert is ignored and
the real one stands.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from ._journal import Entry
from ._kinds import CHARGES, Row
from ._record import TOKEN_COLUMNS, LedgerRecord

#: The journal tag of a start marker (never a database table).
MARKER = "start"
#: The journal tag of "this marker's call will never be charged here" (a reservation
#: released, or handed to a record of its own such as a pending background response).
UNMARK = "unmark"
#: The flag of a charge made from a marker.
INTERRUPTED = "interrupted"


@dataclass(slots=True)
class StartMarker:
    """What a call is charged if it never settles: its reservation. Kept small (it is
    built for every metered call); the full charge row is made only on replay."""

    id: str  # the id the call's real charge will have
    tenant: str
    user: str | None
    key_id: str | None
    model: str
    endpoint: str
    request_id: str
    cost_nanos: int
    tokens: tuple[int, ...]  # TOKEN_COLUMNS order
    billed_nanos: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None  # a Realtime response's session


def marker_row(m: StartMarker) -> Row:
    return (m.id, m.tenant, m.user, m.key_id, m.model, m.endpoint, m.request_id, m.cost_nanos,
            m.tokens, m.billed_nanos, m.tags or None, m.session_id)


def charge_row(row: Row, at_ms: int) -> Row:
    """The charge a marker's call gets after a crash: estimated, flagged `interrupted`."""
    (rid, tenant, user, key_id, model, endpoint, request_id, cost, tokens, billed, tags,
     session_id) = row
    return CHARGES.to_row(LedgerRecord(
        id=rid, tenant=tenant, user=user, key_id=key_id, model=model, endpoint=endpoint,
        request_id=request_id, status=0, cost_nanos=int(cost),
        ts=datetime.fromtimestamp(at_ms / 1000, timezone.utc),
        tokens=dict(zip(TOKEN_COLUMNS, (int(t) for t in tokens))), estimated=True,
        flags=(INTERRUPTED,), tags=dict(tags or {}), session_id=session_id,
        response_id=f"interrupted:{rid}" if session_id else None,
        price_version="reservation", billed_nanos=None if billed is None else int(billed)))


class Markers:
    """This run's open markers (charge id -> segment) and earlier runs' unmatched ones."""

    def __init__(self, first_own: int) -> None:
        self.first_own = first_own  # segments below are an earlier run's
        self.open: dict[str, int] = {}
        self.earlier: dict[str, Entry] = {}

    def opened(self, charge_id: str, segment: int) -> None:
        self.open[charge_id] = segment

    def settled(self, entries: Iterable[tuple[str, int, tuple[Any, ...], int]],
                counts: Counter) -> None:
        """Written charges confirm their markers: add the markers' segments to `counts`."""
        if not self.open:
            return
        for kind, _, row, _ in entries:
            if kind == "charge":
                segment = self.open.pop(row[0], None)
                if segment is not None:
                    counts[segment] += 1

    def sift(self, entries: list[Entry]) -> tuple[list[Entry], list[int]]:
        """A batch read back from the journal: (entries to write, marker segments to
        confirm with them). An earlier run's markers are set aside until its charge
        shows up (then both are confirmed together); this run's are already open."""
        out: list[Entry] = []
        confirms: list[int] = []
        for e in entries:
            if e.kind == MARKER:
                if e.segment < self.first_own:
                    self.earlier[str(e.row[0])] = e
                continue
            if e.kind == UNMARK:  # confirmed when it was written; its marker is done
                matched = self.earlier.pop(str(e.row[0]), None) if e.row else None
                if matched is not None:
                    confirms.append(matched.segment)
                continue
            if self.earlier and e.kind == "charge":
                matched = self.earlier.pop(str(e.row[0]), None)
                if matched is not None:
                    confirms.append(matched.segment)
            out.append(e)
        return out, confirms

    def unsettled(self) -> list[Entry]:
        """An earlier run's markers whose charge never came: the calls a crash cut off."""
        cut, self.earlier = list(self.earlier.values()), {}
        return cut
