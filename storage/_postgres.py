"""PostgreSQL backend: asyncpg on the event loop, no thread.

Migrations run under a session advisory lock, so replicas starting together
apply each version exactly once. A batch is `COPY`ed straight into its
tables; a batch that repeats a row (journal replay) is instead `COPY`ed into
a per-connection temporary table and moved with `INSERT … SELECT … ON
CONFLICT DO NOTHING` in the same transaction: COPY is the fastest way in,
and the conflict clause makes replay idempotent. `charges` is partitioned
by month (`_partitions`); a statement trigger adds every inserted charge to
the rollups in the same statement (`_rollups`). Writes and reads use two
pools, so a report never takes the connection a batch is waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Mapping, Sequence

import asyncpg

from . import _partitions
from ._kinds import CHARGES, KINDS, Row
from ._migrations import migrations, split_sql
from ._outage import postgres_address
from ._rollups import merge_sql
from ._upgrades import PG_STEPS

#: pg_advisory_lock key: "faregate" as 8 bytes, shared by every replica.
MIGRATION_LOCK = int.from_bytes(b"faregate", "big") & 0x7FFF_FFFF_FFFF_FFFF
RETENTION_LOCK = MIGRATION_LOCK - 1
MERGE_ROLLUP_SQL = merge_sql("postgresql")
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
#: COPY rows encoded between two turns of the event loop.
PACE_ROWS = 128


def _p(i: int) -> str:
    return f"${i}"


def _staging(table: str) -> str:
    return f"{table}_incoming"


async def _paced(rows: Sequence[Row]) -> AsyncIterator[Row]:
    """`rows` for COPY, letting the event loop run every PACE_ROWS rows.

    The driver encodes COPY rows on the event loop, about 4 µs each: a whole
    1,000-row batch (a journal replay, a backlog) held the loop for ~4 ms.
    """
    for start in range(0, len(rows), PACE_ROWS):
        for row in rows[start:start + PACE_ROWS]:
            yield row
        await asyncio.sleep(0)


async def _copy(conn: asyncpg.Connection, table: str, kind, rows: Sequence[Row]) -> None:
    await conn.copy_records_to_table(table, records=_paced(rows), columns=list(kind.columns))


async def _insert_ignoring_repeats(conn: asyncpg.Connection, kind, rows: Sequence[Row]) -> None:
    cols = ", ".join(kind.columns)
    await _copy(conn, _staging(kind.table), kind, rows)
    await conn.execute(f"INSERT INTO {kind.table} ({cols}) SELECT {cols} "
                       f"FROM {_staging(kind.table)} ON CONFLICT DO NOTHING")


async def migrate(conn: asyncpg.Connection, upto: int | None = None) -> list[int]:
    """Apply pending migrations on `conn`, serialised across processes.

    A version's Python step (`_upgrades`) runs in the same transaction as its SQL.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, sql in migrations("postgresql", upto):
            if version in done:
                continue
            async with conn.transaction():
                for statement in split_sql(sql):
                    await conn.execute(statement)
                if version in PG_STEPS:
                    await PG_STEPS[version](conn)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2)",
                    version, datetime.now(timezone.utc).isoformat(),
                )
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    for kind in KINDS.values():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_staging(kind.table)} "
            f"(LIKE {kind.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )


_ID, _TS = CHARGES.columns.index("id"), CHARGES.columns.index("ts_ms")
_SESSION, _RESPONSE = CHARGES.columns.index("session_id"), CHARGES.columns.index("response_id")


def _response_keys(rows: Sequence[Row]) -> list[tuple[str, str, int]]:
    """(session_id, response_id, ts_ms) of the session responses among charge rows."""
    return [(r[_SESSION], r[_RESPONSE], r[_TS]) for r in rows
            if r[_SESSION] is not None and r[_RESPONSE] is not None]


def _first_of_each(rows: Sequence[Row]) -> list[Row]:
    """The batch without its own repeats: the first row of each id and of each response."""
    ids: set[str] = set()
    responses: set[tuple[str, str]] = set()
    out = []
    for r in rows:
        response = (r[_SESSION], r[_RESPONSE])
        if r[_ID] in ids or (None not in response and response in responses):
            continue
        ids.add(r[_ID])
        responses.add(response)
        out.append(r)
    return out


