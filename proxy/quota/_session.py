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

Client events arrive already parsed (type and object): nothing here reads
a frame's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson

from faregate.pricing import OUTPUT_CLASSES, PriceTable, Usage

from ._policy import Policy
from ._quota import Admission, Quota
from ._refusals import Refusal, budget_refusal

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
    reason: str = "budget"  # faregate_quota_rejections_total reason label

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
               f"This session reached its limit of {seconds} seconds.", reason="session_time")


def model_cut(model: str) -> Cut:
    return Cut("model_not_allowed", "error", f"The model {model!r} is not allowed here.",
               reason="model")


def unpriced_cut(model: str) -> Cut:
    return Cut("model_not_priced", "error",
               f"faregate has no price for the model {model!r}; add "
               f"[pricing.models.\"{model}\"] to its config.", reason="model")


def tool_cut(cap: int) -> Cut:
    return Cut("tool_call_limit", "tool_call_limit",
               f"This session reached its limit of {cap} tool calls.", reason="tool_calls")


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _max_output(event: dict, default: int) -> int:
    response = event.get("response") if isinstance(event.get("response"), dict) else {}
    return (_positive(response.get("max_output_tokens"))
            or _positive(response.get("max_response_output_tokens")) or default)


def _per_token(table: PriceTable, model: str, cls: str, at: datetime) -> Decimal:
    """Nano-USD per token of one class (0 when unpriced)."""
    entry = table.entry(model, at)
    rate = entry.rate(cls) if entry is not None else None
    return (rate or Decimal(0)) * 1000  # USD per 1M tokens -> nano-USD per token


class SessionQuota:
    """The money side of one session's client events."""

    def __init__(self, quota: Quota, policy: Policy, prices: PriceTable, model: str | None):
        self.quota = quota
        self.policy = policy
        self.prices = prices
        self.model = model
        self.holds: list[Admission] = []
        self.last_input_nanos = 0  # what the previous response's input cost
        self.last_input_tokens = 0
        self.session_max_output: int | None = None

    def rates(self, now: datetime) -> tuple[Decimal, Decimal, Decimal]:
        """Nano-USD per token: text input, audio input, dearest output."""
        model = self.model or ""
        text = _per_token(self.prices, model, "input", now)
        audio = _per_token(self.prices, model, "audio_input", now) or text
        rout = max(_per_token(self.prices, model, c, now) for c in OUTPUT_CLASSES)
        return text, audio, rout

    async def prepare(self, kind: str | None) -> None:
        """Before a `response.create` is sized: shared budgets lease headroom first."""
        if kind == "response.create" and self.quota.leasing:
            await self.quota.ensure(self.policy, 0, datetime.now(timezone.utc))

    def client_event(self, kind: str | None, event: dict[str, Any] | None, frame: str,
                     audio_in_bytes: int, tool_calls: int = 0) -> tuple[str | None, Cut | None]:
        """(frame to forward or None, cut) for one parsed client event."""
        if event is None:
            return frame, None  # the upstream answers malformed events itself
        if kind == "session.update" or kind == "session.start":
            return self._session_update(event, frame)
        if kind == "response.create":
            cap = self.policy.max_tool_calls_per_session
            if cap is not None and tool_calls >= cap:
                return None, tool_cut(cap)
            return self._response_create(event, frame, audio_in_bytes)
        return frame, None

    def _session_update(self, event: dict[str, Any], frame: str
                        ) -> tuple[str | None, Cut | None]:
        session = event.get("session") if isinstance(event.get("session"), dict) else {}
        model = session.get("model")
        if isinstance(model, str) and not self.policy.allows(model):
            return None, model_cut(model)
        if (isinstance(model, str) and self.policy.unknown_model == "reject"
                and self.prices.entry(model, None) is None):
            return None, unpriced_cut(model)
        if isinstance(model, str):
            self.model = model
        cap = _positive(session.get("max_output_tokens")) or _positive(
            session.get("max_response_output_tokens"))
        if cap is not None:
            self.session_max_output = cap
        return frame, None

    def _response_create(self, event: dict[str, Any], frame: str, audio_in_bytes: int
                         ) -> tuple[str | None, Cut | None]:
        now = datetime.now(timezone.utc)
        policy = self.policy
        out_tokens = _max_output(event, self.session_max_output
                                 or policy.default_max_output_tokens)
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
                tightest = self.quota.tightest(policy, now)
                assert tightest is not None  # `remaining` is not None: there is a budget
                return None, budget_cut(budget_refusal(tightest[0], tightest[1].used()))
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
        result.worst = self._worst(in_tokens, audio_tokens, out_tokens, now)
        self.holds.append(result)
        return (orjson.dumps(event).decode() if changed else frame), None

    def _worst(self, in_tokens: int, audio_tokens: int, out_tokens: int, now: datetime
               ) -> Usage:
        """The reservation as a usage (what a response whose report cannot be true costs)."""
        model = self.model or ""
        entry = self.prices.entry(model, now)
        dearest = max(OUTPUT_CLASSES, key=lambda c: _per_token(self.prices, model, c, now))
        audio = audio_tokens if entry is not None and entry.rate("audio_input") else 0
        return Usage(input=in_tokens - audio, audio_input=audio, **{dearest: out_tokens})

    def take_hold(self) -> Admission | None:
        """The oldest response reservation, to be settled by its charge (None: VAD/Live)."""
        return self.holds.pop(0) if self.holds else None

    def after_charge(self, input_tokens: int | None, input_nanos: int) -> Cut | None:
        """A response was charged: remember its input; cut if a budget is now spent."""
        if input_tokens is not None:
            self.last_input_tokens = input_tokens
            self.last_input_nanos = input_nanos
        refusal = self.quota.exhausted(self.policy, datetime.now(timezone.utc))
        return budget_cut(refusal) if refusal is not None else None

    def release_all(self) -> None:
        while self.holds:
            self.quota.release(self.holds.pop(0))
