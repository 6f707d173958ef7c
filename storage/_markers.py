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
from typing import Any, Iterable

from ._journal import Entry

#: The journal tag of a start marker (never a database table).
MARKER = "start"


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
