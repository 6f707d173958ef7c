"""May the call be forwarded: the admission steps of a REST call.

A metered call is refused while the ledger cannot keep its charge, where
`[storage] on_ledger_failure` says so. Money is default-deny
(`meter._endpoints`): before anything is forwarded, a tier's `endpoints`
allowlist and its `unknown_model` rule apply; every metered call then holds
its reservation (and its request, image and token counts) against the
caller's limits — side by side while its worst case fits, one at a time near
a limit (waiting at most `[server] admission_wait_s`). A model the table
cannot price (or none: a stored prompt) is reserved at the dearest rates the
caller may use; a billable call faregate cannot price is admitted only while
the caller's budgets are not spent. With `clamp_output`, a call whose output
the budget cannot pay for is capped to what it can. Calls that start a
Realtime session faregate will not see (minted keys, WebRTC/SIP calls) are
reserved for that session instead (`reserve_unseen`). Each step raises
`Refused` with the DESIGN §5 answer.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..meter import (
    Biller,
    Contexts,
    Estimate,
    Flow,
    affordable_output,
    bound_secret_expiry,
    cost_nanos,
    estimate,
    estimate_nanos,
    inject_include_usage,
    input_shape,
    session_reservation,
    sizing,
    unseen_session_seconds,
    with_output,
)
from ..quota import Ask, Policy, Quota, Refusal, UnseenHolds, model_refusal
from ._intake import Body, Refused
from ._prompts import PromptModels

#: Usage shapes that cost nothing whatever the model (no price is needed).
_FREE_KINDS = frozenset({"moderations", "client_secret"})
#: Endpoints that start Realtime sessions faregate will not meter.
UNSEEN_KINDS = frozenset({"client_secret", "realtime_call"})
CLIENT_SECRETS_PATH = "/v1/realtime/client_secrets"
#: `clamp_output` never caps an answer below this many tokens (it refuses instead).
MIN_OUTPUT_TOKENS = 16
#: The field faregate writes when a call set no output cap of its own.
DEFAULT_CAP_FIELD = {"chat": "max_completion_tokens", "completions": "max_tokens",
                     "responses": "max_output_tokens"}


def check_ledger(flow: Flow, rt: Runtime, biller: Biller) -> None:
    """`[storage] on_ledger_failure`: while neither the journal nor the database can take
    a charge, a metered call is refused (503 `ledger_unavailable`) — or served."""
    if flow.endpoint is None or biller.accepting():
        return
    assert flow.caller is not None
    if rt.refuses_without_ledger(rt.policy(flow.caller)):
        raise Refused(errors.ledger_unavailable(flow.request_id))


def check_endpoint(flow: Flow, policy: Policy, metrics: Metrics) -> None:
    """A tier's or tenant's `endpoints` allowlist (path prefixes)."""
    if policy.allows_path(flow.path):
        return
    metrics.quota_rejections.labels(policy.tenant, "endpoint").inc()
    raise Refused(errors.endpoint_not_allowed(flow.path, flow.request_id))


def check_priced(flow: Flow, rt: Runtime, policy: Policy, metrics: Metrics) -> bool:
    """Can the call's model be priced? One that cannot is refused (403
    `model_not_priced`) for callers with a USD limit, unless their tier or tenant says
    `unknown_model = "record"`; `[pricing] unknown_model = "reject"` refuses it for
    everyone."""
    model = flow.facts.model
    assert flow.endpoint is not None
    if model is None or flow.endpoint.kind in _FREE_KINDS or flow.endpoint.kind in UNSEEN_KINDS:
        return False
    if rt.prices.entry(model, None) is not None:
        return True
    if policy.unknown_model == "record":
        return False
    metrics.quota_rejections.labels(policy.tenant, "model").inc()
    raise Refused(errors.model_not_priced(model, flow.request_id))


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


async def reserve(flow: Flow, rt: Runtime, body: Body, quota: Quota, policy: Policy,
                  contexts: Contexts, prompts: PromptModels, priced: bool) -> None:
    """Hold the call's reservation against its limits, or refuse it.

    A model the table cannot price, or none at all (a stored prompt, whose model is
    known only from the answer), is reserved at the dearest rates of the models the
    caller may use.
    """
    assert flow.endpoint is not None and flow.caller is not None
    now = datetime.now(timezone.utc)
    facts, kind = flow.facts, flow.endpoint.kind
    model = facts.model
    if model is None and facts.prompt_id is not None:
        known = prompts.model(facts.prompt_id)
        if known is not None and not policy.allows(known):
            raise Refused(errors.refused(model_refusal(known), flow.request_id))
    est, learn = await _estimate(flow, rt, body, quota, contexts, policy, now)
    budgeted = bool(policy.budgets) and policy.block and est.worst is not None
    if priced and policy.clamp_output and budgeted:
        est = await _clamp(flow, rt, body, quota, policy, est, now)
    rated = model if priced else None  # `check_priced` found it in the table
    if kind in _FREE_KINDS:
        amount, worst = 0, None
    else:
        amount, worst = estimate_nanos(est, rated, rt.prices, now, policy.models, budgeted)
        amount = max(amount, 1)  # a spent budget refuses every call that may cost money
    images = facts.images if kind == "images" else int(facts.image_tool)
    words = (sizing(est, rated, rt.prices, now, policy.models,
                    est.cap_field or DEFAULT_CAP_FIELD.get(kind))
             if policy.budgets and policy.block else None)  # what a refusal says
    await _hold(flow, rt, quota, policy, Ask(amount, worst, model, images, est.tpm_tokens,
                                             shared=rt.settings.upstream_limits, learn=learn,
                                             sizing=words))
    flow.reserved = est.usage
    assert flow.admission is not None
    flow.admission.reserved_usage = est.usage  # what a report that cannot be true is charged


async def admit_billable(flow: Flow, rt: Runtime, quota: Quota, policy: Policy) -> None:
    """A call faregate cannot price is admitted only while no budget of the caller is
    spent (one nano-dollar must fit); it counts as a request."""
    await _hold(flow, rt, quota, policy, Ask(1, model=flow.facts.model,
                                             shared=rt.settings.upstream_limits))


async def _hold(flow: Flow, rt: Runtime, quota: Quota, policy: Policy, ask: Ask) -> None:
    result = await quota.reserve(policy, ask, datetime.now(timezone.utc),
                                 rt.settings.server.admission_wait_s)
    if isinstance(result, Refusal):
        raise Refused(errors.refused(result, flow.request_id))
    flow.admission = result


async def reserve_unseen(flow: Flow, rt: Runtime, body: Body, quota: Quota, policy: Policy,
                         holds: UnseenHolds) -> None:
    """A minted key or a WebRTC/SIP call: the tier/tenant must allow minting, a key's
    expiry is bounded, and the session it opens is reserved at its worst case
    (`max_session_seconds` at the model's per-second or audio rates) — unless
    the call comes with a minted key whose reservation already holds it."""
    assert flow.endpoint is not None
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
                   if flow.path == CLIENT_SECRETS_PATH else None)
        if bounded is not None:
            body.parsed, body.data, body.changed = bounded, orjson.dumps(bounded), True
    elif flow.secret_ref is not None and flow.secret_ref in holds:
        amount = 0  # the key's reservation moves to the call when it is created
    await _hold(flow, rt, quota, policy, Ask(amount, model=flow.facts.model, wait=False,
                                             shared=rt.settings.upstream_limits))
