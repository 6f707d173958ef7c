"""PostgreSQL: charges partitioned by month, so retention drops a table.

Why the partition key is the charge *id* (and not `ts_ms`): a partitioned
table's unique indexes must contain the partition key, and the ledger's
idempotence rests on `id` being unique across the whole table (journal
replays, Batch API lines whose ids are deterministic). Ids begin with their
creation time in milliseconds as 12 lowercase hex digits (`new_id`,
Batch `line_id`), so a month is a range of ids, `PRIMARY KEY (id)` stays one
global constraint, and a replay hits the same partition as the original.

Layout: `charges` (PARTITION BY RANGE (id)) with one partition per month
(`charges_y2026m12`), `charges_legacy` (the table as it was before this
layout, attached as the range below its bound, see `convert`) and
`charges_other` (the DEFAULT partition: any id outside those ranges, so an
insert never fails for want of a partition; partitions are an optimisation
for retention, created ahead of time and on demand).

Retention (`drop_expired`) drops whole months whose ids are all older than
the horizon and deletes old rows from the legacy and default partitions in
bounded batches.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Iterable

log = logging.getLogger("faregate.ledger")

LEGACY, OTHER = "charges_legacy", "charges_other"
#: DDL on charges waits at most this long for its lock, then gives up (retried later):
#: a DROP or CREATE queued behind a long read would stall every writer behind it.
LOCK_TIMEOUT = "2s"
DELETE_BATCH = 10_000
_HEX = frozenset("0123456789abcdef")


def month_start_ms(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp()) * 1000


def next_month_ms(month_ms: int) -> int:
    d = datetime.fromtimestamp(month_ms / 1000, timezone.utc)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp()) * 1000


def id_bound(ms: int) -> str:
    """The smallest id created at `ms` (12 hex digits; longer ids sort after it)."""
    return f"{ms:012x}"


def month_of_id(charge_id: str) -> int | None:
    """The start (epoch ms) of the month an id was created in, or None if it has no time."""
    head = charge_id[:12]
    if len(head) != 12 or not _HEX.issuperset(head):
        return None
    return month_start_ms(int(head, 16))


def partition_name(month_ms: int) -> str:
    d = datetime.fromtimestamp(month_ms / 1000, timezone.utc)
    return f"charges_y{d.year:04d}m{d.month:02d}"


class Months:
    """The monthly partitions this process knows exist, and the legacy bound."""

    def __init__(self, months: Iterable[int], legacy_below: int | None, partitioned: bool = True):
        self.partitioned = partitioned
        self.known = set(months)
        self.legacy_below = legacy_below  # epoch ms; ids below it live in charges_legacy
        self._cur: tuple[str, str] = ("", "")

    def missing(self, ids: Iterable[str]) -> set[int]:
        """Months of these ids that have no partition yet (current month: one string compare)."""
        lo, hi = self._cur
        out: set[int] = set()
        if not self.partitioned:
            return out
        for charge_id in ids:
            if lo <= charge_id < hi:
                continue
            month = month_of_id(charge_id)
            if month is None:
                continue  # no time in it: the default partition takes it
            if month in self.known:
                lo, hi = self._cur = (id_bound(month), id_bound(next_month_ms(month)))
            elif self.legacy_below is None or month >= self.legacy_below:
                out.add(month)
        return out


async def load(conn: Any) -> Months:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'charges'::regclass")
    months = []
    for (name,) in rows:
        if name.startswith("charges_y") and len(name) == len("charges_y2026m12"):
            y, m = int(name[9:13]), int(name[14:16])
            months.append(int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp()) * 1000)
    legacy = await conn.fetchval("SELECT value FROM ledger_meta WHERE key = 'charges_legacy_below'")
    return Months(months, int(legacy) if legacy else None)


async def create(conn: Any, months: Months, wanted: Iterable[int]) -> None:
    """Create monthly partitions (best effort: rows without one go to charges_other)."""
    for month in sorted(set(wanted) - months.known):
        name = partition_name(month)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF charges FOR VALUES "
                    f"FROM ('{id_bound(month)}') TO ('{id_bound(next_month_ms(month))}')")
        except Exception as exc:  # a lock wait, a race with another replica, an odd row
            log.warning("charges partition not created; its rows go to charges_other for now",
                        extra={"partition": name, "error": f"{type(exc).__name__}: {exc}"})
            if "already exists" not in str(exc):
                continue
        months.known.add(month)


async def ahead(conn: Any, months: Months, now_ms: int) -> None:
    """This month's and next month's partitions (at open, and from the maintenance task)."""
    this = month_start_ms(now_ms)
    wanted = [m for m in (this, next_month_ms(this))
              if months.legacy_below is None or m >= months.legacy_below]
    await create(conn, months, wanted)


async def convert(conn: Any) -> None:
    """Migration step: turn a plain `charges` table into the partitioned layout.

    The old table is kept as it is and attached as partition `charges_legacy`
    for every id below the start of next month: no row is copied. PostgreSQL
    scans it once to check that bound, and builds the two small session
    indexes on it. Runs inside the migration's transaction.
    """
    kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = to_regclass('charges')")
    if kind == "p":
        return
    started = time.monotonic()
    await conn.execute("LOCK TABLE charges IN ACCESS EXCLUSIVE MODE")
    await conn.execute(f"ALTER TABLE charges RENAME TO {LEGACY}")
    for index in ("charges_pkey", "charges_ts", "charges_tenant_ts", "charges_session_responses"):
        await conn.execute(f"ALTER INDEX IF EXISTS {index} RENAME TO {LEGACY}{index[7:]}")
    for statement in (
        f"CREATE TABLE charges (LIKE {LEGACY} INCLUDING DEFAULTS) PARTITION BY RANGE (id)",
        "ALTER TABLE charges ADD CONSTRAINT charges_pkey PRIMARY KEY (id)",
        "CREATE INDEX charges_ts ON charges (ts_ms)",
        "CREATE INDEX charges_tenant_ts ON charges (tenant, ts_ms)",
        "CREATE INDEX charges_session ON charges (session_id) WHERE session_id IS NOT NULL",
        "CREATE INDEX charges_session_ts ON charges (ts_ms, session_id) "
        "WHERE session_id IS NOT NULL",
        f"CREATE TABLE {OTHER} PARTITION OF charges DEFAULT",
    ):
        await conn.execute(statement)
    rows = await conn.fetchval(f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{LEGACY}'")
    if await conn.fetchval(f"SELECT NOT EXISTS (SELECT 1 FROM {LEGACY})"):
        await conn.execute(f"DROP TABLE {LEGACY}")
        return
    await conn.execute(
        "INSERT INTO charge_responses SELECT session_id, response_id, ts_ms "
        f"FROM {LEGACY} WHERE session_id IS NOT NULL AND response_id IS NOT NULL "
        "ON CONFLICT DO NOTHING")
    await conn.execute(f"DROP INDEX IF EXISTS {LEGACY}_session_responses")
    below = next_month_ms(month_start_ms(int(time.time() * 1000)))
    bound = id_bound(below)
    # Ids at or past the bound (a clock ahead, or an id without a time) go to the default.
    moved = await conn.fetchval(
        f"WITH m AS (DELETE FROM {LEGACY} WHERE id >= $1 RETURNING *), "
        f"i AS (INSERT INTO {OTHER} SELECT * FROM m RETURNING 1) SELECT count(*) FROM i", bound)
    await conn.execute(
        f"ALTER TABLE charges ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO ('{bound}')")
    await conn.execute(
        "INSERT INTO ledger_meta VALUES ('charges_legacy_below', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", str(below))
    log.info("charges partitioned by month; existing rows kept as one partition",
             extra={"partition": LEGACY, "rows_estimate": int(rows or 0),
                    "moved_to_default": int(moved or 0),
                    "seconds": round(time.monotonic() - started, 2)})


async def drop_expired(conn: Any, months: Months, horizon_ms: int) -> None:
    """Drop monthly partitions wholly older than the horizon; trim legacy and default."""
    for month in sorted(months.known):
        if next_month_ms(month) > horizon_ms:
            continue
        await _drop(conn, partition_name(month))
        months.known.discard(month)
    legacy = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", LEGACY)
    if legacy and months.legacy_below is not None and months.legacy_below <= horizon_ms:
        await _drop(conn, LEGACY)  # every id in it was created before the horizon
        legacy = False
    for table in ([LEGACY] if legacy else []) + [OTHER]:
        while await conn.fetchval(
            f"WITH d AS (DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
            f"WHERE ts_ms < $1 LIMIT {DELETE_BATCH}) RETURNING 1) SELECT count(*) FROM d",
            horizon_ms,
        ) == DELETE_BATCH:
            pass
    await conn.execute("DELETE FROM charge_responses WHERE ts_ms < $1", horizon_ms)


async def _drop(conn: Any, table: str) -> None:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    log.info("charges partition dropped (retention)", extra={"partition": table})
