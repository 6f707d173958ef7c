"""faregate.storage — the ledger.

`Ledger.record(charge)` never blocks a request: records are queued and
written in batches by a background writer (SQLite in WAL mode on a
dedicated thread). Rollups kept in the same transactions answer reports,
budgets and the dashboard at any ledger size; reads use their own
connections. Also here: migrations, retention, `copy_ledger`, UTC report
periods, and exact money formatting. This room never imports
`faregate.proxy`; from `faregate.pricing` it takes only the token classes
its columns and report totals are made of.
"""

from ._copy import copy_ledger
from ._ledger import Ledger
from ._money import format_usd, human_usd, nanos_to_usd, plain_decimal
from ._periods import PERIODS, parse_date_range, period_bounds
from ._queries import SESSION_START, group_tag
from ._provider import (
    FROM_PROVIDER_FLAG,
    UNCONFIRMED_FLAG,
    DailyTotal,
    DelegatedEvent,
    DelegatedSession,
    LimitChange,
    LineItemTotal,
    Reconciliation,
)
from ._journal import JournalBusy
from ._journal_watch import REASONS as JOURNAL_FAILURES
from ._markers import INTERRUPTED, StartMarker
from ._store import LedgerUnavailable, store_address
from ._record import (
    END_REASONS,
    TOKEN_COLUMNS,
    AlertRecord,
    BackgroundEvent,
    BatchEvent,
    LedgerRecord,
    ObjectRecord,
    SessionRecord,
    new_id,
    random_hex,
)
from ._report import (
    GROUPS,
    UsageReport,
    UsageRow,
    render_report,
    report_dict,
)

__all__ = [
    "AlertRecord",
    "BackgroundEvent",
    "BatchEvent",
    "DailyTotal",
    "DelegatedEvent",
    "DelegatedSession",
    "FROM_PROVIDER_FLAG",
    "LimitChange",
    "LineItemTotal",
    "Reconciliation",
    "UNCONFIRMED_FLAG",
    "END_REASONS",
    "GROUPS",
    "INTERRUPTED",
    "JOURNAL_FAILURES",
    "JournalBusy",
    "LedgerUnavailable",
    "ObjectRecord",
    "PERIODS",
    "SESSION_START",
    "TOKEN_COLUMNS",
    "Ledger",
    "LedgerRecord",
    "SessionRecord",
    "StartMarker",
    "UsageReport",
    "UsageRow",
    "copy_ledger",
    "format_usd",
    "human_usd",
    "group_tag",
    "nanos_to_usd",
    "new_id",
    "random_hex",
    "parse_date_range",
    "period_bounds",
    "plain_decimal",
    "render_report",
    "report_dict",
    "store_address",
]
