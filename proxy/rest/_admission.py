"""May the call be forwarded: the admission steps of a REST call.

A metered call is refused while the ledger cannot keep its charge, where
`[storage] on_ledger_failure` says so. Money is default-deny
(`meter._endpoints`): a metered call holds its worst case against the
caller's limits; a billable call that faregate cannot price is admitted
only while the caller's budgets are not spent. Before either, a tier's
`endpoints` allowlist and its `unknown_model` rule apply. Each step raises
`Refused` with the DESIGN §5 answer. Calls that start a Realtime session
faregate will not see (minted keys, WebRTC/SIP calls) are reserved for that
session instead (`reserve_unseen`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..meter import (
    Biller,
    Flow,
    bound_secret_expiry,
    cost_nanos,
    dearest_nanos,
    session_reservation,
    unseen_session_seconds,
    worst_case,
)
from ..quota import Policy, Quota, Refusal, UnseenHolds, model_refusal
from ._intake import Body, Refused
from ._prompts import PromptModels

#: Usage shapes that cost nothing whatever the model (no price is needed).
_FREE_KINDS = frozenset({"moderations", "client_secret"})
#: Endpoints that start Realtime sessions faregate will not meter.
UNSEEN_KINDS = frozenset({"client_secret", "realtime_call"})
CLIENT_SECRETS_PATH = "/v1/realtime/client_secrets"


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


async def reserve(flow: Flow, rt: Runtime, parsed: Any, quota: Quota, policy: Policy,
                  prompts: PromptModels, priced: bool) -> None:
    """Hold the call's worst-case cost against its budgets, or refuse it.

    A model the table cannot price, or none at all (a stored prompt, whose model is
    known only from the answer), is reserved at the dearest rates of the models the
    caller may use. The estimate is `meter.worst_case` (the seam for better estimates
    of hidden input).
    """
    assert flow.endpoint is not None
    now = datetime.now(timezone.utc)
    facts = flow.facts
    model = facts.model
    if model is None and facts.prompt_id is not None:
        known = prompts.model(facts.prompt_id)
        if known is not None and not policy.allows(known):
            raise Refused(errors.refused(model_refusal(known), flow.request_id))
    usage, tpm_tokens = worst_case(flow.endpoint, facts, parsed,
                                   policy.default_max_output_tokens, rt.prices, now)
    if flow.endpoint.kind in _FREE_KINDS:
        amount = 0
    elif priced:  # `check_priced` found the model in the table
        amount = cost_nanos(usage, model, rt.prices, now)
    else:
        amount = dearest_nanos(usage, rt.prices, now, policy.models)
    if flow.endpoint.kind not in _FREE_KINDS:
        amount = max(amount, 1)  # a spent budget refuses every call that may cost money
    kind = flow.endpoint.kind
    images = facts.images if kind == "images" else int(facts.image_tool)
    await _hold(flow, rt, quota, policy, amount, now, images=images, tpm_tokens=tpm_tokens)
    flow.reserved = usage
    if flow.admission is not None:
        flow.admission.worst = usage  # what a usage report that cannot be true is charged


async def admit_billable(flow: Flow, rt: Runtime, quota: Quota, policy: Policy) -> None:
    """A call faregate cannot price is admitted only while no budget of the caller is
    spent (one nano-dollar must fit); it counts as a request."""
    await _hold(flow, rt, quota, policy, 1, datetime.now(timezone.utc))


async def _hold(flow: Flow, rt: Runtime, quota: Quota, policy: Policy, amount: int,
                now: datetime, images: int = 0, tpm_tokens: int = 0) -> None:
    if quota.leasing:
        await quota.ensure(policy, amount, now)
    result = quota.admit(policy, amount, now, model=flow.facts.model, images=images,
                         tpm_tokens=tpm_tokens, shared=rt.settings.upstream_limits)
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
    await _hold(flow, rt, quota, policy, amount, now)
