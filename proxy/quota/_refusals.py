"""Why a call is refused: the DESIGN §5 answers as plain values.

A `Refusal` is data (status, OpenAI error type and code, message, headers,
and the metric reason); the edges turn it into an HTTP answer or a
Realtime error event. Nothing here knows aiohttp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

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


def _budget(limit: BudgetLimit) -> str:
    """"The daily budget of $5 for tenant acme" (the start of a budget's refusals)."""
    what = limit.scope.replace(":", " ", 1)
    return f"The {ADJECTIVE[limit.period]} budget of ${limit.limit_usd} for {what}"


def budget_refusal(limit: BudgetLimit, used: int) -> Refusal:
    return Refusal(
        429, "insufficient_quota", "budget_exceeded", "budget",
        f"{_budget(limit)} is used up (${Decimal(used).scaleb(-9):f} spent or reserved). "
        f"It resets at the start of the next UTC {limit.period}.",
        dict(_NO_RETRY),
    )


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
