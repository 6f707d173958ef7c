"""Budget enforcement inside a Realtime/Live session.

Each client `response.create` is admitted like a REST call: its worst case
(conversation so far as input, its `max_output_tokens` as output, at the
dearest classes) is held against the budgets. If the budget cannot pay for
that, the request is *clamped* — `max_output_tokens` rewritten to what the
remaining money buys — or, if not even `MIN_RESPONSE_TOKENS` fit, refused.
When spend reaches a limit, or the session outlives `max_session_seconds`,
the session is cut: an error event, then close 1008 once the in-flight
response has settled. `session.update` frames naming a model outside the
allowlist cut the session too. Opt-in `degrade_to_text_at` forces text-only
output once that share of the budget is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from faregate.pricing import OUTPUT_CLASSES

from ._policy import Policy
from ._quota import Admission, Quota, Refusal, budget_refusal
from ._reserve import per_token_nanos
from ._session_meter import frame_type, parse

MIN_RESPONSE_TOKENS = 16
INPUT_OVERHEAD_TOKENS = 256
AUDIO_TOKENS_PER_BYTE = 10 / 48_000  # ~10 tokens per second of 24 kHz PCM16


@dataclass(frozen=True, slots=True)
class Cut:
    """Why faregate ends a session: the error event's code and the end reason."""

    code: str  # budget_exceeded | session_time_limit | model_not_allowed | tool_call_limit
    end_reason: str  # budget_exceeded | time_limit | error
    message: str
    type: str = "invalid_request_error"

    def event(self, event_id: str) -> str:
        return orjson.dumps({
            "type": "error", "event_id": event_id,
            "error": {"type": self.type, "code": self.code, "message": self.message,
                      "param": None, "event_id": None},
        }).decode()


def budget_cut(refusal: Refusal) -> Cut:
    return Cut("budget_exceeded", "budget_exceeded", refusal.message, "insufficient_quota")


def time_cut(seconds: int) -> Cut:
    return Cut("session_time_limit", "time_limit",
               f"This session reached its limit of {seconds} seconds.")


def model_cut(model: str) -> Cut:
    return Cut("model_not_allowed", "error", f"The model {model!r} is not allowed here.")


def tool_cut(cap: int) -> Cut:
    return Cut("tool_call_limit", "tool_call_limit",
               f"This session reached its limit of {cap} tool calls.")


def _max_output(event: dict, default: int) -> int:
    response = event.get("response") if isinstance(event.get("response"), dict) else {}
    for value in (response.get("max_output_tokens"), response.get("max_response_output_tokens")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


class SessionQuota:
    """The money side of one session's client frames."""

    def __init__(self, quota: Quota, policy: Policy, prices, model: str | None):
        self.quota = quota
        self.policy = policy
        self.prices = prices
        self.model = model
        self.holds: list[Admission] = []
        self.last_input_nanos = 0  # what the previous response's input cost
        self.last_input_tokens = 0
        self.session_max_output: int | None = None

    def rates(self, now: datetime) -> tuple[Any, Any, Any]:
        """Nano-USD per token: text input, audio input, dearest output."""
        model = self.model or ""
        text = per_token_nanos(self.prices, model, "input", now)
        audio = per_token_nanos(self.prices, model, "audio_input", now) or text
        rout = max(per_token_nanos(self.prices, model, c, now) for c in OUTPUT_CLASSES)
        return text, audio, rout

    def client_frame(self, frame: str, audio_in_bytes: int, tool_calls: int = 0
                     ) -> tuple[str | None, Cut | None]:
        """(frame to forward or None, cut) for one client text frame."""
        t = frame_type(frame)
        if t == "session.update" or t == "session.start":
            event = parse(frame) or {}
            session = event.get("session") if isinstance(event.get("session"), dict) else {}
            model = session.get("model")
            if isinstance(model, str) and not self.policy.allows(model):
                return None, model_cut(model)
            if isinstance(model, str):
                self.model = model
            cap = session.get("max_output_tokens") or session.get("max_response_output_tokens")
            if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
                self.session_max_output = cap
            return frame, None
        if t == "response.create":
            cap = self.policy.max_tool_calls_per_session
            if cap is not None and tool_calls >= cap:
                return None, tool_cut(cap)
            return self._response_create(frame, audio_in_bytes)
        return frame, None

    def _response_create(self, frame: str, audio_in_bytes: int) -> tuple[str | None, Cut | None]:
        event = parse(frame)
        if event is None:
            return frame, None  # the upstream answers malformed events itself
        now = datetime.now(timezone.utc)
        policy = self.policy
        default = self.session_max_output or policy.default_max_output_tokens
        out_tokens = _max_output(event, default)
        # Input: the conversation so far (what the last response's input cost),
        # the audio appended since, and an allowance for the new turn's text.
        audio_tokens = int(audio_in_bytes * AUDIO_TOKENS_PER_BYTE)
        in_tokens = self.last_input_tokens + INPUT_OVERHEAD_TOKENS + audio_tokens
        text_rate, audio_rate, rout = self.rates(now)
        in_cost = int(self.last_input_nanos + INPUT_OVERHEAD_TOKENS * text_rate
                      + audio_tokens * audio_rate)
        amount = in_cost + int(out_tokens * rout)
        changed = False
        remaining = self.quota.remaining(policy, now)
        if remaining is not None and policy.block and amount > remaining and rout > 0:
            affordable = int((remaining - in_cost) / rout)
            if affordable < MIN_RESPONSE_TOKENS:
                counters = self.quota.budget_counters(policy, now)
                limit, counter = min(counters, key=lambda bc: bc[0].limit_nanos - bc[1].used())
                return None, budget_cut(budget_refusal(limit, counter.used()))
            out_tokens = affordable
            amount = in_cost + int(out_tokens * rout)
            event.setdefault("response", {})["max_output_tokens"] = out_tokens
            changed = True
        if policy.degrade_to_text_at is not None and (
            self.quota.used_ratio(policy, now) >= policy.degrade_to_text_at
        ):
            event.setdefault("response", {})["output_modalities"] = ["text"]
            changed = True
        result = self.quota.admit(policy, amount, now, tpm_tokens=in_tokens + out_tokens,
                                  count_request=False)
        if isinstance(result, Refusal):
            return None, budget_cut(result)
        self.holds.append(result)
        return (orjson.dumps(event).decode() if changed else frame), None

    def settle(self, cost_nanos: int, tokens: int, input_tokens: int | None,
               input_nanos: int = 0) -> Cut | None:
        """A response was charged: settle its hold; cut if a budget is now spent."""
        now = datetime.now(timezone.utc)
        if input_tokens is not None:
            self.last_input_tokens = input_tokens
            self.last_input_nanos = input_nanos
        if self.holds:
            self.quota.settle(self.holds.pop(0), cost_nanos, now, tokens)
        else:
            self.quota.spend(self.policy, cost_nanos, now)  # server-created (VAD) or Live
        exhausted = self.quota.exhausted(self.policy, now)
        if exhausted is not None:
            counter = self.quota.book.counter(exhausted.scope, exhausted.period, now)
            return budget_cut(budget_refusal(exhausted, counter.used()))
        return None

    def release_all(self) -> None:
        while self.holds:
            self.quota.release(self.holds.pop(0))
