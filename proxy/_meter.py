"""Turn a finished `Flow` into a priced charge: ledger row and metrics.

The provider's own usage report is the source of truth. When it is missing
(stream cut short, a response format without usage), the charge is an
*estimate* from what faregate saw — flagged `estimated` in the ledger and
counted in `faregate_usage_problems_total` — never silently zero.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from decimal import Decimal

from faregate.pricing import (
    DEFAULT_TIERS,
    TOKEN_CLASSES,
    Charge,
    PriceTable,
    Usage,
    price,
    merge_tool_calls,
    to_nanos,
    token_counts,
    usage_for_endpoint,
    usage_from_images,
    usage_from_speech,
)
from faregate.storage import LedgerRecord

from ._flow import Flow
from ._identity import Caller
from ._metrics import Metrics

log = logging.getLogger("faregate.meter")

#: Rough bytes per token for estimates when no usage was reported.
BYTES_PER_TOKEN = 4


def usage_of(flow: Flow, table: PriceTable) -> tuple[Usage, str | None]:
    """The flow's usage and, if it had to be guessed, the reason why."""
    endpoint, facts = flow.endpoint, flow.facts
    assert endpoint is not None
    if flow.status >= 400 or flow.status == 0:
        return Usage(), None
    kind = endpoint.kind
    if kind == "speech":
        return usage_from_speech(facts.characters, flow.model or "", table, flow.usage), None
    if kind in ("moderations", "client_secret"):
        return Usage(), None
    if kind == "images":
        return (
            usage_from_images(flow.usage, facts.images, facts.image_size, facts.image_quality),
            None,
        )
    if flow.usage is not None:
        return usage_for_endpoint(kind, flow.usage, table=table), None
    reason = "cut_short" if flow.cut_short else "usage_missing"
    estimate = Usage(
        input=facts.prompt_bytes // BYTES_PER_TOKEN,
        output=flow.deltas,
        estimated=True,
        flags=(reason,),
    )
    return estimate, reason


def charge_flow(flow: Flow, table: PriceTable, at: datetime) -> tuple[Charge, str | None]:
    usage, problem = usage_of(flow, table)
    # A standard-tier answer ("default", "auto") prices as no tier: skip the copy.
    if (flow.service_tier and flow.service_tier not in DEFAULT_TIERS) or flow.tool_calls:
        usage = dataclasses.replace(usage, service_tier=flow.service_tier,
                                    tool_calls=merge_tool_calls(usage.tool_calls, flow.tool_calls))
    model = flow.model or "unknown"
    return price(usage, model, at, table), problem


def charge_record(
    charge: Charge, caller: Caller | None, *, model: str, endpoint: str, status: int,
    at: datetime, request_id: str, latency_ms: float = 0.0,
    session_id: str | None = None, response_id: str | None = None,
    markup: Decimal | None = None, tags: dict[str, str] | None = None,
) -> LedgerRecord:
    """The ledger row for one priced charge (REST call or session response).

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
    )


def ledger_record(flow: Flow, charge: Charge, at: datetime,
                  markup: Decimal | None = None) -> LedgerRecord:
    assert flow.endpoint is not None
    return charge_record(
        charge, flow.caller, model=flow.model or "unknown", endpoint=flow.endpoint.path,
        status=flow.status, at=at, request_id=flow.request_id,
        latency_ms=round(flow.elapsed_ms(), 3), markup=markup, tags=flow.tags,
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
    endpoint = flow.endpoint.path if flow.endpoint else "other"
    metrics.requests.labels(tenant, model_label(charge), endpoint, str(flow.status)).inc()
    if charge is not None:
        count_charge(metrics, tenant, charge, endpoint, problem)


def settle(flow: Flow, table: PriceTable, metrics: Metrics, record,
           markup: Decimal | None = None) -> Charge | None:
    """Price a finished flow, hand it to the ledger, count it. Never raises.

    Calls faregate refused itself (unknown key, too large, model refused)
    never reached the upstream and cost nothing: they are counted in metrics
    but not written to the ledger, so a flood of bad requests cannot grow it.
    """
    if flow.endpoint is None or not flow.forwarded:
        observe(metrics, flow, None, None)
        return None
    at = datetime.now(timezone.utc)
    try:
        charge, problem = charge_flow(flow, table, at)
    except Exception:  # a pricing bug must not lose the record
        log.exception("pricing failed", extra={"request_id": flow.request_id})
        charge = Charge(
            model=flow.model or "unknown", family=None, usage=Usage(estimated=True,
            flags=("pricing_error",)), cost=Decimal(0), priced=False,
        )
        problem = "pricing_error"
    record(ledger_record(flow, charge, at, markup))
    observe(metrics, flow, charge, problem)
    return charge
