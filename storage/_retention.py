"""Retention of raw charges, and the ledger's own facts (`ledger_meta`).

`[storage] keep_charges_days = N` deletes raw charges older than N days
(from the UTC midnight N days ago): SQLite in bounded delete batches,
PostgreSQL by dropping whole monthly partitions (`_partitions`), so a row
there lives up to one month longer. Rollups are never deleted, so every
report over an old period still adds up; the horizon is recorded, and a
report reaching before it says that row-level detail has expired.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

from ._periods import epoch_ms
from ._store import Store

log = logging.getLogger("faregate.ledger")

EXPIRED_BEFORE = "charges_expired_before_ms"
LEDGER_ID = "ledger_id"


async def read_meta(store: Store, key: str) -> str | None:
    p = store.placeholder
    rows = await store.read(f"SELECT value FROM ledger_meta WHERE key = {p(1)}", [key])
    return rows[0][0] if rows else None


async def write_meta(store: Store, key: str, value: str) -> None:
    p = store.placeholder
    await store.fetch(
        f"INSERT INTO ledger_meta (key, value) VALUES ({p(1)}, {p(2)}) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING key", [key, value])


async def ledger_id(store: Store) -> str:
    """This ledger's id (made on first use): what `ledger copy` remembers it copied."""
    found = await read_meta(store, LEDGER_ID)
    if found is None:
        p = store.placeholder
        await store.fetch(f"INSERT INTO ledger_meta (key, value) VALUES ({p(1)}, {p(2)}) "
                          "ON CONFLICT (key) DO NOTHING RETURNING key",
                          [LEDGER_ID, uuid.uuid4().hex])
        found = await read_meta(store, LEDGER_ID)
    assert found is not None
    return found


def horizon_ms(keep_days: int, now: datetime) -> int:
    """The UTC midnight `keep_days` days before `now`: older charges may go."""
    day = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return epoch_ms(day - timedelta(days=keep_days))


async def expire(store: Store, keep_days: int, now: datetime) -> int:
    """Delete what is older than the horizon; record it; return it (epoch ms)."""
    horizon = horizon_ms(keep_days, now)
    await store.expire(horizon)
    before = await read_meta(store, EXPIRED_BEFORE)
    if before is None or int(before) < horizon:
        await write_meta(store, EXPIRED_BEFORE, str(horizon))
    log.info("charges retention applied", extra={
        "keep_charges_days": keep_days,
        "before": datetime.fromtimestamp(horizon / 1000, timezone.utc).isoformat()})
    return max(horizon, int(before or 0))
