"""Session rows: columns, conversion, and rebuilding totals after a crash.

A session's row is written when it ends. If faregate dies first, its
response charges (which carry `session_id`) are already in the ledger, so
`REBUILD_SELECT` re-creates the missing session rows from them with
`end_reason = 'interrupted'`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Sequence

import orjson

from ._periods import utc_stamp
from ._record import TOKEN_COLUMNS, SessionRecord

SESSION_COLUMNS: tuple[str, ...] = (
    "id", "upstream_session_id", "tenant", "user_id", "key_id", "model", "endpoint",
    "started_at", "started_ms", "ended_at", "ended_ms", "duration_ms", "responses",
    *(f"{c}_tokens" for c in TOKEN_COLUMNS), "seconds_ms", "cost_nanos", "breakdown",
    "end_reason", "estimated", "flags", "tags", "tool_calls",
)


def encode_tags(tags: dict[str, str]) -> str:
    """Tags as the ledger stores them: a JSON object with sorted keys."""
    return orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode() if tags else "{}"


def decode_tags(text: str | None) -> dict[str, str]:
    try:
        tags = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return tags if isinstance(tags, dict) else {}


def to_session_row(s: SessionRecord) -> tuple[Any, ...]:
    started, started_ms = utc_stamp(s.started_at)
    ended, ended_ms = utc_stamp(s.ended_at) if s.ended_at else (None, None)
    return (
        s.id, s.upstream_session_id, s.tenant, s.user, s.key_id, s.model, s.endpoint,
        started, started_ms, ended, ended_ms, ended_ms - started_ms if ended_ms is not None else 0,
        s.responses, *(int(s.tokens.get(c, 0)) for c in TOKEN_COLUMNS),
        int((Decimal(s.seconds) * 1000).to_integral_value()), s.cost_nanos,
        orjson.dumps(s.breakdown).decode(), s.end_reason, int(s.estimated), ",".join(s.flags),
        encode_tags(s.tags), int(s.tool_calls),
    )


def from_session_row(row: Sequence[Any]) -> SessionRecord:
    v = dict(zip(SESSION_COLUMNS, row))
    return SessionRecord(
        id=v["id"],
        upstream_session_id=v["upstream_session_id"],
        tenant=v["tenant"],
        user=v["user_id"],
        key_id=v["key_id"],
        model=v["model"],
        endpoint=v["endpoint"],
        started_at=datetime.fromisoformat(v["started_at"]),
        ended_at=datetime.fromisoformat(v["ended_at"]) if v["ended_at"] else None,
        responses=v["responses"],
        tokens={c: v[f"{c}_tokens"] for c in TOKEN_COLUMNS},
        seconds=Decimal(v["seconds_ms"]).scaleb(-3),
        cost_nanos=v["cost_nanos"],
        breakdown=orjson.loads(v["breakdown"] or "{}"),
        end_reason=v["end_reason"],
        estimated=bool(v["estimated"]),
        flags=tuple(f for f in (v["flags"] or "").split(",") if f),
        tags=decode_tags(v["tags"]),
        tool_calls=int(v["tool_calls"] or 0),
    )


_TOKEN_SUMS = ", ".join(f"SUM({c}_tokens)" for c in TOKEN_COLUMNS)

#: Session rows for charges whose session never wrote one (crash mid-session),
#: among sessions with a charge since {since} (epoch ms): the start-up rebuild
#: reads recent session charges only, through index charges_session_ts
#: ({hint}: SQLite's planner, without statistics, would rather walk every
#: session charge by the session index), looks each distinct session up once,
#: and sums only orphans' charges.
REBUILD_SELECT = (
    "SELECT session_id, MIN(tenant), MIN(user_id), MIN(key_id), MIN(model), MIN(endpoint), "
    "MIN(ts), MIN(ts_ms), MAX(ts), MAX(ts_ms), "
    "SUM(CASE WHEN response_id IS NOT NULL THEN 1 ELSE 0 END), "
    f"{_TOKEN_SUMS}, SUM(seconds_ms), SUM(cost_nanos), MAX(estimated), MIN(tags) "
    "FROM charges c WHERE c.session_id IS NOT NULL AND c.session_id IN ("
    "SELECT d.session_id FROM (SELECT DISTINCT o.session_id FROM charges o{hint} "
    "WHERE o.session_id IS NOT NULL AND o.ts_ms >= {since}) d "
    "WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = d.session_id)"
    ") GROUP BY session_id"
)
REBUILD_HINT = {"sqlite": " INDEXED BY charges_session_ts", "postgresql": ""}


def rebuilt_session(row: Sequence[Any]) -> SessionRecord:
    (sid, tenant, user, key_id, model, endpoint, first, _first_ms, last, _last_ms,
     responses, *rest) = row
    n = len(TOKEN_COLUMNS)
    tokens = dict(zip(TOKEN_COLUMNS, (int(x or 0) for x in rest[:n])))
    seconds_ms, cost, estimated, tags = rest[n:]
    return SessionRecord(
        id=sid, tenant=tenant, user=user, key_id=key_id, model=model, endpoint=endpoint,
        started_at=datetime.fromisoformat(first), ended_at=datetime.fromisoformat(last),
        responses=int(responses or 0), tokens=tokens,
        seconds=Decimal(int(seconds_ms or 0)).scaleb(-3), cost_nanos=int(cost or 0),
        end_reason="interrupted", estimated=bool(estimated), flags=("rebuilt",),
        tags=decode_tags(tags),
    )
