"""Budgets inside a Responses WebSocket: each response is admitted like a REST call.

A `response.create` event is the body of a `POST /v1/responses`, so it gets
that call's admission: the model allowlist, the `unknown_model` rule, and
its worst case (`meter.worst_case`, at the dearest rate the caller may use
when the model cannot be priced) held against the budgets, request caps and
rate limits. A `response.steer` may start a successor response: it is held
like a create with the last create's settings. A refusal ends the session
with the DESIGN §5 error event and close 1008. The hold of each response is
settled by its terminal event (`Session.charge`, in order).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .._runtime import Runtime
from ..meter import classify, cost_nanos, dearest_nanos, facts_from_json, worst_case
from ..quota import (
    Admission,
    Cut,
    Policy,
    Quota,
    Refusal,
    budget_cut,
    model_cut,
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
    """The money side of one Responses WebSocket's client events."""

    def __init__(self, quota: Quota, policy: Policy, runtime: Runtime) -> None:
        self.quota = quota
        self.policy = policy
        self.rt = runtime
        self.holds: list[Admission] = []
        self._last: dict[str, Any] = {}

    @property
    def model(self) -> str | None:
        """The model the latest `response.create` named (a reserved response's marker)."""
        model = self._last.get("model")
        return model if isinstance(model, str) else None

    async def prepare(self, kind: str | None) -> None:
        if kind in ("response.create", "response.steer") and self.quota.leasing:
            await self.quota.ensure(self.policy, 0, datetime.now(timezone.utc))

    def client_event(self, kind: str | None, event: dict[str, Any] | None, frame: str | bytes,
                     audio_in_bytes: int = 0, tool_calls: int = 0
                     ) -> tuple[str | bytes | None, Cut | None]:
        """(frame to forward or None, cut) for one parsed client event."""
        if event is None or kind not in ("response.create", "response.steer"):
            return frame, None
        if kind == "response.create":
            self._last = {k: event[k] for k in _INHERITED if k in event}
            body = event
        else:
            body = {**self._last, "input": event.get("input")}
        cut = self._admit(body, len(frame))
        return (None, cut) if cut is not None else (frame, None)

    def _admit(self, body: dict[str, Any], size: int) -> Cut | None:
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
        usage, tpm = worst_case(RESPONSES, facts, body, policy.default_max_output_tokens,
                                prices, now)
        amount = max(1, cost_nanos(usage, model, prices, now) if priced
                     else dearest_nanos(usage, prices, now, policy.models))
        result = self.quota.admit(policy, amount, now, model=model, images=int(facts.image_tool),
                                  tpm_tokens=tpm, shared=self.rt.settings.upstream_limits)
        if isinstance(result, Refusal):
            return refusal_cut(result)
        self.holds.append(result)
        return None

    def take_hold(self) -> Admission | None:
        return self.holds.pop(0) if self.holds else None

    def after_charge(self, input_tokens: int | None, input_nanos: int) -> Cut | None:
        refusal = self.quota.exhausted(self.policy, datetime.now(timezone.utc))
        return budget_cut(refusal) if refusal is not None else None

    def release_all(self) -> None:
        while self.holds:
            self.quota.release(self.holds.pop(0))
