"""May the call be forwarded: the admission steps of a metered REST call.

A call to a model faregate cannot price is refused where the operator asked
for that; every metered call then holds its reservation (and its request,
image and token counts) against the caller's limits before it is forwarded —
side by side while its worst case fits, one at a time near a limit (waiting
at most `[server] admission_wait_s`). With `clamp_output`, a call whose
output the budget cannot pay for is capped to what it can. Each step raises
`Refused` with the DESIGN §5 answer.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..meter import (
    Contexts,
    Estimate,
    Flow,
    affordable_output,
    cost_nanos,
    estimate,
    inject_include_usage,
    input_shape,
    with_output,
    worst_nanos,
)
from ..quota import Ask, Policy, Quota, Refusal
from ._intake import Body, Refused

#: `clamp_output` never caps an answer below this many tokens (it refuses instead).
MIN_OUTPUT_TOKENS = 16
#: The field faregate writes when a call set no output cap of its own.
DEFAULT_CAP_FIELD = {"chat": "max_completion_tokens", "completions": "max_tokens",
                     "responses": "max_output_tokens"}


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


def _limited(policy: Policy, rt: Runtime) -> bool:
    """Does anything the caller is subject to count money or tokens?"""
    shared = rt.settings.upstream_limits
    return bool(policy.budgets or policy.tpm or shared.tpm)


async def _estimate(flow: Flow, rt: Runtime, body: Body, quota: Quota, contexts: Contexts,
                    policy: Policy, now: datetime) -> tuple[Estimate, tuple | None]:
    """The call's estimate, looking at its input's shape when a limit depends on it."""
    assert flow.endpoint is not None and flow.caller is not None
    kind = flow.endpoint.kind
    shape = input_shape(kind, body.parsed) if kind in ("chat", "responses") else None
    if shape is not None:
        flow.conversation_id = shape.conversation
    if shape is None or not _limited(policy, rt):
        return estimate(flow.endpoint, flow.facts, body.parsed, table=rt.prices, at=now,
                        shape=shape, default_output=policy.default_max_output_tokens,
                        with_worst=bool(policy.budgets)), None
    hidden, known = 0, True
    if shape.previous_response_id or shape.conversation:
        hidden, known = await contexts.recall(flow.caller.tenant, shape.previous_response_id,
                                              shape.conversation)
    model = flow.facts.model or ""
    key = (flow.caller.tenant, rt.prices.resolve(model) or model[:64],
           bool(shape.unsized) or not known)
    est = estimate(flow.endpoint, flow.facts, body.parsed, table=rt.prices, at=now,
                   shape=shape, default_output=policy.default_max_output_tokens,
                   hidden_tokens=hidden, hidden_known=known, factor=quota.ratios.factor(key))
    return est, (key, est.raw_input, est.recorded)


async def _clamp(flow: Flow, rt: Runtime, body: Body, quota: Quota, policy: Policy,
                 est: Estimate, now: datetime) -> Estimate:
    """`clamp_output`: cap the answer at what the remaining budget buys."""
    assert flow.endpoint is not None
    model = flow.facts.model or ""
    if not isinstance(body.parsed, dict) or not model:
        return est
    await quota.prepare(policy, Ask(cost_nanos(est.usage, model, rt.prices, now)), now)
    room = quota.remaining(policy, now)
    if room is None:
        return est
    tokens = affordable_output(est, room, model, rt.prices, now)
    current = getattr(est.usage, est.output_class) // max(1, est.choices)
    if not MIN_OUTPUT_TOKENS <= tokens < current:
        return est
    field = est.cap_field or DEFAULT_CAP_FIELD[flow.endpoint.kind]
    capped = {**body.parsed, field: tokens}
    body.data = orjson.dumps(inject_include_usage(capped) if body.strip_usage else capped)
    body.parsed, body.changed = capped, True
    return with_output(est, tokens)


async def reserve(flow: Flow, rt: Runtime, body: Body, quota: Quota, contexts: Contexts
                  ) -> None:
    """Hold the call's reservation against its limits, or refuse it."""
    assert flow.endpoint is not None and flow.caller is not None
    policy = rt.policy(flow.caller)
    now = datetime.now(timezone.utc)
    est, learn = await _estimate(flow, rt, body, quota, contexts, policy, now)
    if policy.clamp_output and policy.budgets and policy.block and est.worst is not None:
        est = await _clamp(flow, rt, body, quota, policy, est, now)
    model = flow.facts.model
    amount = cost_nanos(est.usage, model, rt.prices, now)
    worst = (worst_nanos(est.worst, model, rt.prices, now)
             if est.worst is not None and policy.budgets and policy.block else None)
    images = flow.facts.images if flow.endpoint.kind == "images" else 0
    ask = Ask(amount, worst, model, images, est.tpm_tokens,
              shared=rt.settings.upstream_limits, learn=learn)
    result = await quota.reserve(policy, ask, now, rt.settings.server.admission_wait_s)
    if isinstance(result, Refusal):
        raise Refused(errors.refused(result, flow.request_id))
    flow.admission = result
