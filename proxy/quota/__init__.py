"""quota — may it spend: policy, budgets, rate limits, reservations, leases.

Plain in-memory arithmetic on the event loop (no aiohttp, no database round
trip per call): `policy_for` turns config into a caller's `Policy`;
`Quota.admit` holds a call's worst case against its budgets, request and
image caps, rate limits and the shared upstream limits, or returns a
`Refusal`; `settle`/`release` end the hold. `Leases` share budgets between
replicas on PostgreSQL; `SessionQuota` admits each Realtime response and
decides when a session is `Cut`. `LimitStatus` and `quota_report` are the
read-only views of where a caller's limits stand (its own quota endpoint,
the dashboard, the `x-faregate-budget-*` headers from `budget_headers`).
decides when a session is `Cut`; `UnseenHolds` keeps the admissions of
Realtime sessions faregate cannot meter (minted keys, WebRTC calls).
"""

from ._budget import PERIODS, BudgetBook, Counter, period_key, period_keys
from ._leases import Leases
from ._outlook import TYPICAL_PROMPT_TOKENS, TypicalCall, quota_report, typical_call
from ._policy import BudgetLimit, Policy, policy_for
from ._quota import Admission, Budgets, Quota
from ._refusals import Refusal, budget_refusal, concurrency_refusal, model_refusal
from ._session import Cut, SessionQuota, budget_cut, model_cut, time_cut, unpriced_cut
from ._status import (
    STATUSES,
    LimitStatus,
    budget_headers,
    iso_utc,
    level_for,
    period_end,
    status_for,
    tightest,
)
from ._unseen import UnseenHolds
from ._upstream import UpstreamLimits

__all__ = [
    "PERIODS",
    "STATUSES",
    "TYPICAL_PROMPT_TOKENS",
    "Admission",
    "BudgetBook",
    "BudgetLimit",
    "Budgets",
    "Counter",
    "Cut",
    "Leases",
    "LimitStatus",
    "Policy",
    "Quota",
    "Refusal",
    "SessionQuota",
    "TypicalCall",
    "UnseenHolds",
    "UpstreamLimits",
    "budget_cut",
    "budget_headers",
    "budget_refusal",
    "concurrency_refusal",
    "iso_utc",
    "level_for",
    "model_cut",
    "model_refusal",
    "period_end",
    "period_key",
    "period_keys",
    "policy_for",
    "quota_report",
    "status_for",
    "tightest",
    "time_cut",
    "typical_call",
    "unpriced_cut",
]
