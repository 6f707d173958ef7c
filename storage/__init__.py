"""faregate.storage — the ledger.

`Ledger.record(charge)` never blocks a request: records are queued and
written in batches by a background writer (SQLite in WAL mode on a
dedicated thread). Rollups kept in the same transactions answer reports,
budgets and the dashboard at any ledger size; reads use their own
connections. Also here: migrations, retention, `copy_ledger`, UTC report
periods, and exact money formatting. This room never imports
`faregate.proxy` or `faregate.pricing`.
"""

from ._copy import copy_ledger
from ._ledger import Ledger
from ._money import format_usd, nanos_to_usd
from ._periods import PERIODS, parse_date_range, period_bounds
from ._queries import group_tag
from ._journal import JournalBusy
from ._record import (
    END_REASONS,
    TOKEN_COLUMNS,
    AlertRecord,
    BatchEvent,
    LedgerRecord,
    SessionRecord,
    new_id,
    random_hex,
)
from ._report import (
    GROUPS,
    INPUT_CLASSES,
    OUTPUT_CLASSES,
    UsageReport,
    UsageRow,
    render_report,
    report_dict,
)

__all__ = [
    "AlertRecord",
    "BatchEvent",
    "END_REASONS",
    "GROUPS",
    "INPUT_CLASSES",
    "OUTPUT_CLASSES",
    "JournalBusy",
    "PERIODS",
    "TOKEN_COLUMNS",
    "Ledger",
    "LedgerRecord",
    "SessionRecord",
    "UsageReport",
    "UsageRow",
    "copy_ledger",
    "format_usd",
    "group_tag",
    "nanos_to_usd",
    "new_id",
    "random_hex",
    "parse_date_range",
    "period_bounds",
    "render_report",
    "report_dict",
]
