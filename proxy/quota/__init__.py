"""quota — may it spend: policy, budgets, rate limits, reservations, leases.

Plain in-memory arithmetic on the event loop (no aiohttp, no database round
trip per call): `policy_for` turns config into a caller's `Policy`;
`Quota.reserve` holds what a call `Ask`s — its reservation, side by side
while its worst case fits, one at a time near a limit — against its budgets,
request and image caps, rate limits and the shared upstream limits, or
returns a `Refusal`; `settle`/`release` end the hold, and `InputRatios`
learn how far estimates were off. `Quota.take_session` takes a session's
concurrency slots before the upstream is dialled. `Leases` share every limit
between replicas on PostgreSQL; `SessionQuota` admits each Realtime
response and decides when a session is `Cut`; `UnseenHolds` keeps the
admissions of Realtime sessions faregate cannot meter (minted keys, WebRTC
calls). `LimitStatus` and `quota_report` are the read-only views of where a
caller's limits stand (its own quota endpoint, the dashboard, the
`x-faregate-budget-*` headers from `budget_headers`).
"""

from ._budget import PERIODS, BudgetBook, Counter, period_key, period_keys
from ._leases import Leases
from ._asks import Admission, Ask, Budgets, Sizing
from ._cuts import Cut, budget_cut, model_cut, notice, time_cut, unpriced_cut
from ._outlook import TYPICAL_PROMPT_TOKENS, TypicalCall, quota_report, typical_call
from ._policy import DEFAULT_MAX_OUTPUT_TOKENS, BudgetLimit, Policy, policy_for
from ._quota import Quota
from ._ratios import InputRatios
from ._refusals import Refusal, budget_refusal, concurrency_refusal, model_refusal
from ._session import CANCEL_EVENT, SessionQuota, Verdict, first_response
from ._slots import SessionTicket
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
    "CANCEL_EVENT",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "PERIODS",
    "STATUSES",
    "TYPICAL_PROMPT_TOKENS",
    "Admission",
    "Ask",
    "BudgetBook",
    "BudgetLimit",
    "Budgets",
    "Counter",
    "Cut",
    "InputRatios",
    "Leases",
    "LimitStatus",
    "Policy",
    "Quota",
    "Refusal",
    "SessionQuota",
    "Sizing",
    "SessionTicket",
    "TypicalCall",
    "UnseenHolds",
    "UpstreamLimits",
    "Verdict",
    "budget_cut",
    "budget_headers",
    "budget_refusal",
    "concurrency_refusal",
    "first_response",
    "iso_utc",
    "level_for",
    "model_cut",
    "notice",
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
