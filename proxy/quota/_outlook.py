"""A caller's own view of its quota: every limit, and whether a typical next call fits.

`GET /v1/faregate/quota` and the dashboard's per-tenant quotas show the same
`quota_report`: who the caller is (tenant, user, tier), each `LimitStatus`
that applies to it, and `allowed` — whether admission would take the next
*typical call* now (a dry run of the same checks: allowlist, request cap,
budgets, rpm/tpm; nothing is held).

The typical call, by what is known of the caller's next call:

* `?model=NAME` named: a call to NAME with a short prompt of
  `TYPICAL_PROMPT_TOKENS` input tokens and `?max_output_tokens=` (else the
  caller's `default_max_output_tokens`, else the model's longest answer from
  the price table — 4096 for the dearest of an allowlist) output tokens,
  priced like a reservation (input at the input rate, output at the model's
  dearest output rate);
* else the same call at the model of the caller's latest admitted call
  (remembered in memory by this replica);
* else, before its first call, at the dearest model of its `models`
  allowlist;
* else (a first call, any model allowed): the smallest call — one request
  of one nano-dollar — so `allowed` says whether any call can be admitted.

The answer says which basis, model and amount it assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable

from faregate.pricing import OUTPUT_CLASSES, PriceTable, Usage, cost_of, to_nanos
from faregate.storage import format_usd

from ._asks import Sizing
from ._policy import DEFAULT_MAX_OUTPUT_TOKENS, Policy
from ._refusals import Refusal
from ._status import iso_utc

if TYPE_CHECKING:
    from ._quota import Quota

TYPICAL_PROMPT_TOKENS = 256
_MEMO_SIZE = 256


@dataclass(frozen=True, slots=True)
class TypicalCall:
    basis: str  # "model" (named) | "recent" | "allowlist" (its dearest) | "any" (smallest)
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    priced: bool

    def as_dict(self) -> dict[str, Any]:
        return {"basis": self.basis, "model": self.model, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": format_usd(self.cost_nanos),
                "priced": self.priced}


SMALLEST = TypicalCall("any", None, 0, 0, 1, True)


def _cost(table: PriceTable, model: str, input_tokens: int, output_tokens: int,
          at: datetime) -> int | None:
    """Nano-USD of the call at `model`'s dearest output rate; None when unpriced."""
    entry = table.entry(model, at)
    if entry is None:
        return None
    rates = {c: entry.rate(c) or Decimal(0) for c in OUTPUT_CLASSES}
    dearest = max(rates, key=lambda c: rates[c])
    usage = Usage(input=input_tokens, **{dearest: output_tokens})
    return to_nanos(cost_of(usage, model, at, table))


#: (table id, version, allowlist, output tokens, UTC day) -> (model, nanos); bounded
_DEAREST: dict[tuple, tuple[str | None, int]] = {}


def _dearest(table: PriceTable, models: frozenset[str], output_tokens: int,
             at: datetime) -> tuple[str | None, int]:
    key = (id(table), table.version, models, output_tokens, at.date())
    hit = _DEAREST.get(key)
    if hit is not None:
        return hit
    best: tuple[str | None, int] = (None, 0)
    for name in sorted(models):
        cost = _cost(table, name, TYPICAL_PROMPT_TOKENS, output_tokens, at)
        if cost is not None and (best[0] is None or cost > best[1]):
            best = (name, cost)
    if len(_DEAREST) >= _MEMO_SIZE:
        _DEAREST.clear()
    _DEAREST[key] = best
    return best


def _longest(table: PriceTable, model: str, at: datetime) -> int:
    """The output a call to `model` reserves when it sets no cap: the model's longest."""
    entry = table.entry(model, at)
    return (entry.max_output_tokens if entry is not None else None) or DEFAULT_MAX_OUTPUT_TOKENS


def typical_call(policy: Policy, table: PriceTable, at: datetime, model: str | None = None,
                 output_tokens: int | None = None, recent: str | None = None) -> TypicalCall:
    """The typical next call of `policy`'s caller (see the module docstring); `recent`
    is the model of its latest admitted call."""
    asked = output_tokens or policy.default_max_output_tokens
    for basis, name in (("model", model), ("recent", recent)):
        if name is not None:
            out = asked or _longest(table, name, at)
            cost = _cost(table, name, TYPICAL_PROMPT_TOKENS, out, at)
            return TypicalCall(basis, name, TYPICAL_PROMPT_TOKENS, out, cost or 0,
                               cost is not None)
    if policy.models is None:
        return SMALLEST
    out = asked or DEFAULT_MAX_OUTPUT_TOKENS
    name, cost = _dearest(table, policy.models, out, at)
    return TypicalCall("allowlist", name, TYPICAL_PROMPT_TOKENS, out, cost, name is not None)


def _refusal(refusal: Refusal | None) -> dict[str, str] | None:
    if refusal is None:
        return None
    return {"type": refusal.type, "code": refusal.code, "message": refusal.message}


def quota_report(quota: "Quota", policy: Policy, table: PriceTable, now: datetime,
                 thresholds: Iterable[Decimal], active_sessions: int, *,
                 model: str | None = None, output_tokens: int | None = None) -> dict[str, Any]:
    """The caller's quota as JSON: its limits only (its tenant's and its own user's)."""
    typical = typical_call(policy, table, now, model, output_tokens, quota.recent_model(policy))
    sizing = (Sizing(typical.input_tokens, typical.output_tokens, typical.model)
              if typical.basis != "any" else None)
    refusal = quota.would_admit(
        policy, typical.cost_nanos, now, model=typical.model,
        tpm_tokens=max(1, typical.input_tokens + typical.output_tokens), sizing=sizing)
    return {
        "object": "faregate.quota",
        "tenant": policy.tenant,
        "user": policy.user,
        "tier": policy.tier,
        "on_exceed": "block" if policy.block else "alert_only",
        "now": iso_utc(now),
        "allowed": refusal is None,
        "refusal": _refusal(refusal),
        "typical_call": typical.as_dict(),
        "limits": [s.as_dict() for s in quota.statuses(policy, now, thresholds,
                                                       active_sessions)],
        "models": sorted(policy.models) if policy.models is not None else None,
        "per_session": {"max_session_seconds": policy.max_session_seconds,
                        "max_tool_calls_per_session": policy.max_tool_calls_per_session,
                        "cost_events": policy.session_cost_events},
    }
