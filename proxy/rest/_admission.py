"""May the call be forwarded: the admission steps of a metered REST call.

A call to a model faregate cannot price is refused where the operator asked
for that; every metered call then holds its worst-case cost (and its request,
image and token counts) against the caller's limits before it is forwarded.
Each step raises `Refused` with the DESIGN §5 answer. Calls that start a
Realtime session faregate will not see (minted keys, WebRTC/SIP calls) are
reserved for that session instead (`reserve_unseen`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..meter import (
    Flow,
    bound_secret_expiry,
    cost_nanos,
    session_reservation,
    unseen_session_seconds,
    worst_case,
)
from ..quota import Quota, Refusal, UnseenHolds
from ._intake import Body, Refused


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
    flow.admission = result


#: Endpoints that start Realtime sessions faregate will not meter.
UNSEEN_KINDS = frozenset({"client_secret", "realtime_call"})
CLIENT_SECRETS_PATH = "/v1/realtime/client_secrets"


async def reserve_unseen(flow: Flow, rt: Runtime, body: Body, quota: Quota,
                         holds: UnseenHolds) -> None:
    """A minted key or a WebRTC/SIP call: the tier/tenant must allow minting, a key's
    expiry is bounded, and the session it opens is reserved at its worst case
    (`max_session_seconds` at the model's per-second or audio rates) — unless
    the call comes with a minted key whose reservation already holds it."""
    assert flow.endpoint is not None and flow.caller is not None
    policy = rt.policy(flow.caller)
    now = datetime.now(timezone.utc)
    seconds = unseen_session_seconds(policy.max_session_seconds)
    amount = session_reservation(flow.facts.model, seconds, rt.prices, now)
    if flow.endpoint.kind == "client_secret":
        if not policy.mints_secrets:
            raise Refused(errors.openai_error(
                403, "invalid_request_error", "client_secrets_not_allowed",
                "Minting ephemeral Realtime keys is not allowed for this caller "
                "(client_secrets = \"deny\", or a USD limit without client_secrets = "
                "\"allow\").", request_id=flow.request_id))
        bounded = (bound_secret_expiry(body.parsed, policy.client_secret_ttl_s)
                   if flow.path.rstrip("/") == CLIENT_SECRETS_PATH else None)
        if bounded is not None:
            body.parsed, body.data, body.changed = bounded, orjson.dumps(bounded), True
    elif flow.secret_ref is not None and flow.secret_ref in holds:
        amount = 0  # the key's reservation moves to the call when it is created
    if quota.leasing:
        await quota.ensure(policy, amount, now)
    result = quota.admit(policy, amount, now, model=flow.facts.model,
                         shared=rt.settings.upstream_limits)
    if isinstance(result, Refusal):
        raise Refused(errors.refused(result, flow.request_id))
    flow.admission = result