_COLS = ", ".join(CHARGES.columns)
#: Charges from staging that are new: their id is not stored, and a session
#: response is not stored under another id (charge_responses claims it).
_NEW_CHARGES_SQL = (
    "WITH r AS (INSERT INTO charge_responses (session_id, response_id, ts_ms) "
    "SELECT i.session_id, i.response_id, i.ts_ms FROM charges_incoming i "
    "WHERE i.session_id IS NOT NULL AND i.response_id IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.id = i.id) "
    "ON CONFLICT DO NOTHING RETURNING session_id, response_id) "
    f"INSERT INTO charges ({_COLS}) SELECT {', '.join('i.' + c for c in CHARGES.columns)} "
    "FROM charges_incoming i WHERE i.session_id IS NULL OR i.response_id IS NULL "
    "OR EXISTS (SELECT 1 FROM r WHERE r.session_id = i.session_id "
    "AND r.response_id = i.response_id) ON CONFLICT (id) DO NOTHING"
)


class PostgresStore:
    """The ledger's tables in PostgreSQL: a write pool and a read pool.

    Reads (reports, budgets, the dashboard) never take a connection the
    writer needs, and read under MVCC, so they never hold up a batch.
    """

    dialect = "postgresql"
    placeholder = staticmethod(_p)

    def __init__(self, writes: asyncpg.Pool, reads: asyncpg.Pool, months: _partitions.Months,
                 where: str = "PostgreSQL"):
        self._pool = self._writes = writes
        self._reads = reads
        self._months = months
        self.where = where

    @classmethod
    async def open(cls, url: str, *, write_connections: int = 3, read_connections: int = 4,
                   upto: int | None = None) -> "PostgresStore":
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
        try:
            await migrate(conn, upto)
            # `upto` builds an older schema (tests, benchmarks): no partitions before 0011.
            months = (await _partitions.load(conn) if upto is None or upto >= 11
                      else _partitions.Months((), None, partitioned=False))
            if upto is None:
                await _partitions.ahead(conn, months, int(time.time() * 1000))
        finally:
            await conn.close()
        writes = await asyncpg.create_pool(
            url, min_size=0, max_size=write_connections, timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S, init=_prepare_connection,
        )
        try:
            reads = await asyncpg.create_pool(
                url, min_size=0, max_size=read_connections, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings={"default_transaction_read_only": "on"},
            )
        except BaseException:
            await writes.close()
            raise
        return cls(writes, reads, months, f"PostgreSQL at {postgres_address(url)}")

    async def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int:
        """All rows in one transaction; rows whose id (or session response) exists are skipped.

        First straight `COPY` into the tables: about a third less database
        work per row than going through the staging table. Only a batch that
        repeats a row (journal replay after a crash) violates a unique index;
        that batch is rolled back and moved through staging with
        `ON CONFLICT DO NOTHING`. Either way the rollup trigger sees exactly
        the charges inserted.
        """
        async with self._writes.acquire() as conn:
            charges = rows_by_kind.get(CHARGES.name)
            if charges:
                missing = self._months.missing(r[_ID] for r in charges)
                if missing:
                    await _partitions.create(conn, self._months, missing)
            try:
                async with conn.transaction():
                    for name, rows in rows_by_kind.items():
                        kind = KINDS[name]
                        if kind is CHARGES and (keys := _response_keys(rows)):
                            await conn.copy_records_to_table(
                                "charge_responses", records=keys,
                                columns=["session_id", "response_id", "ts_ms"])
                        await _copy(conn, kind.table, kind, rows)
            except asyncpg.UniqueViolationError:
                async with conn.transaction():
                    for name, rows in rows_by_kind.items():
                        kind = KINDS[name]
                        if kind is CHARGES:
                            await _copy(conn, _staging(kind.table), kind, _first_of_each(rows))
                            await conn.execute(_NEW_CHARGES_SQL)
                        else:
                            await _insert_ignoring_repeats(conn, kind, rows)
        return sum(len(r) for r in rows_by_kind.values())

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A query on the read pool."""
        return [tuple(r) for r in await self._reads.fetch(sql, *args)]

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator["_Snapshot"]:
        """Several queries over one consistent view (a REPEATABLE READ transaction)."""
        async with self._reads.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield _Snapshot(conn)

    async def merge_rollups(self, rows: Sequence[Row], mark: str, value: str) -> bool:
        """Add rollup rows once: with ledger_meta `mark` set in the same transaction."""
        async with self._writes.acquire() as conn:
            async with conn.transaction():
                if not await conn.fetchval(
                        "INSERT INTO ledger_meta VALUES ($1, $2) ON CONFLICT DO NOTHING "
                        "RETURNING true", mark, value):
                    return False
                await conn.executemany(MERGE_ROLLUP_SQL, rows)
        return True

    async def expire(self, horizon_ms: int) -> None:
        """Retention: drop or trim what is older than the horizon (one replica at a time)."""
        async with self._writes.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
                return
            try:
                await _partitions.drop_expired(conn, self._months, horizon_ms)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)

    async def maintain(self, now_ms: int) -> None:
        """Create this month's and next month's partitions ahead of their charges."""
        async with self._writes.acquire() as conn:
            await _partitions.ahead(conn, self._months, now_ms)

    async def lease(self, scope: str, period: str, key: str, want: int, limit: int, seed: int,
                    now_ms: int) -> int:
        """Take up to `want` of a shared limit under a row lock; returns the grant."""
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO budget_leases VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT DO NOTHING", scope, period, key, limit, seed, now_ms)
                leased = await conn.fetchval(
                    "SELECT leased_nanos FROM budget_leases WHERE scope = $1 AND period = $2 "
                    "AND period_key = $3 FOR UPDATE", scope, period, key)
                granted = max(0, min(want, limit - int(leased)))
                await conn.execute(
                    "UPDATE budget_leases SET leased_nanos = leased_nanos + $1, "
                    "limit_nanos = $2, updated_ms = $3 "
                    "WHERE scope = $4 AND period = $5 AND period_key = $6",
                    granted, limit, now_ms, scope, period, key)
        return granted

    async def unlease(self, scope: str, period: str, key: str, amount: int,
                      now_ms: int) -> None:
        await self._pool.execute(
            "UPDATE budget_leases SET leased_nanos = GREATEST(0, leased_nanos - $1), "
            "updated_ms = $2 WHERE scope = $3 AND period = $4 AND period_key = $5",
            amount, now_ms, scope, period, key)

    async def hold_slots(self, scope: str, holder: str, count: int, limit: int, now_ms: int,
                         ttl_ms: int) -> bool:
        """Set `holder`'s count of `scope` if the live holds stay within `limit` (a
        lower count always succeeds); serialised per scope by an advisory lock."""
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", scope)
                rows = await conn.fetch(
                    "SELECT holder, held FROM slot_holds WHERE scope = $1 AND expires_ms > $2",
                    scope, now_ms)
                own = sum(int(r[1]) for r in rows if r[0] == holder)
                others = sum(int(r[1]) for r in rows if r[0] != holder)
                if count > own and others + count > limit:
                    return False
                await conn.execute(
                    "INSERT INTO slot_holds VALUES ($1, $2, $3, $4) ON CONFLICT (scope, holder) "
                    "DO UPDATE SET held = EXCLUDED.held, expires_ms = EXCLUDED.expires_ms",
                    scope, holder, count, now_ms + ttl_ms)
        return True

    async def renew_slots(self, holder: str, now_ms: int, ttl_ms: int) -> None:
        """Keep `holder`'s holds alive; forget rows long dead or empty."""
        async with self._pool.acquire() as conn:
            await conn.execute("UPDATE slot_holds SET expires_ms = $1 WHERE holder = $2 "
                               "AND held > 0", now_ms + ttl_ms, holder)
            await conn.execute("DELETE FROM slot_holds WHERE expires_ms < $1", now_ms - ttl_ms)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A statement that writes (INSERT … RETURNING), on the write pool."""
        return [tuple(r) for r in await self._writes.fetch(sql, *args)]

    async def close(self) -> None:
        await self._reads.close()
        await self._writes.close()


class _Snapshot:
    def __init__(self, conn: asyncpg.Connection):
        self._conn = conn

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._conn.fetch(sql, *args)]
