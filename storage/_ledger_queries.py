"""The ledger's read side: reports, sessions, alerts, seeding, shared budgets.

A mixin over the store the `Ledger` opened, so the ledger module itself stays
about writing (queue, journal, writer). Every query is dialect-neutral SQL
(`_queries`, `_lookups`) run through the store.
"""

from __future__ import annotations

import time
from datetime import datetime

from ._kinds import ALERTS, BATCHES, SESSIONS
from ._lookups import (
    alerts_sql,
    batch_events_by_id_sql,
    batch_events_sql,
    claim_alert_sql,
    claim_sql,
    context_sql,
    lease_state_sql,
    session_sql,
    sessions_sql,
    spend_since_sql,
)
from ._record import AlertRecord, BatchEvent, LedgerRecord, SessionRecord
from ._report import UsageReport
from ._sessions import REBUILD_SELECT, rebuilt_session
from ._store import Store

#: A session with no row whose last charge is older than this was cut off by a crash.
REBUILD_AFTER_S = 2 * 3600


def _now_ms() -> int:
    return int(time.time() * 1000)


class LedgerQueries:
    _store: Store

    # -- queries ----------------------------------------------------------

    async def usage(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
        tenant: str | None = None,
    ) -> UsageReport:
        return await self._store.usage(start, end, group_by, tenant)

    async def logs(
        self,
        tenant: str | None = None,
        user: str | None = None,
        model: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[LedgerRecord]:
        return await self._store.logs(tenant, user, model, limit, before)

    async def sessions(
        self, tenant: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[SessionRecord]:
        sql, args = sessions_sql(self._store.placeholder, tenant, limit, before)
        return [SESSIONS.from_row(r) for r in await self._store.fetch(sql, args)]

    async def session(self, session_id: str) -> SessionRecord | None:
        sql, args = session_sql(self._store.placeholder, session_id)
        rows = await self._store.fetch(sql, args)
        return SESSIONS.from_row(rows[0]) if rows else None

    async def rebuild_sessions(self) -> int:
        """Session rows for sessions a crash cut off (from their charges); call at start.

        On PostgreSQL only sessions whose last charge is older than
        `REBUILD_AFTER_S`, so a session still open on another replica is never
        mistaken for a dead one.
        """
        # One process owns a SQLite ledger (its journal is locked): all orphans are dead.
        wait_s = 0 if self._store.dialect == "sqlite" else REBUILD_AFTER_S
        cutoff = _now_ms() - wait_s * 1000
        rows = [r for r in await self._store.fetch(REBUILD_SELECT) if int(r[9]) <= cutoff]
        rebuilt = [rebuilt_session(r) for r in rows]
        if rebuilt:
            await self._store.insert({"session": [SESSIONS.to_row(s) for s in rebuilt]})
        return len(rebuilt)

    async def spend_since(self, month_start: datetime, day_start: datetime) -> list[tuple]:
        """Spend, requests and images per (tenant, user) this month and today."""
        sql, args = spend_since_sql(self._store.placeholder, month_start, day_start)
        return await self._store.fetch(sql, args)

    # -- shared budgets (several replicas on one database) -------------------

    @property
    def shared(self) -> bool:
        """True when other processes may spend the same budgets (PostgreSQL)."""
        return self._store.dialect == "postgresql"

    async def lease(self, scope: str, period: str, key: str, want: int, limit: int,
                    seed: int) -> int:
        """Take up to `want` nano-USD of a limit shared by all replicas."""
        return await self._store.lease(scope, period, key, int(want), int(limit), int(seed),
                                       _now_ms())

    async def unlease(self, scope: str, period: str, key: str, amount: int) -> None:
        """Give back a lease's unspent part (at shutdown)."""
        await self._store.unlease(scope, period, key, int(amount), _now_ms())

    async def overdraw(self, scope: str, period: str, key: str, amount: int) -> None:
        """Count spend beyond what was leased (a call that cost more than its
        reservation) in the shared row, so every replica sees the limit as passed."""
        if amount > 0:
            await self._store.unlease(scope, period, key, -int(amount), _now_ms())

    async def lease_state(self, scope: str, period: str, key: str) -> tuple[int, int] | None:
        """(leased, limit) of a shared row, None if nobody leased from it yet."""
        rows = await self._store.fetch(*lease_state_sql(self._store.placeholder, scope,
                                                        period, key))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def hold_slots(self, scope: str, holder: str, count: int, limit: int,
                         ttl_s: float) -> bool:
        """Set how many of `scope`'s slots `holder` holds, if all live holds stay
        within `limit` (lowering always succeeds). Holds expire after `ttl_s`."""
        return await self._store.hold_slots(scope, holder, int(count), int(limit), _now_ms(),
                                            int(ttl_s * 1000))

    async def renew_slots(self, holder: str, ttl_s: float) -> None:
        """Keep `holder`'s slot holds alive for another `ttl_s`."""
        await self._store.renew_slots(holder, _now_ms(), int(ttl_s * 1000))

    async def prune_leases(self, periods: tuple[str, ...], older_than_s: float) -> int:
        """Forget shared rows of the given periods not touched for `older_than_s`
        (per-minute rate windows that are over)."""
        p = self._store.placeholder
        marks = ", ".join(p(i + 1) for i in range(len(periods)))
        cutoff = _now_ms() - int(older_than_s * 1000)
        rows = await self._store.fetch(
            f"DELETE FROM budget_leases WHERE period IN ({marks}) AND updated_ms < "
            f"{p(len(periods) + 1)} RETURNING scope", [*periods, cutoff])
        return len(rows)

    async def recorded_context(self, tenant: str, response_id: str | None = None,
                               conversation_id: str | None = None) -> int | None:
        """Tokens recorded for a Responses answer or the latest charge of a conversation
        (None: not in this ledger)."""
        if response_id is None and conversation_id is None:
            return None
        sql, args = context_sql(self._store.placeholder, tenant, response_id, conversation_id)
        rows = await self._store.fetch(sql, args)
        return int(rows[0][0]) if rows else None

    async def claim_alert(self, alert: AlertRecord) -> bool:
        """Write an alert now; False if another process already sent it."""
        rows = await self._store.fetch(*claim_alert_sql(self._store.placeholder, alert))
        return bool(rows)

    async def batch_events(self, since: datetime) -> list[BatchEvent]:
        """Batch API facts recorded since `since`, oldest first."""
        sql, args = batch_events_sql(self._store.placeholder, since)
        return [BATCHES.from_row(r) for r in await self._store.fetch(sql, args)]

    async def batch_events_by_id(self, ids: list[str]) -> list[BatchEvent]:
        """The batch events with these ids (what another replica recorded), oldest first."""
        if not ids:
            return []
        sql, args = batch_events_by_id_sql(self._store.placeholder, ids)
        return [BATCHES.from_row(r) for r in await self._store.fetch(sql, args)]

    async def claim_batch(self, event: BatchEvent) -> bool:
        """Write a batch event now; False if it exists (another process claimed it)."""
        return bool(await self._store.fetch(*claim_sql(self._store.placeholder, BATCHES, event)))

    async def unclaim_batch(self, event_id: str) -> None:
        """Remove a claim row (a download that broke off before the file's end)."""
        p = self._store.placeholder
        await self._store.fetch(f"DELETE FROM batches WHERE id = {p(1)} RETURNING id",
                                [event_id])

    async def alerts(self, since: datetime | None = None, limit: int = 500) -> list[AlertRecord]:
        sql, args = alerts_sql(self._store.placeholder, since, limit)
        return [ALERTS.from_row(r) for r in await self._store.fetch(sql, args)]
