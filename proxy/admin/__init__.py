"""admin — the operator's view: admin API, budget view, dashboard page.

Every route but the page itself needs the admin bearer token. `budget_views`
is the pure budget status (spent, reserved, remaining, projection, status)
that `/admin/budgets` and the dashboard show.
"""

from ._api import Admin
from ._budget_view import BudgetView, budget_views, status_for

__all__ = ["Admin", "BudgetView", "budget_views", "status_for"]
