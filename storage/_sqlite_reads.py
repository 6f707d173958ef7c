"""SQLite readers: queries on connections and threads the writer never uses.

In WAL mode a reader sees the last committed state and neither waits for the
writer nor makes it wait (only checkpoints must wait for old readers to go,
which delays no insert). Each reader thread keeps its own connection, opened
`query_only`. `snapshot()` gives several queries one consistent view (one
read transaction), for start-up counting that must not see a write land
between two of its queries. An in-memory database has one connection only,
so there reads fall back to the writer's thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

READER_THREADS = 2
_BUSY_SECONDS = 5.0


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=_BUSY_SECONDS)
    conn.execute("PRAGMA query_only = 1")
    return conn


class Readers:
    """A small pool of reader threads, each with its own connection."""

    def __init__(self, path: str, writer: tuple[sqlite3.Connection, ThreadPoolExecutor] | None,
                 threads: int = READER_THREADS):
        self._path = path
        self._writer = writer
        self._executor = (None if writer is not None else
                          ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ledger-read"))
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self._path)
            with self._lock:
                self._conns.append(conn)
        return conn

    def _read(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, list(args)).fetchall()

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            conn, executor = self._writer
            return await loop.run_in_executor(
                executor, lambda: conn.execute(sql, list(args)).fetchall())
        return await loop.run_in_executor(self._executor, self._read, sql, args)

    def snapshot(self) -> "Snapshot":
        return Snapshot(self)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class Snapshot:
    """One read transaction on a connection of its own, for the length of an `async with`."""

    def __init__(self, readers: Readers):
        self._readers = readers
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def __aenter__(self) -> "Snapshot":
        if self._readers._writer is not None:
            return self  # in memory: the writer's connection (no isolation needed in tests)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-snapshot")

        def begin() -> sqlite3.Connection:
            conn = _connect(self._readers._path)
            conn.execute("BEGIN")
            return conn

        self._conn = await self._run(begin)
        return self

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            return await self._readers.read(sql, args)
        conn = self._conn
        return await self._run(lambda: conn.execute(sql, list(args)).fetchall())

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is None:
            return
        conn = self._conn

        def end() -> None:
            try:
                conn.execute("COMMIT")
            finally:
                conn.close()

        await self._run(end)
        assert self._executor is not None
        self._executor.shutdown(wait=True)
