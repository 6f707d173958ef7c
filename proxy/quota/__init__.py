"""quota — may it spend: policy, budgets, rate limits, reservations, leases.

Plain in-memory arithmetic on the event loop (no aiohttp, no database round
trip per call): `policy_for` turns config into a caller's `Policy`;
`Quota.admit` holds a call's worst case against its budgets, request and
image caps, rate limits and the shared upstream limits, or returns a
`Refusal`; `settle`/`release` end the hold. `Leases` share budgets between
replicas on PostgreSQL; `SessionQuota` admits each Realtime response and
decides when a session is `Cut`.
"""

from ._budget import PERIODS, BudgetBook, Counter, period_key, period_keys
from ._leases import Leases
from ._policy import BudgetLimit, Policy, policy_for
from ._quota import Admission, Budgets, Quota
from ._refusals import Refusal, budget_refusal, concurrency_refusal, model_refusal
from ._session import Cut, SessionQuota, budget_cut, model_cut, time_cut, unpriced_cut
from ._upstream import UpstreamLimits

__all__ = [
    "PERIODS",
    "Admission",
    "BudgetBook",
    "BudgetLimit",
    "Budgets",
    "Counter",
    "Cut",
    "Leases",
    "Policy",
    "Quota",
    "Refusal",
    "SessionQuota",
    "UpstreamLimits",
    "budget_cut",
    "budget_refusal",
    "concurrency_refusal",
    "model_cut",
    "model_refusal",
    "period_key",
    "period_keys",
    "policy_for",
    "time_cut",
    "unpriced_cut",
]
