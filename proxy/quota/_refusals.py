"""Why a call is refused: the DESIGN §5 answers as plain values.

A `Refusal` is data (status, OpenAI error type and code, message, headers,
and the metric reason); the edges turn it into an HTTP answer or a
Realtime error event. Nothing here knows aiohttp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from faregate.storage import human_usd

from ._asks import Ask, Sizing
from ._policy import BudgetLimit

ADJECTIVE = {"day": "daily", "month": "monthly"}
_NO_RETRY = {"x-should-retry": "false"}


@dataclass(frozen=True)
class Refusal:
    status: int
    type: str
    code: str
    reason: str  # metric label: budget, request_quota, rate_limit, concurrency, model, ...
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def _budget(limit: BudgetLimit, the: str = "The") -> str:
    """"The daily budget of $5.00 for tenant acme" (the start of a budget's refusals)."""
    what = limit.scope.replace(":", " ", 1)
    return f"{the} {ADJECTIVE[limit.period]} budget of {human_usd(limit.limit_nanos)} for {what}"


def budget_refusal(limit: BudgetLimit, used: int, ask: Ask | None = None,
                   left: int | None = None, held: int = 0) -> Refusal:
    """A budget refused a call: "is used up" when nothing of it is left; otherwise
    what the call could cost (and what of), what remains, and what to set to fit.
    `used`: spent or reserved; `left`: what the call may hold now (default: the
    limit less `used`); `held`: what calls in flight hold beside it."""
    left = limit.limit_nanos - used if left is None else left
    resets = f"It resets at the start of the next UTC {limit.period}."
    if left <= 0 or ask is None:
        return _budget_refused(f"{_budget(limit)} is used up ({human_usd(used)} spent or "
                               f"reserved). {resets}")
    sizing = ask.sizing
    noun = sizing.noun if sizing is not None else "call"
    return _budget_refused(
        f"This {noun} could cost up to {human_usd(ask.amount)}{_made_of(sizing)}; "
        f"{human_usd(left)} of {_budget(limit, 'the')} remains"
        f"{f' ({human_usd(held)} more is held by calls in flight)' if held > 0 else ''}"
        f"{_to_fit(ask, left)}. {resets}")


def _budget_refused(message: str) -> Refusal:
    return Refusal(429, "insufficient_quota", "budget_exceeded", "budget", message,
                   dict(_NO_RETRY))


def _made_of(sizing: Sizing | None) -> str:
    """" (1,200 input + 4,096 output tokens of gpt-4o-mini)", or "" when unknown."""
    if sizing is None or sizing.input_tokens + sizing.output_tokens <= 0:
        return ""
    parts = [f"{sizing.input_tokens:,} input"] if sizing.input_tokens else []
    if sizing.output_tokens:
        parts.append(f"{sizing.output_tokens:,} output")
    model = (f"of {sizing.model[:64]}" if sizing.model
             else "at the dearest rates this caller may use")
    return f" ({' + '.join(parts)} tokens {model})"


def _to_fit(ask: Ask, left: int) -> str:
    """What the caller can do: cap the output (at what fits, when the input's cost is
    known), or shorten the input when it alone does not fit."""
    sizing = ask.sizing
    if sizing is None or not sizing.cap_field or sizing.output_tokens <= 0:
        return ""
    if sizing.input_cost is None:
        return f" — set {sizing.cap_field} to fit"
    input_nanos, capped_input = sizing.input_cost()
    output_nanos = ask.amount - input_nanos
    fits = 0
    if left > capped_input and output_nanos > 0:  # output costs the same per token
        fits = (left - capped_input) * sizing.output_tokens // output_nanos
        fits = (fits - 1) // max(1, sizing.choices)  # one token short: rounding never tips it
    if fits < 1:  # (the input as the retry would send it, when only that does not fit)
        shown = input_nanos if input_nanos >= left else capped_input
        return f" — its input alone costs about {human_usd(shown)}: shorten it"
    return f" — set {sizing.cap_field} to {fits:,} or less to fit"


def contention_refusal(limit: BudgetLimit, waited_s: float) -> Refusal:
    """Near a limit calls are admitted one at a time; this one waited its turn in vain.
    Retryable: the call in flight settles soon, and the SDK retries after `retry-after`."""
    return Refusal(
        429, "rate_limit_exceeded", "rate_limit_exceeded", "budget",
        f"{_budget(limit)} is nearly used: calls are admitted one at a time and another "
        f"is in flight (waited {waited_s:g} s). Try again in 1 s.",
        {"retry-after": "1", "retry-after-ms": "1000"},
    )


def request_quota_refusal(message: str) -> Refusal:
    return Refusal(429, "insufficient_quota", "request_quota_exceeded", "request_quota",
                   message, dict(_NO_RETRY))


def rate_refusal(kind: str, wait_s: float, per_minute: int, remaining: float) -> Refusal:
    wait_ms = max(1, int(wait_s * 1000 + 0.999))
    unit = "requests" if kind == "rpm" else "tokens"
    return Refusal(
        429, "rate_limit_exceeded", "rate_limit_exceeded", "rate_limit",
        f"Rate limit reached: {per_minute} {unit} per minute. Try again in {wait_ms} ms.",
        {
            "retry-after": str(max(1, int(wait_s + 0.999))),
            "retry-after-ms": str(wait_ms),
            f"x-ratelimit-limit-{unit}": str(per_minute),
            f"x-ratelimit-remaining-{unit}": str(max(0, int(remaining))),
            f"x-ratelimit-reset-{unit}": f"{wait_ms}ms",
        },
    )


def model_refusal(model: str) -> Refusal:
    return Refusal(403, "invalid_request_error", "model_not_allowed", "model",
                   f"The model {model!r} is not allowed for this caller.")


def concurrency_refusal(limit: int) -> Refusal:
    return Refusal(429, "rate_limit_exceeded", "concurrent_sessions_exceeded", "concurrency",
                   f"At most {limit} concurrent sessions are allowed for this tenant.",
                   {"retry-after": "1"})


def upstream_refusal(message: str, wait_s: float) -> Refusal:
    wait_ms = max(1, int(wait_s * 1000 + 0.999))
    return Refusal(429, "rate_limit_exceeded", "upstream_limit", "upstream_limit", message,
                   {"retry-after": str(max(1, math.ceil(wait_s))),
                    "retry-after-ms": str(wait_ms)})
