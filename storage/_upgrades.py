"""Migration steps that SQL files cannot say: data moved or summed in batches.

A version may have a Python step beside its SQL; it runs after the SQL, in
the same transaction (SQLite holds its write lock, PostgreSQL the migration
advisory lock and, for these steps, a lock on `charges`), so charges written
meanwhile by another process wait for the commit and are then counted by the
new code path (the rollup trigger) — never twice, never missed.

- 0011 (PostgreSQL): `charges` becomes partitioned by month (`_partitions.convert`).
- 0012 (both): the rollups table (from `_rollups.table_sql`), filled from
  every charge already stored, in batches of `BACKFILL_ROWS`, showing
  progress (`_progress`); on PostgreSQL the `bigsum` aggregate and the trigger that keeps
  rollups from then on are created first, in the same transaction.
- 0051 (PostgreSQL): the rollup trigger's function made again from today's
  `_rollups` sums (a session's charges count as one request from then on;
  rollups of earlier charges keep what they counted).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from . import _partitions
from ._progress import Progress
from ._rollups import PG_TRIGGER_SQL, pg_roll_up_sql, sqlite_roll_up, table_sql

BACKFILL_ROWS = 200_000


def sqlite_backfill_rollups(conn: Any) -> None:
    conn.execute(table_sql("sqlite"))
    (low, high) = conn.execute("SELECT COALESCE(MIN(rowid), 1), COALESCE(MAX(rowid), 0) "
                               "FROM charges").fetchone()
    progress = Progress("rollup backfill", high - low + 1)
    start = low - 1
    while start < high:
        end = min(high, start + BACKFILL_ROWS)
        sqlite_roll_up(conn, start, end)
        progress.add(end - start)
        start = end
    progress.finish()


#: Integer sums: sum(bigint) is numeric in PostgreSQL (exact but slow); int8pl adds
#: bigints and raises on overflow instead of wrapping.
PG_BIGSUM = ("CREATE OR REPLACE AGGREGATE bigsum(bigint) "
             "(SFUNC = int8pl, STYPE = bigint, INITCOND = '0')")


async def pg_rollups(conn: Any) -> None:
    await conn.execute(table_sql("postgresql"))
    await conn.execute(PG_BIGSUM)
    for statement in PG_TRIGGER_SQL:
        await conn.execute(statement)
    await conn.execute("LOCK TABLE charges IN SHARE MODE")  # writers wait; readers do not
    total = await conn.fetchval(
        "SELECT COALESCE(SUM(c.reltuples), 0)::bigint FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'charges'::regclass")
    progress = Progress("rollup backfill", int(total or 0))
    after = ""
    upto_sql = pg_roll_up_sql("(SELECT * FROM charges WHERE id > $1 AND id <= $2) AS src")
    rest_sql = pg_roll_up_sql("(SELECT * FROM charges WHERE id > $1) AS src")
    while True:
        upto = await conn.fetchval(
            "SELECT id FROM charges WHERE id > $1 ORDER BY id OFFSET $2 LIMIT 1",
            after, BACKFILL_ROWS - 1)
        if upto is None:
            await conn.execute(rest_sql, after)
            break
        await conn.execute(upto_sql, after, upto)
        progress.add(BACKFILL_ROWS)
        after = upto
    progress.done = max(progress.done, int(total or 0))
    progress.finish()


async def pg_refresh_roll_up(conn: Any) -> None:
    """The trigger function as `_rollups` writes it now (it is compiled at creation)."""
    for statement in PG_TRIGGER_SQL:
        await conn.execute(statement)


SQLITE_STEPS: dict[int, Callable[[Any], None]] = {12: sqlite_backfill_rollups}
PG_STEPS: dict[int, Callable[[Any], Awaitable[None]]] = {
    11: _partitions.convert, 12: pg_rollups, 51: pg_refresh_roll_up,
}
