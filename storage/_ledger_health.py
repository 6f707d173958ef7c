"""The journal's failure handling and start markers, as part of the `Ledger`.

A mixin over the ledger's state (like `LedgerQueries` for the read side), so
`_ledger` stays about the queue and the writer. Here: `mark()` (a call's start
marker), whether a charge can be kept at all (`accepting`), what is wrong in
words (`problems`), the group commit, and bringing a failing journal back —
a probe write, a fresh segment, then the entries that waited in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

from ._journal import Journal, encode_entry
from ._journal_watch import JournalWatch
from ._markers import MARKER, UNMARK, Markers, StartMarker, charge_row, marker_row
from ._store import Store

log = logging.getLogger("faregate.ledger")


def _now_ms() -> int:
    return int(time.time() * 1000)


class JournalHealth:
    _store: Store
    _journal: Journal | None
    _watch: JournalWatch | None
    _markers: Markers
    _queue: deque
    _queue_limit: int
    _memory_only: int
    _db_error: str | None
    _accepted: int
    _replay_tail: int
    _replaying_earlier_run: bool
    _replayed: int
    _opened: float
    _interval: float
    _wake: asyncio.Event
    _on_written: Callable[[int, str], None]

    async def _in_journal_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def mark(self, marker: StartMarker) -> bool:
        """Journal a start marker: what its call is charged if it never settles (under
        the id the real charge will have). Never blocks, never raises; False when
        there is no journal to hold it."""
        journal, watch = self._journal, self._watch
        if journal is None or watch is None or not watch.ok:
            return False
        try:
            line = encode_entry(MARKER, _now_ms(), marker_row(marker))
        except Exception:
            log.exception("unrecordable start marker")
            return False
        try:
            segment, _ = journal.append(line)
        except OSError as exc:
            watch.failed(exc, "write")
            return False
        self._markers.opened(marker.id, segment)
        return True

    def unmark(self, charge_id: str) -> None:
        """A marked call that will never be charged here (a reservation released, or a
        pending background response that its own record follows up): done. The journal
        says so too, so a replay after a crash does not charge the marker."""
        segment = self._markers.open.pop(charge_id, None)
        journal = self._journal
        if segment is None or journal is None:
            return
        try:
            written, _ = journal.append(encode_entry(UNMARK, int(time.time() * 1000),
                                                     (charge_id,)))
        except OSError as exc:
            if self._watch is not None:
                self._watch.failed(exc, "write")
        else:
            journal.confirm({written: 1})  # never a database row
        journal.confirm({segment: 1})

    @property
    def accepting(self) -> bool:
        """Can a charge be kept now: by the journal, or in memory while the database
        takes writes? (False: `[storage] on_ledger_failure` decides.)"""
        watch = self._watch
        if watch is None or watch.ok:
            return True
        return self._db_error is None and self._memory_only < self._queue_limit

    @property
    def healthy(self) -> bool:
        return self._db_error is None and (self._watch is None or self._watch.ok)

    def problems(self) -> dict[str, str]:
        """What is wrong, in words, by part (`journal`, `database`); empty when healthy."""
        out = {}
        if self._watch is not None and not self._watch.ok:
            out["journal"] = self._watch.describe(self._memory_only)
        if self._db_error is not None:
            out["database"] = self._db_error
        return out

    @property
    def last_error(self) -> str | None:
        problems = self.problems()
        return problems.get("journal") or problems.get("database")

    @property
    def journal_failing(self) -> str | None:
        """Why the journal takes no writes (an errno name, e.g. ENOSPC), None when it does."""
        return self._watch.reason if self._watch is not None else None

    @property
    def where(self) -> str:
        """The database, in words (backend and address, no password)."""
        return self._store.where

    def _end_earlier_run(self) -> None:
        """An earlier run is replayed: its calls that never settled are charged now,
        at their reservations (each under its marker's segment, confirmed with it)."""
        if self._replaying_earlier_run:
            self._log_replay()
        self._replaying_earlier_run = False
        cut = self._markers.unsettled()
        for e in cut:
            self._queue.append(("charge", e.at_ms, charge_row(e.row, e.at_ms), e.segment))
            self._accepted += 1
        self._replay_tail = self._accepted
        if cut:
            log.warning("calls cut off by an earlier crash are charged at their reservations",
                        extra={"calls": len(cut), "nanos": sum(int(e.row[7]) for e in cut)})
            self._wake.set()

    def _log_replay(self) -> None:
        """One line when start has replayed what an earlier run left in the journal."""
        log.info("journal replayed into the database", extra={
            "entries": self._replayed, "seconds": round(time.monotonic() - self._opened, 3),
            "journal": str(self._journal.directory) if self._journal is not None else None})

    async def _commit_loop(self) -> None:
        assert self._watch is not None
        while True:
            await asyncio.sleep(self._interval)
            if self._watch.ok:
                await self._commit()
            elif self._watch.due():
                await self._recover()

    async def _commit(self) -> None:
        assert self._journal is not None and self._watch is not None
        if not self._watch.ok:
            return
        try:
            durable = await self._in_journal_thread(self._journal.sync)
        except OSError as exc:
            self._watch.failed(exc, "fsync")
            return
        if durable:
            self._on_written(durable, "journaled")

    async def _recover(self) -> None:
        """Try the failing journal again: a probe write, a fresh segment, then the
        entries that waited in memory are journaled too."""
        journal, watch = self._journal, self._watch
        assert journal is not None and watch is not None
        try:
            await self._in_journal_thread(journal.probe)
            await self._in_journal_thread(journal.reopen)
        except OSError:
            watch.still_failing()
            return
        rejournaled = self._rejournal(journal)
        if rejournaled is None:
            watch.still_failing()
            return
        watch.recovered(rejournaled)

    def _rejournal(self, journal: Journal) -> int | None:
        """Journal the queued entries that only memory holds (no await: the writer
        cannot pop meanwhile). None if the journal failed again on the way."""
        queue, n = self._queue, 0
        for i, (kind, at_ms, row, segment) in enumerate(queue):
            if segment >= 0 or not self._memory_only:
                continue
            try:
                segment, _ = journal.append(encode_entry(kind, at_ms, row))
            except OSError:
                return None
            queue[i] = (kind, at_ms, row, segment)
            self._memory_only -= 1
            n += 1
        return n
