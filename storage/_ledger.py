"""The ledger: `record()` now, on disk at once, in the database soon after.

`record(rec)` is synchronous and O(1). With a journal it appends the entry
to the local journal (one `write(2)`, see `_journal`) and queues it in
memory; a writer task drains the queue in batches (up to `batch_size`, at
least every `flush_interval_ms`) into the store, and a committer task
fsyncs the journal once per interval (group commit). A failed batch is kept
and retried with backoff — records are not dropped.

Catching up: while more than `batch_size` entries wait (a burst, a backlog
after an outage, a journal replay) a transaction takes up to `CATCH_UP` ×
`batch_size` of them. Every rollup row a batch touches is one upsert however
many charges it sums (`_rollups`), so larger batches drain a backlog faster.

Backpressure: the in-memory queue holds at most `queue_limit` entries. Once
it is full (the database is down or slow), new entries live only in the
journal; the writer reads them back from disk, oldest first, after the queue
has drained, and switches back to memory when it has caught up. Memory stays
bounded while the journal grows on disk. Entries left by an earlier run are
replayed the same way at start (ids make every insert idempotent), and a
segment is deleted once the database has confirmed all of its entries.

A journal that fails (disk full, I/O error, read-only) does not stop the
ledger: new entries wait in memory (at most `queue_limit` of them), the
journal is retried every second and, once it takes writes again, continues
in a fresh segment and takes the waiting entries too (`_journal_watch`).
`accepting` says whether a charge can be kept at all — by the journal, or by
memory while the database takes writes; an entry that cannot be kept is
counted (`dropped`) and logged, never lost silently. Start markers (`mark`,
see `_markers`) make calls in flight at a crash show up after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from . import _retention
from ._upkeep import LedgerUpkeep
from ._journal import SEGMENT_BYTES, Cursor, Entry, Journal, encode_entry
from ._journal_watch import JournalWatch
from ._kinds import KINDS, kind_of
from ._ledger_health import JournalHealth
from ._ledger_queries import LedgerQueries
from ._markers import Markers
from ._outage import describe_failure
from ._record import AlertRecord, LedgerRecord, ObjectRecord, SessionRecord
from ._store import Store, open_store

log = logging.getLogger("faregate.ledger")

MAX_BACKOFF_S = 30.0
CLOSE_RETRY_S = 10.0
QUEUE_LIMIT = 10_000
#: While a backlog drains, a transaction takes up to this many times batch_size.
CATCH_UP = 4


def _now_ms() -> int:
    return int(time.time() * 1000)


class Ledger(JournalHealth, LedgerQueries, LedgerUpkeep):
    """Async facade over one store. Create with `await Ledger.open(url)`."""

    def __init__(
        self,
        store: Store,
        journal: Journal | None,
        executor: ThreadPoolExecutor | None,
        *,
        flush_interval_ms: int,
        batch_size: int,
        queue_limit: int,
        on_written: Callable[[int, str], None] | None,
        keep_charges_days: int | None = None,
        expired_before_ms: int | None = None,
    ):
        self._store = store
        self.keep_charges_days = keep_charges_days
        self.expired_before_ms = expired_before_ms
        self._journal = journal
        self._executor = executor  # the journal's worker thread
        self._interval = flush_interval_ms / 1000.0
        self._batch_size = batch_size
        self._queue_limit = queue_limit
        self._on_written = on_written or (lambda n, result: None)
        # Queued entries: (kind, appended_at_ms, row, journal segment or -1).
        self._queue: deque[tuple[str, int, tuple[Any, ...], int]] = deque()
        # Journal-only entries start here (None: everything is in memory).
        self._spill: Cursor | None = journal.backlog if journal else None
        self._spill_batch: tuple[list[Entry], Cursor] | None = None
        self._spill_oldest_ms: int | None = None
        self._replaying_earlier_run = self._spill is not None
        self._replayed = 0  # entries of an earlier run written from the journal
        self._opened = time.monotonic()
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._accepted = 0  # records accepted by record() in this process
        self._done = 0  # ... of which the database has confirmed (or given up at close)
        self._closing = False
        self._closed = asyncio.Event()
        self._db_error: str | None = None
        self._watch = JournalWatch(journal.directory) if journal else None
        self._memory_only = 0  # queued entries the journal could not take
        self._markers = Markers(journal.first_own if journal else 0)
        self._replay_tail = 0  # _accepted once an earlier run's cut-off calls were queued
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._writer(), name="ledger-writer")
        self._committer = (
            loop.create_task(self._commit_loop(), name="ledger-journal") if journal else None
        )
        # Only a serving ledger (with a journal) maintains partitions and retention.
        self._maintainer = (
            loop.create_task(self._maintain_loop(), name="ledger-maintain") if journal else None
        )

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        flush_interval_ms: int = 250,
        batch_size: int = 1000,
        on_written: Callable[[int, str], None] | None = None,
        journal_dir: str | Path | None = None,
        queue_limit: int = QUEUE_LIMIT,
        segment_bytes: int = SEGMENT_BYTES,
        keep_charges_days: int | None = None,
    ) -> "Ledger":
        """Connect, migrate, and (with `journal_dir`) start replaying what is left there.

        Without a journal the queue is unbounded and lives only in memory:
        fine for `report`/`migrate`, not for serving. With a journal the
        ledger also keeps partitions ahead and, with `keep_charges_days`,
        deletes raw charges older than that (rollups stay), hourly.
        """
        store = await open_store(url)
        try:
            expired = await _retention.read_meta(store, _retention.EXPIRED_BEFORE)
        except BaseException:
            await store.close()
            raise
        journal = executor = None
        if journal_dir is not None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-journal")
            try:
                journal = await asyncio.get_running_loop().run_in_executor(
                    executor, Journal.open, journal_dir, segment_bytes
                )
            except BaseException:
                executor.shutdown(wait=False)
                await store.close()
                raise
        return cls(
            store, journal, executor, flush_interval_ms=flush_interval_ms,
            batch_size=batch_size, queue_limit=queue_limit, on_written=on_written,
            keep_charges_days=keep_charges_days,
            expired_before_ms=int(expired) if expired is not None else None,
        )

    # -- hot path ---------------------------------------------------------

    def record(self, *recs: LedgerRecord | SessionRecord | AlertRecord | ObjectRecord) -> None:
        """Journal and queue records for writing (several: one `write(2)` for all, e.g. a
        charge and the object its call created). Never blocks, never raises."""
        entries = []
        for rec in recs:
            try:
                kind = kind_of(rec)
                entries.append((kind.name, kind.to_row(rec)))
            except Exception:
                log.exception("unrecordable ledger record")
                self._on_written(1, "failed")
        if not entries:
            return
        at_ms = _now_ms()
        segment = -1
        journal, watch = self._journal, self._watch
        if journal is not None and watch is not None:
            if watch.ok:
                lines = [encode_entry(name, at_ms, row) for name, row in entries]
                try:
                    segment, offset = journal.append(
                        lines[0] if len(lines) == 1 else b"".join(lines), len(lines))
                except OSError as exc:  # disk full, I/O error: memory until it recovers
                    watch.failed(exc, "write")
                else:
                    if self._spill is not None or len(self._queue) >= self._queue_limit:
                        self._spill_to_journal(segment, offset, at_ms, len(lines))
                        return
            if segment < 0:
                room = max(0, self._queue_limit - self._memory_only)
                for name, _ in entries[room:]:
                    watch.dropped_one(name)
                    self._on_written(1, "dropped")
                entries = entries[:room]
                self._memory_only += len(entries)
        for name, row in entries:
            self._queue.append((name, at_ms, row, segment))
        self._accepted += len(entries)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def _spill_to_journal(self, segment: int, offset: int, at_ms: int, n: int) -> None:
        if self._spill is None:
            log.warning("ledger queue full; new records wait in the journal",
                        extra={"queue_limit": self._queue_limit})
            self._spill = (segment, offset)
            self._spill_oldest_ms = at_ms
            self._wake.set()
        self._accepted += n

    @property
    def queue_depth(self) -> int:
        """Entries waiting in memory (journal-only entries are not counted)."""
        return len(self._queue)

    @property
    def journal_bytes(self) -> int:
        return self._journal.bytes if self._journal is not None else 0

    @property
    def oldest_unwritten_seconds(self) -> float:
        """Age of the oldest entry not yet in the database (0 when caught up)."""
        oldest = [self._queue[0][1]] if self._queue else []
        if self._spill is not None and self._spill_oldest_ms is not None:
            oldest.append(self._spill_oldest_ms)
        return max(0.0, (_now_ms() - min(oldest)) / 1000.0) if oldest else 0.0

    # -- writer -----------------------------------------------------------

    async def _in_journal_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _next_batch(self) -> tuple[list[tuple[str, int, tuple[Any, ...], int]], str] | None:
        """The next entries to write and where they come from, or None if idle."""
        if self._queue:
            queued = len(self._queue)
            n = min(self._batch_size * (CATCH_UP if queued > self._batch_size else 1), queued)
            return [self._queue[i] for i in range(n)], "written"
        while self._spill is not None and self._spill_batch is None:
            journal = self._journal
            assert journal is not None
            end = journal.end()
            if journal.at_end(self._spill):  # caught up: back to memory (no await between)
                self._spill = self._spill_oldest_ms = None
                self._end_earlier_run()
                await self._advance(0)
                return None
            read, cursor, bad = await self._in_journal_thread(
                journal.read, self._spill, end, self._batch_size * CATCH_UP
            )
            if bad:
                log.warning("journal lines failed their checksum and were skipped",
                            extra={"lines": bad})
            entries, confirms = self._markers.sift(read)
            if entries:
                self._spill_batch = (entries, cursor, confirms)
                self._spill_oldest_ms = entries[0].at_ms
            else:
                self._spill = cursor
                await self._passed_earlier_run()
        if self._spill_batch is not None:
            return [(e.kind, e.at_ms, e.row, e.segment) for e in self._spill_batch[0]], "replayed"
        return None

    async def _writer(self) -> None:
        backoff = 0.0
        while True:
            batch = await self._next_batch()
            if batch is None:
                if self._closing:
                    return
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                continue
            entries, source = batch
            rows: dict[str, list[tuple[Any, ...]]] = {}
            for kind, _, row, _ in entries:
                rows.setdefault(kind, []).append(KINDS[kind].fit(row))
            try:
                await self._store.insert(rows)
            except Exception as exc:  # keep the batch, retry later
                self._db_error = describe_failure(self._store.where, exc)
                self._on_written(len(entries), "failed")
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                log.error(
                    "ledger write failed; will retry",
                    extra={"records": len(entries), "error": self._db_error, "retry_s": backoff},
                )
                if self._closing and (self._all_journaled() or backoff >= CLOSE_RETRY_S):
                    log.error("ledger closing with unwritten records",
                              extra={"queued": len(self._queue),
                                     "in_journal": self._all_journaled()})
                    return
                try:  # sleep, but let close() cut the wait short
                    await asyncio.wait_for(self._closed.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                continue
            backoff = 0.0
            self._db_error = None
            if source == "written":
                # The queued tuples, not the batch's copies: a journal that recovered
                # meanwhile gave memory-only entries their segment.
                popped = [self._queue.popleft() for _ in entries]
                if self._journal is not None:
                    self._memory_only -= sum(1 for e in popped if e[3] < 0)
                self._confirm(popped)
                own = len(entries)
            else:
                assert self._spill_batch is not None and self._journal is not None
                self._confirm(entries, self._spill_batch[2])
                self._spill, self._spill_batch = self._spill_batch[1], None
                self._journal.read_past(self._spill)
                self._spill_oldest_ms = entries[-1][1]
                if self._journal.at_end(self._spill):  # caught up: back to memory
                    self._spill = self._spill_oldest_ms = None
                own = sum(1 for e in entries if e[3] >= self._journal.first_own)
                self._replayed += len(entries) - own
            self._on_written(len(entries), source)
            await self._advance(own)
            await self._passed_earlier_run()

    async def _passed_earlier_run(self) -> None:
        """Once the replay cursor is past an earlier run's segments, flush() need not wait."""
        if (
            self._replaying_earlier_run
            and self._journal is not None
            and (self._spill is None or self._spill[0] >= self._journal.first_own)
        ):
            self._end_earlier_run()
            await self._advance(0)

    def _confirm(self, entries: Iterable[tuple[str, int, tuple[Any, ...], int]],
                 markers: Iterable[int] = ()) -> None:
        if self._journal is not None:
            entries = list(entries)
            counts = Counter(e[3] for e in entries if e[3] >= 0)
            counts.update(markers)
            self._markers.settled(entries, counts)
            self._journal.confirm(counts)

    def _all_journaled(self) -> bool:
        """Is every unwritten entry safe in the journal (so closing loses nothing)?"""
        return self._journal is not None and all(e[3] >= 0 for e in self._queue)

    async def _advance(self, n: int) -> None:
        async with self._progress:
            self._done += n
            self._progress.notify_all()

    async def flush(self) -> None:
        """Wait until every record so far (and any earlier run's backlog) is written."""
        target = self._accepted
        self._wake.set()
        async with self._progress:
            await self._progress.wait_for(
                lambda: (self._done >= max(target, self._replay_tail)
                         and not self._replaying_earlier_run)
                or self._task.done()
            )

    async def close(self) -> None:
        """Write what is pending, then release the journal and the database.

        If the database is unreachable, entries already in the journal stay
        there for the next start; only entries the journal could not take are
        retried for up to ~CLOSE_RETRY_S. Idempotent.
        """
        if self._closed.is_set():
            return
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._maintainer is not None:
            self._maintainer.cancel()
            try:
                await self._maintainer
            except asyncio.CancelledError:
                pass
        if self._watch is not None and not self._watch.ok:
            await self._recover()  # one last try: what memory holds could still be journaled
        await self._task
        if self._committer is not None and self._journal is not None:
            self._committer.cancel()
            try:
                await self._committer
            except asyncio.CancelledError:
                pass
            await self._commit()
            await self._in_journal_thread(self._journal.close)
        if self._watch is not None and self._memory_only > 0:
            log.error("ledger closed with records neither the database nor the journal took",
                      extra={"lost": self._memory_only, "path": str(self._watch.directory)})
            self._on_written(self._memory_only, "dropped")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        await self._store.close()
