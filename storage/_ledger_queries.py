"""The ledger's read side: reports, sessions, alerts, seeding, shared budgets.

A mixin over the store the `Ledger` opened, so the ledger module itself stays
about writing (queue, journal, writer). Sums come from rollups (`_usage`);
raw charges serve row-level views only. Every read runs on the store's read
connections, never on its writer (`Store.read`); statements that write
(claims, leases) go through `Store.fetch`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timezone

from . import _pending, _usage
from ._journal import Journal
from ._kinds import ALERTS, BACKGROUND, BATCHES, CHARGES, OBJECTS, SESSIONS
from ._lookups import (
    alerts_sql,
    background_pending_sql,
    batch_events_by_id_sql,
    batch_events_sql,
    claim_alert_sql,
    claim_sql,
    objects_by_id_sql,
    context_sql,
    lease_state_sql,
    session_sql,
    sessions_sql,
)
from ._periods import epoch_ms
from ._provider import ProviderQueries
from ._queries import logs_sql, unpriced_models_sql
from ._record import (
    AlertRecord,
    BackgroundEvent,
    BatchEvent,
    LedgerRecord,
    ObjectRecord,
    SessionRecord,
)
from ._report import UsageReport
from ._sessions import REBUILD_HINT, REBUILD_SELECT, rebuilt_session
from ._store import Store

#: A session with no row whose last charge is older than this was cut off by a crash.
REBUILD_AFTER_S = 2 * 3600
#: Sessions cut off by a crash are looked for among session charges this recent
#: (index charges_session_ts), so a start reads a bounded slice of the ledger.
REBUILD_WINDOW_S = 86400


def _now_ms() -> int:
    return int(time.time() * 1000)


class LedgerQueries(ProviderQueries):
    _store: Store
    _journal: Journal | None
    #: Raw charges before this instant (epoch ms) were deleted by retention.
    expired_before_ms: int | None = None

    # -- queries ----------------------------------------------------------

    async def usage(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
        tenant: str | None = None,
    ) -> UsageReport:
        """Usage and cost for [start, end) grouped by `group_by`, from rollups.

        A range reaching before the retention horizon is still complete
        (rollups are kept); the report then says where row-level detail ends.
        """
        s = self._store
        report = await _usage.usage(s.read, s.placeholder, s.dialect, start, end, group_by,
                                    tenant)
        cut = self.expired_before_ms
        if cut is not None and (start is None or epoch_ms(start) < cut):
            stamp = datetime.fromtimestamp(cut / 1000, timezone.utc).isoformat()
            report = dataclasses.replace(report, detail_expired_before=stamp)
        if any(r.unpriced for r in report.rows):  # name them, with the lines that price them
            sql, args = unpriced_models_sql(s.placeholder, start, end, tenant)
            rows = await s.read(sql, args)
            report = dataclasses.replace(
                report, unpriced_models=tuple((str(m), int(n)) for m, n in rows))
        return report

    async def logs(
        self,
        tenant: str | None = None,
        user: str | None = None,
        model: str | None = None,
        limit: int = 100,
        before: str | None = None,
        request_id: str | None = None,
    ) -> list[LedgerRecord]:
        sql, args = logs_sql(self._store.placeholder, CHARGES.columns, tenant, user, model,
                             limit, before, request_id)
        return [CHARGES.from_row(r) for r in await self._store.read(sql, args)]

    async def sessions(
        self, tenant: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[SessionRecord]:
        sql, args = sessions_sql(self._store.placeholder, tenant, limit, before)
        return [SESSIONS.from_row(r) for r in await self._store.read(sql, args)]

    async def session(self, session_id: str) -> SessionRecord | None:
        sql, args = session_sql(self._store.placeholder, session_id)
        rows = await self._store.read(sql, args)
        return SESSIONS.from_row(rows[0]) if rows else None

    async def rebuild_sessions(self) -> int:
        """Session rows for sessions a crash cut off (from their charges); call at start.

        Looks at sessions with a charge in the last `REBUILD_WINDOW_S`. On
        PostgreSQL only sessions whose last charge is older than
        `REBUILD_AFTER_S`, so a session still open on another replica is never
        mistaken for a dead one; there a serving ledger leaves it to its
        upkeep task (a few seconds after start, then hourly), so a start never
        waits for it and a replica that crashed is mended without a restart.
        """
        if self.shared and getattr(self, "_maintainer", None) is not None:
            return 0
        return await self.rebuild_now()

    async def rebuild_now(self) -> int:
        """`rebuild_sessions`, now."""
        # One process owns a SQLite ledger (its journal is locked): all orphans are dead.
        wait_s = 0 if self._store.dialect == "sqlite" else REBUILD_AFTER_S
        now = _now_ms()
        sql = REBUILD_SELECT.format(since=self._store.placeholder(1),
                                    hint=REBUILD_HINT[self._store.dialect])
        found = await self._store.read(sql, [now - REBUILD_WINDOW_S * 1000])
        rebuilt = [rebuilt_session(r) for r in found if int(r[9]) <= now - wait_s * 1000]
        if rebuilt:
            await self._store.insert({"session": [SESSIONS.to_row(s) for s in rebuilt]})
        return len(rebuilt)

    async def spend_since(self, month_start: datetime, day_start: datetime) -> list[tuple]:
        """Spend, requests and images per (tenant, user) this month and today.

        Rollups plus the charges an earlier run left in the journal that the
        database does not have yet (a restart with a lagging or locked
        database): both read from one snapshot, so each charge counts once.
        Rows are (tenant, user, month nanos, month requests, month images,
        day nanos, day requests, day images); user None is the tenant's rest.
        """
        s = self._store
        files = []
        if self._journal is not None:
            files = await asyncio.to_thread(self._journal.open_earlier)
        try:
            async with s.snapshot() as view:
                rows = await _usage.spend_since(view.read, s.placeholder, s.dialect,
                                                month_start, day_start)
                if not files:
                    return rows
                month_ms = epoch_ms(month_start)
                charges = await asyncio.to_thread(_pending.journal_charges, files, month_ms)
                files = []
                unwritten = await _pending.not_stored(view, s.dialect, charges)
        finally:
            for f in files:
                f.close()
        merged = {(t, u): list(v) for t, u, *v in rows}
        for key, vals in _pending.spend_rows(unwritten, epoch_ms(day_start)).items():
            acc = merged.setdefault(key, [0] * 6)
            for i, v in enumerate(vals):
                acc[i] += v
        return [(t, u, *v) for (t, u), v in merged.items()]

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
        return [BATCHES.from_row(r) for r in await self._store.read(sql, args)]

    async def batch_events_by_id(self, ids: list[str]) -> list[BatchEvent]:
        """The batch events with these ids (what another replica recorded), oldest first."""
        if not ids:
            return []
        sql, args = batch_events_by_id_sql(self._store.placeholder, ids)
        return [BATCHES.from_row(r) for r in await self._store.read(sql, args)]

    async def objects_by_id(self, ids: list[str]) -> list[ObjectRecord]:
        """Who owns these objects (what this or another replica recorded)."""
        if not ids:
            return []
        sql, args = objects_by_id_sql(self._store.placeholder, ids)
        return [OBJECTS.from_row(r) for r in await self._store.fetch(sql, args)]

    async def claim_batch(self, event: BatchEvent) -> bool:
        """Write a batch event now; False if it exists (another process claimed it)."""
        return bool(await self._store.fetch(*claim_sql(self._store.placeholder, BATCHES, event)))

    async def claim_charge(self, record: LedgerRecord) -> bool:
        """Write a charge now, off the request path; False if its id (or its session
        and response) is already there — so only one process counts it."""
        return bool(await self._store.fetch(*claim_sql(self._store.placeholder, CHARGES, record)))

    async def unclaim_batch(self, event_id: str) -> None:
        """Remove a claim row (a download that broke off before the file's end)."""
        p = self._store.placeholder
        await self._store.fetch(f"DELETE FROM batches WHERE id = {p(1)} RETURNING id",
                                [event_id])

    async def background_pending(self, since: datetime) -> list[BackgroundEvent]:
        """Background responses created since `since` and not yet charged, oldest first."""
        sql, args = background_pending_sql(self._store.placeholder, since)
        return [BACKGROUND.from_row(r) for r in await self._store.fetch(sql, args)]

    async def claim_background(self, event: BackgroundEvent) -> bool:
        """Write a background event now; False if it exists (another process charged it)."""
        return bool(await self._store.fetch(*claim_sql(self._store.placeholder, BACKGROUND,
                                                       event)))

    async def alerts(self, since: datetime | None = None, limit: int = 500) -> list[AlertRecord]:
        sql, args = alerts_sql(self._store.placeholder, since, limit)
        return [ALERTS.from_row(r) for r in await self._store.read(sql, args)]
