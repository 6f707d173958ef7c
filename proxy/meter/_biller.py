"""The biller: the one place a charge is priced, recorded, settled, counted and
noted for alerts.

REST calls (`bill_call`), Realtime/Live responses and batch output lines
(`bill`) all end here: `price()` from the table in force, one ledger row
(with the tenant's markup frozen into it), the Prometheus counters, the
budget hold swapped for the real amount (or spend without a hold), and the
model's spend noted for the alert's top models. A pricing bug never loses
the record: it is kept at $0, flagged `pricing_error`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from faregate.pricing import (
    INPUT_CLASSES,
    OUTPUT_CLASSES,
    TOKEN_CLASSES,
    Charge,
    PriceTable,
    Usage,
    price,
    to_nanos,
    token_counts,
)
from faregate.storage import LedgerRecord

from .._metrics import Metrics
from .._runtime import Runtime
from ..alerts import Alerting
from ..caller import Caller
from ..quota import Admission, Policy, Quota
from ._consumed import call_usage
from ._context import Contexts
from ._endpoints import endpoint_label
from ._flow import Flow
from ._reading import Metered

log = logging.getLogger("faregate.meter")


@dataclass(frozen=True, slots=True)
class Account:
    """Who a charge is for, and where it came from."""

    caller: Caller
    endpoint: str  # ledger/metric label
    request_id: str
    tags: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None


def charge_record(
    charge: Charge, caller: Caller | None, *, model: str, endpoint: str, status: int,
    at: datetime, request_id: str, latency_ms: float = 0.0,
    session_id: str | None = None, response_id: str | None = None,
    markup: Decimal | None = None, tags: dict[str, str] | None = None,
    conversation_id: str | None = None,
) -> LedgerRecord:
    """The ledger row for one priced charge (REST call, session response, batch line).

    With a tenant `markup`, the row also keeps what the tenant is billed,
    cost × (1 + markup), so later markup changes never rewrite history.
    """
    u = charge.usage
    return LedgerRecord(
        tenant=caller.tenant if caller else "default",
        user=caller.user if caller else None,
        key_id=caller.key_id if caller else None,
        model=model[:128],
        endpoint=endpoint,
        status=status,
        cost_nanos=charge.cost_nanos,
        ts=at,
        request_id=request_id,
        tokens=u.tokens(),
        reasoning_tokens=u.reasoning,
        seconds=u.seconds,
        characters=u.characters,
        images=u.images,
        breakdown={k: to_nanos(v) for k, v in charge.breakdown.items()},
        price_version=charge.price_version,
        priced=charge.priced,
        estimated=u.estimated,
        latency_ms=latency_ms,
        flags=u.flags,
        session_id=session_id,
        response_id=response_id,
        savings_nanos=charge.savings_nanos,
        billed_nanos=None if markup is None else to_nanos(charge.cost * (1 + markup)),
        tags=tags or {},
        conversation_id=conversation_id,
    )


def model_label(charge: Charge | None) -> str:
    if charge is None:
        return "none"
    return charge.family if charge.priced and charge.family else "unpriced"


def count_charge(metrics: Metrics, tenant: str, charge: Charge, endpoint: str,
                 problem: str | None = None) -> None:
    """Token, cost, seconds and problem counters for one charge."""
    model = model_label(charge)
    u = charge.usage
    for kind, n in zip(TOKEN_CLASSES, token_counts(u)):
        if n > 0:
            metrics.tokens.labels(tenant, model, kind).inc(n)
    if charge.cost > 0:
        # Prometheus counters are floats; the ledger keeps the exact amount.
        metrics.cost.labels(tenant, model).inc(float(charge.cost))
    if u.seconds > 0:
        metrics.billed_seconds.labels(tenant, model).inc(float(u.seconds))
    if not charge.priced and not u.is_empty():
        metrics.unpriced.labels(tenant, endpoint).inc()
    if problem:
        metrics.usage_problems.labels(endpoint, problem).inc()
    for flag in u.flags:
        if flag != problem:
            metrics.usage_problems.labels(endpoint, flag).inc()


def observe(metrics: Metrics, flow: Flow, charge: Charge | None, problem: str | None) -> None:
    """Update the Prometheus counters for one finished call."""
    tenant = flow.caller.tenant if flow.caller else "default"
    endpoint = endpoint_label(flow.endpoint)
    metrics.requests.labels(tenant, model_label(charge), endpoint, str(flow.status)).inc()
    if charge is not None:
        count_charge(metrics, tenant, charge, endpoint, problem)


def _priced(usage: Usage, model: str, at: datetime, table: PriceTable, context: str) -> Charge:
    try:
        return price(usage, model, at, table)
    except Exception:  # a pricing bug must not lose the record
        log.exception("pricing failed", extra={"request_id": context})
        return Charge(model=model, family=None, usage=Usage(estimated=True,
                      flags=("pricing_error",)), cost=Decimal(0), priced=False)


class Biller:
    def __init__(self, runtime: Callable[[], Runtime], record: Callable[[LedgerRecord], None],
                 metrics: Metrics, quota: Quota, alerting: Alerting,
                 contexts: Contexts | None = None) -> None:
        self._runtime = runtime
        self._record = record
        self.metrics = metrics
        self.quota = quota
        self.alerting = alerting
        self.contexts = contexts if contexts is not None else Contexts()

    def bill_call(self, flow: Flow) -> Charge | None:
        """A finished REST call, once: priced, recorded, counted, its hold settled.

        Calls faregate refused itself (unknown key, too large, model refused)
        never reached the upstream and cost nothing: they are counted in
        metrics but not written to the ledger, so a flood of bad requests
        cannot grow it.
        """
        if flow.billed:
            return None
        flow.billed = True
        if flow.endpoint is None or not flow.forwarded:
            observe(self.metrics, flow, None, None)
            self._release(flow)
            return None
        rt = self._runtime()
        at = datetime.now(timezone.utc)
        try:
            usage, problem = call_usage(flow)
        except Exception:  # a usage-reading bug must not lose the record either
            log.exception("usage reading failed", extra={"request_id": flow.request_id})
            usage, problem = Usage(estimated=True, flags=("pricing_error",)), "pricing_error"
        model = flow.model or "unknown"
        charge = _priced(usage, model, at, rt.prices, flow.request_id)
        if charge.usage.flags == ("pricing_error",):
            problem = "pricing_error"
        markup = rt.markup(flow.caller.tenant) if flow.caller is not None else None
        self._record(charge_record(
            charge, flow.caller, model=model, endpoint=flow.endpoint.path, status=flow.status,
            at=at, request_id=flow.request_id, latency_ms=round(flow.elapsed_ms(), 3),
            response_id=flow.reading.response_id, markup=markup, tags=flow.tags,
            conversation_id=flow.conversation_id))
        observe(self.metrics, flow, charge, problem)
        if flow.status in (502, 504):  # the upstream never answered: nothing was spent
            self._release(flow)
        elif flow.admission is not None:
            self._settle(flow.admission.policy, flow.admission, charge, at)
            self._remember(flow, charge.usage)
        return charge

    def _remember(self, flow: Flow, usage: Usage) -> None:
        """What this call teaches the next one's estimate: its real input, and what a
        call continuing it (`previous_response_id`, `conversation`) carries."""
        if flow.status >= 400 or usage.estimated:
            return
        inputs = sum(getattr(usage, c) for c in INPUT_CLASSES)
        assert flow.admission is not None
        self.quota.learn(flow.admission, inputs)
        response_id = flow.reading.response_id
        if flow.conversation_id or (response_id and flow.endpoint is not None
                                    and flow.endpoint.kind == "responses"):
            carried = inputs + sum(getattr(usage, c) for c in OUTPUT_CLASSES)
            self.contexts.note(flow.caller.tenant if flow.caller else "default", carried,
                               response_id if flow.endpoint.kind == "responses" else None,
                               flow.conversation_id)

    def _release(self, flow: Flow) -> None:
        if flow.admission is not None:
            self.quota.release(flow.admission, uncount=True)

    def bill(self, metered: Metered, account: Account, *, policy: Policy,
             hold: Admission | None = None, spend: bool = True) -> LedgerRecord:
        """One metered usage of a session or a batch file: priced, recorded and,
        with `spend`, counted and settled against `hold` (or spent unreserved)."""
        rt = self._runtime()
        at = datetime.now(timezone.utc)
        model = metered.model or "unknown"
        charge = _priced(metered.usage, model, at, rt.prices, account.request_id)
        row = charge_record(
            charge, account.caller, model=model, endpoint=account.endpoint, status=200, at=at,
            request_id=metered.request_id or account.request_id,
            session_id=account.session_id, response_id=metered.response_id,
            markup=rt.markup(account.caller.tenant), tags=account.tags)
        if metered.record_id is not None:
            row.id = metered.record_id  # a deterministic id: a repeat is ignored
        self._record(row)
        if spend:
            count_charge(self.metrics, account.caller.tenant, charge, account.endpoint)
            self._settle(policy, hold, charge, at)
        elif hold is not None:
            self.quota.release(hold)
        return row

    def _settle(self, policy: Policy, hold: Admission | None, charge: Charge,
                at: datetime) -> None:
        if hold is not None:
            self.quota.settle(hold, charge.cost_nanos, at, charge.usage.total_tokens)
        else:
            self.quota.spend(policy, charge.cost_nanos, at)
        self.alerting.note_model(policy, at, charge.family or charge.model, charge.cost_nanos)
