"""Session, alert and budget-seeding queries, written once for both backends.

Like `_queries.py`, only the placeholder style differs per dialect; each
backend runs them through its generic `fetch(sql, args)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._kinds import ALERTS, BATCHES, SESSIONS
from ._periods import epoch_ms
from ._queries import Placeholder, _where
from ._record import TOKEN_COLUMNS

#: Every token a charge counted, input and output (what a continuation carries).
_ALL_TOKENS = " + ".join(f"{c}_tokens" for c in TOKEN_COLUMNS)


def sessions_sql(p: Placeholder, tenant: str | None, limit: int, before: str | None
                 ) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for cond, value in (("tenant = {}", tenant), ("id < {}", before)):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))
    args.append(max(0, int(limit)))
    sql = (f"SELECT {', '.join(SESSIONS.columns)} FROM sessions {_where(clauses)} "
           f"ORDER BY started_ms DESC, id DESC LIMIT {p(len(args))}")
    return sql, args


def session_sql(p: Placeholder, session_id: str) -> tuple[str, list[Any]]:
    return (f"SELECT {', '.join(SESSIONS.columns)} FROM sessions WHERE id = {p(1)}",
            [session_id])


def spend_since_sql(p: Placeholder, month_start: datetime, day_start: datetime
                    ) -> tuple[str, list[Any]]:
    """Per (tenant, user): month spend/requests/images, then today's. A session's
    response charges are not separate requests (they carry a session_id; REST rows
    carry their answer's own id in response_id, so that column cannot tell)."""
    day = epoch_ms(day_start)
    sql = (
        "SELECT tenant, user_id, SUM(cost_nanos), "
        "SUM(CASE WHEN session_id IS NULL THEN 1 ELSE 0 END), SUM(images), "
        f"SUM(CASE WHEN ts_ms >= {p(1)} THEN cost_nanos ELSE 0 END), "
        f"SUM(CASE WHEN ts_ms >= {p(2)} AND session_id IS NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN ts_ms >= {p(3)} THEN images ELSE 0 END) "
        f"FROM charges WHERE ts_ms >= {p(4)} GROUP BY tenant, user_id"
    )
    return sql, [day, day, day, epoch_ms(month_start)]


def alerts_sql(p: Placeholder, since: datetime | None, limit: int) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if since is not None:
        args.append(epoch_ms(since))
        clauses.append(f"at_ms >= {p(1)}")
    args.append(max(0, int(limit)))
    sql = (f"SELECT {', '.join(ALERTS.columns)} FROM alerts {_where(clauses)} "
           f"ORDER BY at_ms DESC LIMIT {p(len(args))}")
    return sql, args


def batch_events_sql(p: Placeholder, since: datetime) -> tuple[str, list[Any]]:
    return (f"SELECT {', '.join(BATCHES.columns)} FROM batches WHERE at_ms >= {p(1)} "
            "ORDER BY at_ms", [epoch_ms(since)])


def batch_events_by_id_sql(p: Placeholder, ids: list[str]) -> tuple[str, list[Any]]:
    """Batch events with these ids (primary-key lookups; the caller bounds the list)."""
    marks = ", ".join(p(i + 1) for i in range(len(ids)))
    return (f"SELECT {', '.join(BATCHES.columns)} FROM batches WHERE id IN ({marks}) "
            "ORDER BY at_ms", list(ids))


def claim_sql(p: Placeholder, kind, record) -> tuple[str, list[Any]]:
    """Insert a record unless its id exists; returns the id only if this call inserted it."""
    row = list(kind.to_row(record))
    marks = ", ".join(p(i + 1) for i in range(len(row)))
    return (f"INSERT INTO {kind.table} ({', '.join(kind.columns)}) VALUES ({marks}) "
            "ON CONFLICT DO NOTHING RETURNING id", row)


def claim_alert_sql(p: Placeholder, alert) -> tuple[str, list[Any]]:
    """Insert an alert unless present; returns its id only if this call inserted it."""
    return claim_sql(p, ALERTS, alert)


def context_sql(p: Placeholder, tenant: str, response_id: str | None,
                conversation_id: str | None) -> tuple[str, list[Any]]:
    """Tokens (input + output) of the named Responses answer, or of the latest charge
    in the named conversation: what a call continuing it carries at least."""
    if response_id is not None:
        where = f"endpoint = '/v1/responses' AND response_id = {p(1)}"
        value = response_id
    else:
        where = f"conversation_id = {p(1)}"
        value = conversation_id
    sql = (f"SELECT {_ALL_TOKENS} FROM charges WHERE {where} AND tenant = {p(2)} "
           "ORDER BY ts_ms DESC LIMIT 1")
    return sql, [value, tenant]


def lease_state_sql(p: Placeholder, scope: str, period: str, key: str
                    ) -> tuple[str, list[Any]]:
    return (f"SELECT leased_nanos, limit_nanos FROM budget_leases WHERE scope = {p(1)} "
            f"AND period = {p(2)} AND period_key = {p(3)}", [scope, period, key])
