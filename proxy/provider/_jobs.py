"""serve's daily provider jobs (off by default): reconcile, attribute, sync limits.

With `[provider] reconcile_daily = true`, once a day the last few days are
reconciled by project: the results are stored (for `/admin/reconcile`),
`faregate_reconcile_drift_usd{group}` shows each group's latest final day, a
final day outside the tolerance raises one alert (claimed in the ledger's
alerts table, so replicas and restarts send it once), and the unseen
Realtime cost of final days is charged to the creators of the sessions that
caused it — counted against their budgets from then on. With `sync_limits =
true` the mapped projects' hard limits are set as `faregate sync-limits
--apply` would. Everything runs in a background task, never on a request.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from faregate.storage import AlertRecord, Ledger, Reconciliation, nanos_to_usd

from .._metrics import Metrics
from .._runtime import Runtime
from .._tasks import stop_task
from ..alerts import DriftAlert
from ..caller import Caller
from ..meter import Account, Biller
from . import _backstop as backstop
from ._api import ProviderApi, ProviderError
from ._attribute import Attribution
from ._gather import reconcile_days
from ._reconcile import failing

log = logging.getLogger("faregate.provider")

RECHECK_DAYS = 4  # days before today reconciled again each run (the provider's days settle)
FIRST_RUN_S = 300.0
EVERY_S = 86_400.0
RETRY_S = 3_600.0
ENDPOINTS = {"call": "/v1/realtime/calls", "secret": "/v1/realtime/client_secrets"}


def drift_alert(r: Reconciliation, tolerance: Decimal) -> tuple[AlertRecord, DriftAlert]:
    aid = f"reconcile|{r.grouping}|{r.group}|{r.day.isoformat()}"
    record = AlertRecord(
        id=aid, scope=f"reconcile:{r.group}", period="day", period_start=r.day.isoformat(),
        threshold=format(tolerance, "f"), level="warning",
        limit_nanos=int(tolerance * r.provider_nanos), spent_nanos=r.ledger_nanos,
        projected_nanos=r.provider_nanos)
    alert = DriftAlert(
        id=aid, grouping=r.grouping, group=r.group, day=r.day.isoformat(),
        ledger_nanos=r.ledger_nanos, provider_nanos=r.provider_nanos,
        drift_ratio=r.drift_ratio, tolerance=tolerance,
        notes=r.notes, at=datetime.now(timezone.utc))
    return record, alert


class ProviderJobs:
    def __init__(self, runtime: Callable[[], Runtime], ledger: Ledger, biller: Biller,
                 metrics: Metrics, send: Callable[[DriftAlert], None],
                 api: Callable[[Runtime], ProviderApi] | None = None) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.biller = biller
        self.metrics = metrics
        self._send = send
        self._api = api or (lambda rt: ProviderApi.from_settings(rt.settings))
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        provider = self.runtime().settings.provider
        if (provider.reconcile_daily or provider.sync_limits) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="provider")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(FIRST_RUN_S)
        while True:
            try:
                await self.run_once()
                wait = EVERY_S
            except ProviderError as exc:
                log.error("provider jobs failed; retrying later", extra={"error": str(exc)})
                wait = RETRY_S
            await asyncio.sleep(wait)

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """One round of whatever is enabled; returns what it did, by count."""
        rt = self.runtime()
        provider = rt.settings.provider
        done = {"reconciled": 0, "alerts": 0, "attributed": 0, "limits": 0}
        if not (provider.reconcile_daily or provider.sync_limits):
            return done
        api = self._api(rt)
        try:
            if provider.reconcile_daily:
                await self._reconcile(rt, api, now or datetime.now(timezone.utc), done)
            if provider.sync_limits:
                plans = await backstop.plan(api, backstop.backstops(rt.settings))
                done["limits"] = len(await backstop.apply(api, plans, self.ledger.record))
        finally:
            await api.close()
        return done

    async def _reconcile(self, rt: Runtime, api: ProviderApi, now: datetime,
                         done: dict[str, int]) -> None:
        today = now.astimezone(timezone.utc).date()
        outcome = await reconcile_days(rt.settings, rt.prices, self.ledger, api,
                                       today - timedelta(days=RECHECK_DAYS), today, "project",
                                       now)
        done["attributed"] = await self._attribute(rt, outcome.attributions)
        if done["attributed"]:  # reconcile again so the stored rows include them
            outcome = await reconcile_days(rt.settings, rt.prices, self.ledger, api,
                                           outcome.first, outcome.last, "project", now)
        await self.ledger.save_reconciliations(outcome.rows)
        done["reconciled"] = len(outcome.rows)
        latest: dict[str, Reconciliation] = {}
        for r in outcome.rows:
            if r.final:
                latest[r.group] = r  # rows come oldest first
        for group, r in latest.items():
            self.metrics.reconcile_drift.labels(group).set(float(nanos_to_usd(r.drift_nanos)))
        tolerance = rt.settings.provider.drift_tolerance
        for r in failing(outcome.rows):
            record, alert = drift_alert(r, tolerance)
            if await self.ledger.claim_alert(record):
                log.warning("reconcile drift beyond tolerance", extra={
                    "group": r.group, "date": r.day.isoformat(),
                    "drift_nanos": r.drift_nanos})
                self._send(alert)
                done["alerts"] += 1

    async def _attribute(self, rt: Runtime, attributions: list[Attribution]) -> int:
        """Charge each attribution once: its id is deterministic, and only the process
        whose insert writes it counts it (another replica, a restart or a re-run finds
        it there)."""
        count = nanos = 0
        for a in attributions:
            s = a.session
            caller = Caller(s.tenant, s.user, None, s.key_id, None)
            account = Account(caller, ENDPOINTS.get(s.kind, "/v1/realtime/calls"),
                              f"reconcile:{a.day.isoformat()}", session_id=s.session_id)
            if await self.biller.bill_from_provider(
                    account, model=s.model, nanos=a.nanos, at=a.at, record_id=a.record_id,
                    response_id=a.response_id, policy=rt.policy(caller),
                    claim=self.ledger.claim_charge, note=a.day.isoformat()):
                count, nanos = count + 1, nanos + a.nanos
        if count:
            log.warning("provider cost attributed to sessions faregate could not see",
                        extra={"charges": count, "nanos": nanos})
        return count
