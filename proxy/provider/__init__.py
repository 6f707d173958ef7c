"""provider — the provider's bill as a second ledger.

The OpenAI organization Admin API through the official SDK (`ProviderApi`:
daily costs, projects, keys, hard spend limits; bounded and retried, never on
the request path); reconciliation as pure arithmetic over rows (`_reconcile`,
`_attribute`); backstop limits (`_backstop`); the Realtime sessions
faregate starts but cannot meter, recorded with their creator and held for
(`Delegations`); and serve's daily jobs (`ProviderJobs`). The CLI's
`reconcile` and `sync-limits` commands live here behind `cli.py`.
"""

from ._api import ProviderApi, ProviderError, admin_base_url
from ._attribute import Attribution, attribute, is_realtime_line, realtime_residuals
from ._backstop import Backstop, LimitPlan, backstops, render_plans
from ._commands import reconcile_command, sync_limits_command
from ._costs import CostLine, CostsPage, CostsUnreadable, parse_costs_page
from ._gather import Outcome, reconcile_days
from ._jobs import ProviderJobs
from ._reconcile import (
    GROUPINGS,
    MIN_DRIFT_NANOS,
    UNMAPPED,
    KeyMap,
    ProjectMap,
    by_api_key,
    by_line_item,
    by_project,
    compare,
    failing,
    line_item_group,
    within,
)
from ._render import reconciliation_dict, render, render_csv, summary_dict
from ._unseen import Delegations

__all__ = [
    "GROUPINGS",
    "MIN_DRIFT_NANOS",
    "UNMAPPED",
    "Attribution",
    "Backstop",
    "CostLine",
    "CostsPage",
    "CostsUnreadable",
    "Delegations",
    "KeyMap",
    "LimitPlan",
    "Outcome",
    "ProjectMap",
    "ProviderApi",
    "ProviderError",
    "ProviderJobs",
    "admin_base_url",
    "attribute",
    "backstops",
    "by_api_key",
    "by_line_item",
    "by_project",
    "compare",
    "failing",
    "is_realtime_line",
    "line_item_group",
    "parse_costs_page",
    "realtime_residuals",
    "reconcile_command",
    "reconcile_days",
    "reconciliation_dict",
    "render",
    "render_csv",
    "render_plans",
    "summary_dict",
    "sync_limits_command",
    "within",
]
