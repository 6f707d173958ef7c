"""SQLite backend: a synchronous database confined to one dedicated thread.

WAL mode, one connection, each batch inserted inside one transaction as a
few multi-row `INSERT OR IGNORE` statements (so replaying a record id is a
no-op). Multi-row statements matter for the proxy, not for SQLite: the
sqlite3 module lets go of the GIL around every statement step, and with one
step per row the writer thread and the event loop traded the GIL once per
row, which cost the loop more than the insert itself.
`SqliteStore` is the async face the ledger uses: every call hops onto the
store's single worker thread, so the event loop never blocks on SQLite and
the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import functools
import random
import sqlite3
import time
from itertools import chain
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ._kinds import CHARGES, KINDS, Row
from ._migrations import migrations, split_sql
from ._queries import logs_sql, usage_sql
from ._record import LedgerRecord
from ._report import UsageReport, UsageRow


def sqlite_path(url: str) -> str:
    """`sqlite:///rel.db` -> 'rel.db'; `sqlite:////abs.db` -> '/abs.db'."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite:///") :]
    if not path:
        raise ValueError("sqlite URL has no path")
    return path


def _q(_: int) -> str:
    return "?"


#: Rows per INSERT statement at most: the chunks are powers of two, so a
#: table has at most nine statement shapes (all in the statement cache), and
#: 256 rows of the widest kind stay far below SQLite's 32766 bound variables.
MAX_ROWS_PER_STATEMENT = 256


