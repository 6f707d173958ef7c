"""`faregate ledger copy --to URL`: a whole ledger into another database, idempotently.

For moving an embedded SQLite ledger to PostgreSQL (or back). Charges,
sessions, alerts and Batch API events are read in id order, in pages, and
written through the target's own insert path: ids already there are
skipped, and the target's rollups count each new charge once (its trigger
or rowid rule), so running the copy again, or after an interruption, adds
nothing twice. Shared-budget leases are copied when absent.

Retention: sums of charges the source no longer holds (before its
retention horizon) exist only as its rollups. Those rollup rows are added
to the target once per source ledger (marked in the target's
`ledger_meta` in the same transaction), and charges before that horizon are
not copied, so no period is counted twice. The horizon is fixed by the first
copy from a source; later copies skip this step.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from . import _retention
from ._progress import Progress
from ._kinds import ALERTS, BATCHES, CHARGES, SESSIONS, Kind
from ._rollups import COLUMNS as ROLLUP_COLUMNS
from ._rollups import DAY_S, MONTH_S, SUM_COLUMNS
from ._usage import month_floor
from ._store import Store, open_store

PAGE = 5_000

Say = Callable[[str], None]


async def _count(store: Store, table: str) -> int:
    return int((await store.read(f"SELECT COUNT(*) FROM {table}"))[0][0])


async def _copy_kind(src: Store, dst: Store, kind: Kind, since_ms: int | None = None) -> int:
    p = src.placeholder
    total = await _count(src, kind.table)
    cols = ", ".join(kind.columns)
    keep = f" AND ts_ms >= {p(2)}" if since_ms is not None else ""
    sql = (f"SELECT {cols} FROM {kind.table} WHERE id > {p(1)}{keep} "
           f"ORDER BY id LIMIT {PAGE}")
    after, done = "", 0
    progress = Progress(f"ledger copy: {kind.table}", total)
    while True:
        rows = await src.read(sql, [after] + ([since_ms] if since_ms is not None else []))
        if not rows:
            break
        await dst.insert({kind.name: [kind.fit(tuple(r)) for r in rows]})
        done += len(rows)
        after = rows[-1][0]
        progress.add(len(rows))
    progress.finish()
    return done


async def _copy_leases(src: Store, dst: Store, say: Say) -> int:
    rows = await src.read("SELECT scope, period, period_key, limit_nanos, leased_nanos, "
                          "updated_ms FROM budget_leases")
    p = dst.placeholder
    sql = (f"INSERT INTO budget_leases VALUES ({', '.join(p(i + 1) for i in range(6))}) "
           "ON CONFLICT DO NOTHING RETURNING scope")
    added = 0
    for r in rows:
        added += len(await dst.fetch(sql, list(r)))
    say(f"budget_leases: {added} of {len(rows)} rows added")
    return added


async def _rollups_before(src: Store, horizon: int) -> list[tuple]:
    """Rollup rows of the charges before `horizon` (a UTC midnight): rows wholly
    before it, and for the month it falls in, month rows made of that month's
    days before it (the rest of the month arrives as charges)."""
    p = src.placeholder
    month = month_floor(horizon)
    cols = ", ".join(ROLLUP_COLUMNS)
    whole = await src.read(
        f"SELECT {cols} FROM rollups WHERE (span_s = {MONTH_S} AND bucket_ms < {p(1)}) "
        f"OR (span_s <> {MONTH_S} AND bucket_ms < {p(2)})", [month, horizon])
    sums = ", ".join(f"SUM({c})" for c in SUM_COLUMNS)
    part = await src.read(
        f"SELECT dim, {MONTH_S}, {p(1)}, tenant, value, {sums} FROM rollups "
        f"WHERE span_s = {DAY_S} AND bucket_ms >= {p(2)} AND bucket_ms < {p(3)} "
        "GROUP BY dim, tenant, value", [month, month, horizon])
    return [tuple(int(v) if isinstance(v, Decimal) else v for v in r) for r in whole + part]


async def _expired_rollups(src: Store, dst: Store, source_id: str, say: Say) -> int | None:
    """Add the source's rollups of its expired past once; returns the horizon used."""
    mark = f"copied_from:{source_id}"
    known = await _retention.read_meta(dst, mark)
    if known is not None:
        return None if known == "" else int(known)
    horizon = await _retention.read_meta(src, _retention.EXPIRED_BEFORE)
    rows: list[Any] = []
    if horizon is not None:
        rows = await _rollups_before(src, int(horizon))
    if await dst.merge_rollups(rows, mark, horizon or ""):
        say(f"rollups before the source's retention horizon: {len(rows):,} rows added")
        if horizon is not None:
            before = await _retention.read_meta(dst, _retention.EXPIRED_BEFORE)
            if before is None or int(before) < int(horizon):
                await _retention.write_meta(dst, _retention.EXPIRED_BEFORE, horizon)
    return None if horizon is None else int(horizon)


async def copy_ledger(source_url: str, target_url: str, say: Say) -> dict[str, int]:
    """Copy everything from the source ledger to the target; returns rows copied per table."""
    if source_url == target_url:
        raise ValueError("the target is the source ledger")
    src = await open_store(source_url)
    try:
        dst = await open_store(target_url)
        try:
            source_id = await _retention.ledger_id(src)
            horizon = await _expired_rollups(src, dst, source_id, say)
            out = {"charges": await _copy_kind(src, dst, CHARGES, horizon)}
            for kind in (SESSIONS, ALERTS, BATCHES):
                out[kind.table] = await _copy_kind(src, dst, kind)
            out["budget_leases"] = await _copy_leases(src, dst, say)
            return out
        finally:
            await dst.close()
    finally:
        await src.close()
