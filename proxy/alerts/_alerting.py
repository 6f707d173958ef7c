"""Budget alerts: when spend crosses a threshold, say so exactly once.

After every settled charge the quota calls `Alerting.on_spend()`. For each
budget the call fell under, every configured threshold (default 0.8, 0.95,
1.0) that the spend has reached fires once per scope, period and threshold:
the dedupe id is remembered in memory, written to the ledger's `alerts`
table (so a restart does not repeat it) and the alert goes to the notifier
(webhook / email), which sends it in the background.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from faregate.storage import AlertRecord, plain_decimal

from ..quota import BudgetLimit, Budgets, Counter, Policy, period_key, period_keys
from ._alert import Alert, level_for
from ._unpriced import UnpricedNotes

log = logging.getLogger("faregate.alerts")

TOP_MODELS = 5


def alert_id(scope: str, period: str, key: str, threshold: Decimal) -> str:
    return f"{scope}|{period}|{key}|{plain_decimal(threshold)}"


def period_fraction(period: str, now: datetime) -> Decimal:
    """How much of the current UTC day/month has passed (0 < f <= 1)."""
    now = now.astimezone(timezone.utc)
    seconds_into_day = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
    if period == "day":
        elapsed, length = seconds_into_day, 86400
    else:
        days = calendar.monthrange(now.year, now.month)[1]
        elapsed, length = (now.day - 1) * 86400 + seconds_into_day, days * 86400
    return max(Decimal(str(elapsed)) / length, Decimal("0.0001"))


def projected(spent: int, period: str, now: datetime) -> int:
    """Period-end spend at the current run rate."""
    return int(Decimal(spent) / period_fraction(period, now))


class Alerting:
    def __init__(self, thresholds: Callable[[], list[Decimal]]) -> None:
        self._thresholds = thresholds
        self._record: Callable = lambda record: None  # ledger.record
        self._send: Callable = lambda alert: None  # notifier.send
        self._claim: Callable | None = None
        self._tasks: set[asyncio.Task] = set()
        self.fired: set[str] = set()
        self._models: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        #: (scope, period key) -> (charges whose report could not be true, their nanos)
        self._implausible: dict[tuple[str, str], tuple[int, int]] = {}
        self._live: tuple[str, str] = ("", "")
        self.unpriced = UnpricedNotes(lambda notice: self._send(notice))

    def attach(self, record: Callable, send: Callable, claim: Callable | None = None) -> None:
        """`claim` (shared databases): an async insert that says whether *this*
        replica is the one to send the alert."""
        self._record, self._send, self._claim = record, send, claim

    def note_unpriced(self, model: str, tenant: str, now: datetime) -> None:
        """A call to a model without a price: said once a day per model (see `_unpriced`)."""
        self.unpriced.note(model, tenant, now)

    def seed(self, ids) -> None:
        self.fired.update(ids)

    def note_model(self, policy: Policy, now: datetime, model: str, nanos: int) -> None:
        """Per-scope model spend this period, for the alert's `top_models`."""
        if nanos <= 0:
            return
        self._note_period(now)
        for b in policy.budgets:
            spend = self._models[(b.scope, period_key(b.period, now))]
            spend[model] = spend.get(model, 0) + nanos

    def note_implausible(self, policy: Policy, now: datetime, nanos: int) -> None:
        """A charge whose usage report could not be true (charged at its reservation):
        counted per scope this period, for what the alert says."""
        self._note_period(now)
        for b in policy.budgets:
            n, total = self._implausible.get((b.scope, period_key(b.period, now)), (0, 0))
            self._implausible[(b.scope, period_key(b.period, now))] = (n + 1, total + nanos)

    def _note_period(self, now: datetime) -> None:
        live = period_keys(now)
        if self._live != live:  # a new period: drop what was noted for periods that are over
            self._live = live
            for key in [k for k in self._models if k[1] not in live]:
                del self._models[key]
            for key in [k for k in self._implausible if k[1] not in live]:
                del self._implausible[key]

    def on_spend(self, policy: Policy, budgets: Budgets, now: datetime) -> None:
        for limit, counter in budgets:
            if limit.limit_nanos <= 0:
                continue
            ratio = Decimal(counter.spent) / limit.limit_nanos
            for threshold in self._thresholds():
                if ratio < threshold:
                    break  # thresholds are sorted
                key = period_key(limit.period, now)
                aid = alert_id(limit.scope, limit.period, key, threshold)
                if aid in self.fired:
                    continue
                self.fired.add(aid)
                self._fire(aid, limit, counter, key, threshold, ratio, now)

    def _fire(self, aid, limit: BudgetLimit, counter: Counter, key: str, threshold: Decimal,
              ratio: Decimal, now: datetime) -> None:
        proj = projected(counter.spent, limit.period, now)
        top = sorted(self._models.get((limit.scope, key), {}).items(), key=lambda kv: -kv[1])
        alert = Alert(
            id=aid,
            scope=limit.scope,
            period=limit.period,
            period_start=key,
            threshold=threshold,
            level=level_for(threshold),
            limit_usd=limit.limit_usd,
            spent_usd=Decimal(counter.spent).scaleb(-9),
            used_ratio=ratio.quantize(Decimal("0.0001")),
            projected_usd=Decimal(proj).scaleb(-9),
            top_models=tuple((m, Decimal(n).scaleb(-9)) for m, n in top[:TOP_MODELS]),
            at=now,
            implausible=self._implausible.get((limit.scope, key), (0, 0))[0],
            implausible_usd=Decimal(
                self._implausible.get((limit.scope, key), (0, 0))[1]).scaleb(-9),
        )
        record = AlertRecord(
            id=aid, scope=limit.scope, period=limit.period, period_start=key,
            threshold=plain_decimal(threshold), level=alert.level,
            limit_nanos=limit.limit_nanos, spent_nanos=counter.spent, projected_nanos=proj,
            at=now,
        )
        # Pipelines know error/warning: a spent budget is an error, a threshold a warning.
        log.log(
            logging.ERROR if alert.level == "exceeded" else logging.WARNING,
            "budget threshold reached",
            extra={"alert_id": aid, "alert_level": alert.level, "spent_usd": str(alert.spent_usd),
                   "limit_usd": str(alert.limit_usd)},
        )
        if self._claim is not None:
            task = asyncio.ensure_future(self._claim_then_send(record, alert))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._record(record)
        self._send(alert)

    async def _claim_then_send(self, record: AlertRecord, alert: Alert) -> None:
        """Several replicas may cross the threshold: the one whose insert wins sends."""
        try:
            claimed = await self._claim(record)
        except Exception as exc:
            log.error("alert claim failed; sending anyway", extra={"error": str(exc)})
            claimed = True
        if claimed:
            self._send(alert)
