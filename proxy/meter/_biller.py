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

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Awaitable, Callable

from faregate.pricing import (
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
from ._endpoints import endpoint_label
from ._flow import Flow
from ._reading import Metered

log = logging.getLogger("faregate.meter")

#: The flag of a call to an endpoint faregate admits but cannot price.
NOT_PRICED = "endpoint_not_priced"


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
    images: int | None = None,
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
        images=u.images if images is None else images,
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
    if unpriced(charge) or (not charge.priced and NOT_PRICED in u.flags):
        metrics.unpriced.labels(tenant, metrics.unpriced_model(charge.model)).inc()
    if problem:
        metrics.usage_problems.labels(endpoint, problem).inc()
    for flag in u.flags:
        if flag != problem:
            metrics.usage_problems.labels(endpoint, flag).inc()


def unpriced(charge: Charge) -> bool:
    """Something was consumed and the model has no price: recorded at $0, said aloud."""
    return not charge.priced and not charge.usage.is_empty()


def observe(metrics: Metrics, flow: Flow, charge: Charge | None, problem: str | None) -> None:
    """Update the Prometheus counters for one finished call."""
    tenant = flow.caller.tenant if flow.caller else "default"
    endpoint = endpoint_label(flow.endpoint)
    metrics.requests.labels(tenant, model_label(charge), endpoint, str(flow.status)).inc()
    if charge is not None:
        count_charge(metrics, tenant, charge, endpoint, problem)


def images_made(usage: Usage) -> int:
    """Images a call made: the images endpoints' count plus every image the Responses
    `image_generation` tool made (image caps count both)."""
    return usage.images + sum(n for key, n in usage.tool_calls
                              if key.startswith("image_generation"))


def _unpriced(usage: Usage, model: str, table: PriceTable) -> Charge:
    """A billable call faregate has no price for: recorded at $0, flagged."""
    return Charge(model=model, family=None, usage=dataclasses.replace(
        usage, flags=tuple(dict.fromkeys(usage.flags + (NOT_PRICED,)))), cost=Decimal(0),
        price_version=table.version, priced=False)


def _priced(usage: Usage, model: str, at: datetime, table: PriceTable, context: str) -> Charge:
    try:
        return price(usage, model, at, table)
    except Exception:  # a pricing bug must not lose the record
        log.exception("pricing failed", extra={"request_id": context})
        return Charge(model=model, family=None, usage=Usage(estimated=True,
                      flags=("pricing_error",)), cost=Decimal(0), priced=False)


class Biller:
    def __init__(self, runtime: Callable[[], Runtime], record: Callable[[LedgerRecord], None],
                 metrics: Metrics, quota: Quota, alerting: Alerting) -> None:
        self._runtime = runtime
        self._record = record
        self.metrics = metrics
        self.quota = quota
        self.alerting = alerting

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
        if flow.endpoint.kind == "batch" or flow.hold_open:
            # A batch is recorded as a batch event and charged line by line; a pending
            # background response is charged (one row) when it is final.
            observe(self.metrics, flow, None, None)
            if not flow.hold_open:
                self._release(flow)
            return None
        rt = self._runtime()
        at = datetime.now(timezone.utc)
        try:
            usage, problem = call_usage(flow, rt.prices)
        except Exception:  # a usage-reading bug must not lose the record either
            log.exception("usage reading failed", extra={"request_id": flow.request_id})
            usage, problem = Usage(estimated=True, flags=("pricing_error",)), "pricing_error"
        model = flow.model or "unknown"
        if flow.endpoint.metered:
            charge = _priced(usage, model, at, rt.prices, flow.request_id)
        else:
            charge = _unpriced(usage, model, rt.prices)
        if charge.usage.flags == ("pricing_error",):
            problem = "pricing_error"
        elif flow.status >= 400 and usage.is_empty():
            charge.priced = True  # the upstream refused it: nothing to price, nothing unpriced
        markup = rt.markup(flow.caller.tenant) if flow.caller is not None else None
        images = images_made(charge.usage)
        self._record(charge_record(
            charge, flow.caller, model=model, endpoint=flow.endpoint.path, status=flow.status,
            at=at, request_id=flow.request_id, latency_ms=round(flow.elapsed_ms(), 3),
            response_id=flow.reading.response_id, markup=markup, tags=flow.tags,
            images=images))
        observe(self.metrics, flow, charge, problem)
        if unpriced(charge):
            self.alerting.note_unpriced(model, flow.caller.tenant if flow.caller else "default", at)
        admission = flow.admission
        if flow.status in (502, 504):  # the upstream never answered: nothing was spent
            self._release(flow)
        elif admission is not None:
            self.quota.count_images(admission.policy, admission, images, at)
            self._settle(admission.policy, admission, charge, at)
        return charge

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
        images = images_made(charge.usage)
        row.images = images
        if metered.record_id is not None:
            row.id = metered.record_id  # a deterministic id: a repeat is ignored
        self._record(row)
        if spend:
            count_charge(self.metrics, account.caller.tenant, charge, account.endpoint)
            if images:
                self.quota.count_images(policy, hold, images, at)
            self._settle(policy, hold, charge, at)
            if unpriced(charge):
                self.alerting.note_unpriced(model, account.caller.tenant, at)
        elif hold is not None:
            self.quota.release(hold)
        return row

    async def bill_from_provider(self, account: Account, *, model: str, nanos: int,
                                 at: datetime, record_id: str, response_id: str,
                                 policy: Policy | None,
                                 claim: Callable[[LedgerRecord], Awaitable[bool]],
                                 note: str = "") -> bool:
        """The provider's cost for traffic faregate could not meter, attributed to the
        session's creator by reconciliation: written as the provider billed it
        (flagged `from_provider`) through `claim` — an insert that says whether this
        process wrote it, so a charge found again (another replica, a restart, a
        re-run) is counted nowhere twice — then counted and spent against the
        creator's budgets (`policy`; None: recorded and counted only)."""
        caller = account.caller
        row = LedgerRecord(
            tenant=caller.tenant, user=caller.user, key_id=caller.key_id, model=model[:128],
            endpoint=account.endpoint, status=200, cost_nanos=nanos, id=record_id, ts=at,
            request_id=account.request_id, breakdown={"from_provider": nanos},
            price_version=f"provider:{note}" if note else "provider", flags=("from_provider",),
            session_id=account.session_id, response_id=response_id, tags=account.tags)
        if not await claim(row):
            return False
        if nanos > 0:  # Prometheus counters are floats; the ledger keeps the exact amount
            family = self._runtime().prices.resolve(model) or "unpriced"
            self.metrics.cost.labels(caller.tenant, family).inc(float(Decimal(nanos).scaleb(-9)))
        if policy is not None:
            self.quota.spend(policy, nanos, at)
            self.alerting.note_model(policy, at, model, nanos)
        return True

    def _settle(self, policy: Policy, hold: Admission | None, charge: Charge,
                at: datetime) -> None:
        if hold is not None:
            self.quota.settle(hold, charge.cost_nanos, at, charge.usage.total_tokens)
        else:
            self.quota.spend(policy, charge.cost_nanos, at)
        self.alerting.note_model(policy, at, charge.family or charge.model, charge.cost_nanos)
