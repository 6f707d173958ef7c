"""Session, alert and batch queries, written once for both backends.

Like `_queries.py`, only the placeholder style differs per dialect; each
backend runs them through its generic `fetch(sql, args)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._kinds import ALERTS, BACKGROUND, BATCHES, OBJECTS, SESSIONS
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


def objects_by_id_sql(p: Placeholder, ids: list[str]) -> tuple[str, list[Any]]:
    """Object owners by id (primary-key lookups; the caller bounds the list)."""
    marks = ", ".join(p(i + 1) for i in range(len(ids)))
    return (f"SELECT {', '.join(OBJECTS.columns)} FROM objects WHERE id IN ({marks})",
            list(ids))


def claim_sql(p: Placeholder, kind, record) -> tuple[str, list[Any]]:
    """Insert a record unless its id exists; returns the id only if this call inserted it."""
    row = list(kind.to_row(record))
    marks = ", ".join(p(i + 1) for i in range(len(row)))
    return (f"INSERT INTO {kind.table} ({', '.join(kind.columns)}) VALUES ({marks}) "
            "ON CONFLICT DO NOTHING RETURNING id", row)


def claim_alert_sql(p: Placeholder, alert) -> tuple[str, list[Any]]:
    """Insert an alert unless present; returns its id only if this call inserted it."""
    return claim_sql(p, ALERTS, alert)


def background_pending_sql(p: Placeholder, since: datetime) -> tuple[str, list[Any]]:
    """Pending background responses since `since` that have no final row, oldest first."""
    cols = ", ".join(f"b.{c}" for c in BACKGROUND.columns)
    return (f"SELECT {cols} FROM background_responses b WHERE b.event = 'pending' "
            f"AND b.at_ms >= {p(1)} AND NOT EXISTS (SELECT 1 FROM background_responses f "
            "WHERE f.id = 'final:' || b.response_id) ORDER BY b.at_ms", [epoch_ms(since)])
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