def _chunks(n: int) -> list[int]:
    """Split `n` rows into statement sizes: full chunks, then descending powers of two."""
    sizes = [MAX_ROWS_PER_STATEMENT] * (n // MAX_ROWS_PER_STATEMENT)
    rest, size = n % MAX_ROWS_PER_STATEMENT, MAX_ROWS_PER_STATEMENT
    while rest:
        size //= 2
        if rest >= size:
            sizes.append(size)
            rest -= size
    return sizes


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    one = "(" + ", ".join("?" for _ in columns) + ")"
    return (f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
            f"VALUES {', '.join(one for _ in range(rows))}")


_BUSY_SECONDS = 5.0


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode, waiting out another process doing the same.

    Two connections switching a fresh file at once can deadlock on the lock
    upgrade; SQLite then answers "database is locked" to one of them at once,
    without calling the busy handler. The switch is retried until the busy
    timeout runs out (this runs on the store's own thread, so sleeping is fine).
    """
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.02))


class SqliteDatabase:
    """The ledger's tables in one SQLite file. Not thread-safe: one thread only."""

    def __init__(self, url: str):
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=_BUSY_SECONDS
        )
        _enter_wal(self.conn)
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now.

        `BEGIN IMMEDIATE` takes SQLite's write lock before reading what is
        applied, so two processes migrating at once apply each version once.
        """
        c = self.conn
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = []
        for version, sql in migrations("sqlite"):
            c.execute("BEGIN IMMEDIATE")
            try:
                done = c.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone()
                if not done:
                    for statement in split_sql(sql):
                        c.execute(statement)
                    c.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)",
                        (version, datetime.now(timezone.utc).isoformat()),
                    )
                    applied.append(version)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return applied

    def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int:
        """All rows in one transaction; ids already present are skipped."""
        c = self.conn
        c.execute("BEGIN")
        try:
            for name, rows in rows_by_kind.items():
                kind = KINDS[name]
                start = 0
                for size in _chunks(len(rows)):
                    args = list(chain.from_iterable(rows[start:start + size]))
                    c.execute(_insert_sql(kind.table, kind.columns, size), args)
                    start += size
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return sum(len(r) for r in rows_by_kind.values())

    def usage(self, start, end, group_by: str, tenant: str | None) -> UsageReport:
        sql, args = usage_sql(_q, start, end, group_by, tenant, "sqlite")
        rows = [UsageRow.from_row(r) for r in self.conn.execute(sql, args)]
        return UsageReport.of(rows, group_by)

    def logs(self, tenant, user, model, limit, before) -> list[LedgerRecord]:
        sql, args = logs_sql(_q, CHARGES.columns, tenant, user, model, limit, before)
        return [CHARGES.from_row(r) for r in self.conn.execute(sql, args)]

    def lease(self, scope: str, period: str, key: str, want: int, limit: int, seed: int,
              now_ms: int) -> int:
        """Take up to `want` of a shared limit; returns what was granted."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                "INSERT OR IGNORE INTO budget_leases VALUES (?, ?, ?, ?, ?, ?)",
                (scope, period, key, limit, seed, now_ms))
            (leased,) = c.execute(
                "SELECT leased_nanos FROM budget_leases WHERE scope = ? AND period = ? "
                "AND period_key = ?", (scope, period, key)).fetchone()
            granted = max(0, min(want, limit - leased))
            c.execute(
                "UPDATE budget_leases SET leased_nanos = leased_nanos + ?, limit_nanos = ?, "
                "updated_ms = ? WHERE scope = ? AND period = ? AND period_key = ?",
                (granted, limit, now_ms, scope, period, key))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return granted

    def unlease(self, scope: str, period: str, key: str, amount: int, now_ms: int) -> None:
        self.conn.execute(
            "UPDATE budget_leases SET leased_nanos = MAX(0, leased_nanos - ?), updated_ms = ? "
            "WHERE scope = ? AND period = ? AND period_key = ?",
            (amount, now_ms, scope, period, key))

    def hold_slots(self, scope: str, holder: str, count: int, limit: int, now_ms: int,
                   ttl_ms: int) -> bool:
        """As PostgreSQL's: one process owns a SQLite ledger, so this is bookkeeping."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            rows = c.execute("SELECT holder, held FROM slot_holds WHERE scope = ? "
                             "AND expires_ms > ?", (scope, now_ms)).fetchall()
            own = sum(int(r[1]) for r in rows if r[0] == holder)
            others = sum(int(r[1]) for r in rows if r[0] != holder)
            ok = not (count > own and others + count > limit)
            if ok:
                c.execute("INSERT INTO slot_holds VALUES (?, ?, ?, ?) ON CONFLICT (scope, holder) "
                          "DO UPDATE SET held = excluded.held, expires_ms = excluded.expires_ms",
                          (scope, holder, count, now_ms + ttl_ms))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return ok

    def renew_slots(self, holder: str, now_ms: int, ttl_ms: int) -> None:
        self.conn.execute("UPDATE slot_holds SET expires_ms = ? WHERE holder = ? AND held > 0",
                          (now_ms + ttl_ms, holder))
        self.conn.execute("DELETE FROM slot_holds WHERE expires_ms < ?", (now_ms - ttl_ms,))

    def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, list(args))]

    def close(self) -> None:
        self.conn.close()


class SqliteStore:
    """Async store over a `SqliteDatabase` living on its own thread."""

    dialect = "sqlite"
    placeholder = staticmethod(_q)

    def __init__(self, db: SqliteDatabase, executor: ThreadPoolExecutor):
        self._db = db
        self._executor = executor

    @classmethod
    async def open(cls, url: str) -> "SqliteStore":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, SqliteDatabase, url)
            await loop.run_in_executor(executor, db.migrate)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int:
        return await self._run(self._db.insert, rows_by_kind)

    async def usage(self, start, end, group_by: str, tenant: str | None) -> UsageReport:
        return await self._run(self._db.usage, start, end, group_by, tenant)

    async def logs(self, tenant, user, model, limit, before) -> list[LedgerRecord]:
        return await self._run(self._db.logs, tenant, user, model, limit, before)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run(self._db.fetch, sql, args)

    async def lease(self, *args: Any) -> int:
        return await self._run(self._db.lease, *args)

    async def unlease(self, *args: Any) -> None:
        await self._run(self._db.unlease, *args)

    async def hold_slots(self, *args: Any) -> bool:
        return await self._run(self._db.hold_slots, *args)

    async def renew_slots(self, *args: Any) -> None:
        await self._run(self._db.renew_slots, *args)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)
