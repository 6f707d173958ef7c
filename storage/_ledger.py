"""The ledger: `record()` now, written to the database in batches soon after.

`record(rec)` is synchronous and O(1): it appends to an in-memory queue and
returns, so the request path never waits for storage. A writer task drains
the queue in batches (up to `batch_size`, at least every `flush_interval_ms`)
into the store on a single dedicated thread, so the event loop never blocks
on SQLite. A failed batch is kept and retried with backoff — records are not
dropped. `flush()` waits for everything recorded so far; `close()` flushes
and stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Callable

from ._record import LedgerRecord, SessionRecord
from ._report import UsageReport
from ._sqlite import SqliteStore

log = logging.getLogger("faregate.ledger")

MAX_BACKOFF_S = 30.0
CLOSE_RETRY_S = 10.0


def open_store(url: str) -> SqliteStore:
    if url.startswith("sqlite:///"):
        return SqliteStore(url)
    raise ValueError(
        "only sqlite:/// ledgers are supported by this build; "
        "PostgreSQL arrives with the durable-ledger work"
    )


class Ledger:
    """Async facade over one store. Create with `await Ledger.open(url)`."""

    def __init__(
        self,
        store: SqliteStore,
        executor: ThreadPoolExecutor,
        *,
        flush_interval_ms: int,
        batch_size: int,
        on_written: Callable[[int, str], None] | None,
    ):
        self._store = store
        self._executor = executor
        self._interval = flush_interval_ms / 1000.0
        self._batch_size = batch_size
        self._on_written = on_written or (lambda n, result: None)
        self._queue: deque[LedgerRecord | SessionRecord] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._enqueued = 0  # records ever queued
        self._done = 0  # records ever written (or given up on at close)
        self._closing = False
        self._closed = False
        self.healthy = True
        self.last_error: str | None = None
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="ledger-writer")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        flush_interval_ms: int = 250,
        batch_size: int = 1000,
        on_written: Callable[[int, str], None] | None = None,
    ) -> "Ledger":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor, open_store, url)
            await loop.run_in_executor(executor, store.migrate)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(
            store, executor, flush_interval_ms=flush_interval_ms, batch_size=batch_size,
            on_written=on_written,
        )

    # -- hot path ---------------------------------------------------------

    def record(self, rec: LedgerRecord | SessionRecord) -> None:
        """Queue a charge for writing. Never blocks, never raises."""
        self._queue.append(rec)
        self._enqueued += 1
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def record_session(self, session: SessionRecord) -> None:
        """Queue a session's totals (written with the charges, same guarantees)."""
        self.record(session)  # type: ignore[arg-type]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- writer -----------------------------------------------------------

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _writer(self) -> None:
        backoff = 0.0
        while True:
            if not self._queue:
                if self._closing:
                    return
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                continue
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                await self._run(self._store.insert, batch)
            except Exception as exc:  # keep the batch, retry later
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._on_written(len(batch), "failed")
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                log.error(
                    "ledger write failed; will retry",
                    extra={"records": len(batch), "error": self.last_error, "retry_s": backoff},
                )
                if self._closing and backoff >= CLOSE_RETRY_S:
                    log.error("ledger closing with unwritten records",
                              extra={"records": len(self._queue)})
                    return
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            self.healthy = True
            for _ in batch:
                self._queue.popleft()
            self._on_written(len(batch), "written")
            async with self._progress:
                self._done += len(batch)
                self._progress.notify_all()

    async def flush(self) -> None:
        """Wait until every record queued before this call is written."""
        target = self._enqueued
        self._wake.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target or self._task.done())

    async def close(self) -> None:
        """Write what is queued, then release the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._wake.set()
        await self._task
        await self._run(self._store.close)
        self._executor.shutdown(wait=True)

    # -- queries (run on the worker thread) ----------------------------------

    async def usage(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
        tenant: str | None = None,
    ) -> UsageReport:
        return await self._run(self._store.usage, start, end, group_by, tenant)

    async def logs(
        self,
        tenant: str | None = None,
        user: str | None = None,
        model: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[LedgerRecord]:
        return await self._run(self._store.logs, tenant, user, model, limit, before)

    async def sessions(
        self, tenant: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[SessionRecord]:
        return await self._run(self._store.sessions, tenant, limit, before)

    async def session(self, session_id: str) -> SessionRecord | None:
        return await self._run(self._store.session, session_id)

    async def rebuild_sessions(self) -> int:
        """Session rows for sessions a crash cut off; call once at start."""
        return await self._run(self._store.rebuild_sessions)
