"""What one charge is: its ledger row, its counters, priced or not.

Pure functions the `Biller` composes: `charge_record` (the ledger row, with
the tenant's markup frozen into it), `count_charge` / `observe` (the
Prometheus counters), and the two ways a usage becomes a `Charge` — priced
from the table (a pricing bug keeps the record at $0, flagged
`pricing_error`) or recorded at $0 as `endpoint_not_priced`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from faregate.pricing import TOKEN_CLASSES, Charge, PriceTable, Usage, price, to_nanos, token_counts
from faregate.storage import LedgerRecord

from .._metrics import Metrics
from ..caller import Caller
from ._endpoints import endpoint_label
from ._flow import Flow

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
    record_id: str | None = None,
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
        **({"id": record_id} if record_id else {}),
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


def unpriced_charge(usage: Usage, model: str, table: PriceTable) -> Charge:
    """A billable call faregate has no price for: recorded at $0, flagged."""
    return Charge(model=model, family=None, usage=dataclasses.replace(
        usage, flags=tuple(dict.fromkeys(usage.flags + (NOT_PRICED,)))), cost=Decimal(0),
        price_version=table.version, priced=False)


def priced_charge(usage: Usage, model: str, at: datetime, table: PriceTable, context: str) -> Charge:
    try:
        return price(usage, model, at, table)
    except Exception:  # a pricing bug must not lose the record
        log.exception("pricing failed", extra={"request_id": context})
        return Charge(model=model, family=None, usage=Usage(estimated=True,
                      flags=("pricing_error",)), cost=Decimal(0), priced=False)
