"""Budgets inside a Responses WebSocket: each response is admitted like a REST call.

A `response.create` event is the body of a `POST /v1/responses`, so it gets
that call's admission: the model allowlist, the `unknown_model` rule, and
its reservation and worst case (`meter.estimate`, at the dearest rates the
caller may use when the model cannot be priced) held against the budgets,
request caps and rate limits — waiting its turn near a limit like a REST
call. A `response.steer` may start a successor response: it is held like a
create with the last create's settings. A refusal that waiting can cure (a rate
limit, the budget's one-at-a-time turn) answers that create with an `error`
event and keeps the session; any other ends it with the DESIGN §5 error
event and close 1008. The hold of each response is settled
by its terminal event (`Session.charge`, in order).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from faregate.pricing import Usage

from .._ids import new_event_id
from .._runtime import Runtime
from ..meter import classify, estimate, estimate_nanos, facts_from_json, sizing
from ..quota import (
    Admission,
    Ask,
    Cut,
    Policy,
    Quota,
    Refusal,
    Verdict,
    budget_cut,
    model_cut,
    notice,
    unpriced_cut,
)

RESPONSES = classify("POST", "/v1/responses")
#: Settings a steered successor inherits from the create before it.
_INHERITED = ("model", "max_output_tokens", "tools", "reasoning", "service_tier")


def refusal_cut(refusal: Refusal) -> Cut:
    """The session-ending error event of a refused response."""
    if refusal.reason == "budget":
        return budget_cut(refusal)
    return Cut(refusal.code, "error", refusal.message, refusal.type, reason=refusal.reason)


class ResponsesSocketQuota:
    """The money side of one Responses WebSocket's client events (the `SessionQuota`
    protocol a `Session` drives)."""

    def __init__(self, quota: Quota, policy: Policy, runtime: Runtime) -> None:
        self.quota = quota
        self.policy = policy
        self.rt = runtime
        self.holds: list[Admission] = []
        self.on_hold: Callable[[Admission], None] | None = None
        self._last: dict[str, Any] = {}

    @property
    def model(self) -> str | None:
        """The model the latest `response.create` named (a reserved response's marker)."""
        model = self._last.get("model")
        return model if isinstance(model, str) else None

    async def client_event(self, kind: str | None, event: dict[str, Any] | None,
                           frame: str | bytes, state: Any = None, inline: Any = None
                           ) -> Verdict:
        """What to do with one parsed client event."""
        if event is None or kind not in ("response.create", "response.steer"):
            return Verdict(frame)  # type: ignore[arg-type]
        if kind == "response.create":
            self._last = {k: event[k] for k in _INHERITED if k in event}
            body = event
        else:
            body = {**self._last, "input": event.get("input")}
        refused = await self._admit(body, len(frame))
        if refused is None:
            return Verdict(frame)  # type: ignore[arg-type]
        if isinstance(refused, Refusal):  # retryable: the session goes on
            return Verdict(None, reply=notice(refused, new_event_id()))
        return Verdict(None, refused)

    async def _admit(self, body: dict[str, Any], size: int) -> Cut | Refusal | None:
        """None once the response is held; else the cut that ends the session, or the
        retryable refusal of this one create."""
        assert RESPONSES is not None
        policy, prices = self.policy, self.rt.prices
        now = datetime.now(timezone.utc)
        facts = facts_from_json(RESPONSES, body, size)
        model = facts.model
        if model is not None and not policy.allows(model):
            return model_cut(model)
        priced = model is not None and prices.entry(model, now) is not None
        if model is not None and not priced and policy.unknown_model == "reject":
            return unpriced_cut(model)
        budgeted = bool(policy.budgets) and policy.block
        est = estimate(RESPONSES, facts, body, table=prices, at=now,
                       default_output=policy.default_max_output_tokens, with_worst=budgeted)
        rated = model if priced else None
        amount, worst = estimate_nanos(est, rated, prices, now, policy.models, budgeted)
        ask = Ask(max(1, amount), worst, model, int(facts.image_tool), est.tpm_tokens,
                  shared=self.rt.settings.upstream_limits,
                  sizing=sizing(est, rated, prices, now, policy.models,
                                "max_output_tokens", "response"))
        result = await self.quota.reserve(policy, ask, now,
                                          self.rt.settings.server.admission_wait_s)
        if isinstance(result, Refusal):
            return result if "retry-after" in result.headers else refusal_cut(result)
        result.reserved_usage = est.usage
        self.holds.append(result)
        if self.on_hold is not None:
            self.on_hold(result)
        return None

    async def response_started(self, rid: str, state: Any) -> tuple[list[str], Cut | None]:
        return [], None  # every response here was asked for (and held) by the client

    async def next_turn(self, state: Any) -> tuple[list[str], Cut | None]:
        return [], None  # the server starts no response of its own

    def take_hold(self, rid: str | None = None) -> Admission | None:
        """The reservation a finished response settles: the oldest, in order."""
        return self.holds.pop(0) if self.holds else None

    def after_charge(self, usage: Usage, input_nanos: int, hold: Admission | None,
                     in_conversation: bool) -> Cut | None:
        """A response was charged: cut if a budget is now spent (its holds carry no
        learned ratio: creates here are sized from their visible input alone)."""
        refusal = self.quota.exhausted(self.policy, datetime.now(timezone.utc))
        return budget_cut(refusal) if refusal is not None else None

    def release_all(self) -> None:
        while self.holds:
            self.quota.release(self.holds.pop(0))
