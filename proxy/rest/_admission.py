"""May the call be forwarded: the admission steps of a metered REST call.

A metered call is refused while the ledger cannot keep its charge, where
`[storage] on_ledger_failure` says so. A call to a model faregate cannot
price is refused where the operator asked for that; every metered call then
holds its worst-case cost (and its request, image and token counts) against
the caller's limits before it is forwarded.
Each step raises `Refused` with the DESIGN §5 answer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..meter import Biller, Flow, cost_nanos, worst_case
from ..quota import Quota, Refusal
from ._intake import Refused


def check_ledger(flow: Flow, rt: Runtime, biller: Biller) -> None:
    """`[storage] on_ledger_failure`: while neither the journal nor the database can take
    a charge, a metered call is refused (503 `ledger_unavailable`) — or served."""
    if flow.endpoint is None or biller.accepting():
        return
    assert flow.caller is not None
    if rt.refuses_without_ledger(rt.policy(flow.caller)):
        raise Refused(errors.ledger_unavailable(flow.request_id))


def check_priced(flow: Flow, rt: Runtime, metrics: Metrics) -> None:
    """`[pricing] unknown_model = "reject"`: a model with no price is not forwarded."""
    model = flow.facts.model
    if (rt.settings.pricing.unknown_model != "reject" or model is None
            or rt.prices.entry(model, None) is not None):
        return
    assert flow.caller is not None
    metrics.quota_rejections.labels(flow.caller.tenant, "model").inc()
    raise Refused(errors.model_not_allowed(
        f"The model {model!r} has no price in faregate and unknown models are refused "
        "here; add [pricing.models] for it.", flow.request_id))


async def reserve(flow: Flow, rt: Runtime, parsed: Any, quota: Quota) -> None:
    """Hold the call's worst-case cost against its budgets, or refuse it."""
    assert flow.endpoint is not None and flow.caller is not None
    policy = rt.policy(flow.caller)
    now = datetime.now(timezone.utc)
    usage, tpm_tokens = worst_case(flow.endpoint, flow.facts, parsed,
                                   policy.default_max_output_tokens, rt.prices, now)
    amount = cost_nanos(usage, flow.facts.model, rt.prices, now)
    images = flow.facts.images if flow.endpoint.kind == "images" else 0
    if quota.leasing:
        await quota.ensure(policy, amount, now)
    result = quota.admit(policy, amount, now, model=flow.facts.model, images=images,
                         tpm_tokens=tpm_tokens, shared=rt.settings.upstream_limits)
    if isinstance(result, Refusal):
        raise Refused(errors.refused(result, flow.request_id))
    result.worst = usage  # what a usage report that cannot be true is charged instead
    flow.admission = result
