"""SQLite backend: one writer thread, and readers on connections of their own.

WAL mode. Writes go to one connection confined to a dedicated thread: each
batch is one transaction of a few multi-row `INSERT OR IGNORE` statements
(so replaying a record id is a no-op), followed by the rollup update for
exactly the rows it inserted (their new rowids, see `_rollups`).
Multi-row statements matter for the proxy, not for SQLite: the sqlite3
module lets go of the GIL around every statement step, and with one step
per row the writer thread and the event loop traded the GIL once per row,
which cost the loop more than the insert itself.
Reads (reports, budgets, the dashboard) run on their own connections and
threads (`_sqlite_reads`): in WAL mode a reader never waits for the writer
nor holds it up, so looking at the ledger does not delay charges.
`SqliteStore` is the async face the ledger uses: every call hops onto a
worker thread, so the event loop never blocks on SQLite and no connection
is shared between threads.
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
from ._rollups import merge_sql, sqlite_roll_up
from ._sqlite_reads import Readers
from ._upgrades import SQLITE_STEPS


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
#: Retention deletes at most this many charges per transaction.
DELETE_BATCH = 10_000
MERGE_ROLLUP_SQL = merge_sql("sqlite")


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

    def migrate(self, upto: int | None = None) -> list[int]:
        """Apply pending migrations; returns the versions applied now.

        Reads what is applied first, without a lock: an up-to-date ledger
        starts even while another process holds the write lock (its charges
        wait in the journal). `BEGIN IMMEDIATE` takes SQLite's write lock
        before applying a version, so two processes migrating at once apply
        each version once; a version's Python step (`_upgrades`) runs in the
        same transaction as its SQL.
        """
        c = self.conn
        pending = migrations("sqlite", upto)
        if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone():
            done = {v for (v,) in c.execute("SELECT version FROM schema_migrations")}
            pending = [(v, sql) for v, sql in pending if v not in done]
            if not pending:
                return []
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = []
        for version, sql in pending:
            c.execute("BEGIN IMMEDIATE")
            try:
                done = c.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone()
                if not done:
                    for statement in split_sql(sql):
                        c.execute(statement)
                    if version in SQLITE_STEPS:
                        SQLITE_STEPS[version](c)
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
        """All rows in one transaction; ids already present are skipped.

        The charges this transaction inserted are the rows past the largest
        rowid before it (SQLite numbers new rows max(rowid) + 1; a skipped
        repeat gets none), and exactly those are added to the rollups.
        """
        c = self.conn
        c.execute("BEGIN")
        try:
            for name, rows in rows_by_kind.items():
                kind = KINDS[name]
                if kind is CHARGES:
                    (before,) = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM charges").fetchone()
                start = 0
                for size in _chunks(len(rows)):
                    args = list(chain.from_iterable(rows[start:start + size]))
                    c.execute(_insert_sql(kind.table, kind.columns, size), args)
                    start += size
                if kind is CHARGES:
                    (after,) = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM charges").fetchone()
                    if after > before:
                        sqlite_roll_up(c, before, after)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return sum(len(r) for r in rows_by_kind.values())

    def merge_rollups(self, rows: Sequence[Row], mark: str, value: str) -> bool:
        """Add rollup rows once: with ledger_meta `mark` set in the same transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute("SELECT 1 FROM ledger_meta WHERE key = ?", (mark,)).fetchone():
                c.execute("COMMIT")
                return False
            c.executemany(MERGE_ROLLUP_SQL, rows)
            c.execute("INSERT INTO ledger_meta VALUES (?, ?)", (mark, value))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return True

    def delete_charges_before(self, horizon_ms: int, limit: int) -> int:
        """Retention: delete up to `limit` charges older than the horizon (one transaction)."""
        c = self.conn
        c.execute("BEGIN")
        try:
            n = c.execute(
                "DELETE FROM charges WHERE rowid IN (SELECT rowid FROM charges "
                "WHERE ts_ms < ? LIMIT ?)", (horizon_ms, limit)).rowcount
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return n

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
    """Async store: writes on the `SqliteDatabase` thread, reads on `Readers`."""

    dialect = "sqlite"
    placeholder = staticmethod(_q)

    def __init__(self, db: SqliteDatabase, executor: ThreadPoolExecutor, readers: Readers,
                 where: str = ""):
        self._db = db
        self._executor = executor
        self._readers = readers
        self.where = where or "SQLite"

    @classmethod
    async def open(cls, url: str, *, upto: int | None = None) -> "SqliteStore":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, SqliteDatabase, url)
            await loop.run_in_executor(executor, db.migrate, upto)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        path = sqlite_path(url)
        readers = Readers(path, writer=(db.conn, executor) if path == ":memory:" else None)
        return cls(db, executor, readers, f"SQLite at {path}")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int:
        return await self._run(self._db.insert, rows_by_kind)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A statement that writes (INSERT … RETURNING), on the writer's connection."""
        return await self._run(self._db.fetch, sql, args)

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A query on a reader connection: never waits for the writer, never delays it."""
        return await self._readers.read(sql, args)

    def snapshot(self):
        """`async with store.snapshot() as s: await s.read(…)`: one consistent view."""
        return self._readers.snapshot()

    async def merge_rollups(self, rows: Sequence[Row], mark: str, value: str) -> bool:
        return await self._run(self._db.merge_rollups, rows, mark, value)

    async def expire(self, horizon_ms: int) -> None:
        """Retention: delete charges older than the horizon, `DELETE_BATCH` per transaction,
        so batches of new charges get the writer's thread in between."""
        while await self._run(self._db.delete_charges_before, horizon_ms,
                              DELETE_BATCH) == DELETE_BATCH:
            pass

    async def maintain(self, now_ms: int) -> None:
        """Nothing to prepare ahead of time on SQLite."""

    async def lease(self, *args: Any) -> int:
        return await self._run(self._db.lease, *args)

    async def unlease(self, *args: Any) -> None:
        await self._run(self._db.unlease, *args)

    async def hold_slots(self, *args: Any) -> bool:
        return await self._run(self._db.hold_slots, *args)

    async def renew_slots(self, *args: Any) -> None:
        await self._run(self._db.renew_slots, *args)

    async def close(self) -> None:
        await self._readers.close()
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)
