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
response and decides when a session is `Cut`.
"""

from ._budget import PERIODS, BudgetBook, Counter, period_key, period_keys
from ._leases import Leases
from ._policy import DEFAULT_MAX_OUTPUT_TOKENS, BudgetLimit, Policy, policy_for
from ._asks import Admission, Ask, Budgets
from ._quota import Quota
from ._ratios import InputRatios
from ._refusals import Refusal, budget_refusal, concurrency_refusal, model_refusal
from ._cuts import Cut, time_cut
from ._session import CANCEL_EVENT, SessionQuota, Verdict, first_response
from ._slots import SessionTicket
from ._upstream import UpstreamLimits

__all__ = [
    "CANCEL_EVENT",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "PERIODS",
    "Admission",
    "Ask",
    "BudgetBook",
    "BudgetLimit",
    "Budgets",
    "Counter",
    "Cut",
    "InputRatios",
    "Leases",
    "Policy",
    "Quota",
    "Refusal",
    "SessionQuota",
    "SessionTicket",
    "UpstreamLimits",
    "Verdict",
    "budget_refusal",
    "concurrency_refusal",
    "first_response",
    "model_refusal",
    "period_key",
    "period_keys",
    "policy_for",
    "time_cut",
]
