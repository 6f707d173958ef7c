"""Why faregate ends a Realtime/Live session, as values: the §5 error event and end reason.

A `Cut` is data (the event's code, type and message, the session row's end
reason, the metric reason); the relay sends `event()` to the client and
closes with 1008 once the in-flight response has settled.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ._refusals import Refusal


@dataclass(frozen=True, slots=True)
class Cut:
    """Why faregate ends a session: the error event's code and the end reason."""

    code: str  # budget_exceeded | session_time_limit | model_not_allowed | model_not_priced
    #          | tool_call_limit
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


def notice(refusal: Refusal, event_id: str) -> str:
    """A Realtime `error` event that refuses one client event and keeps the session
    (a response that must wait for the budget's one-at-a-time turn, a rate limit):
    the client may send it again later."""
    return orjson.dumps({
        "type": "error", "event_id": event_id,
        "error": {"type": refusal.type, "code": refusal.code, "message": refusal.message,
                  "param": None, "event_id": None},
    }).decode()
