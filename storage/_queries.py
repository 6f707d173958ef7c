"""Queries over raw charges, written once for both backends.

Only the placeholder style differs (`?` for SQLite, `$n` for PostgreSQL), so
results are identical on either. Reports read rollups (`_usage`); the raw
usage query here sums the few charges a range's sub-day edges need, and
`logs` pages single charges. Ids are fixed-length lowercase hex, whose order
is the same under byte ("C") and linguistic collations, so `ORDER BY id`
pages identically too.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable

from ._periods import epoch_ms
from ._record import TOKEN_COLUMNS
from ._report import GROUPS

Placeholder = Callable[[int], str]  # 1-based argument number -> "?" or "$1"

#: (key expression, second key expression) per grouping: a user is only
#: unique within its tenant, so `user` groups by both.
#: Grouping values are cut to MAX_VALUE characters, as rollups store them.
MAX_VALUE = 512
GROUP_SQL = {
    "tenant": ("tenant", "NULL"),
    "user": (f"substr(user_id, 1, {MAX_VALUE})", "tenant"),
    "key": (f"substr(key_id, 1, {MAX_VALUE})", "NULL"),
    "model": (f"substr(model, 1, {MAX_VALUE})", "NULL"),
    "endpoint": (f"substr(endpoint, 1, {MAX_VALUE})", "NULL"),
    "day": ("substr(ts, 1, 10)", "NULL"),
}

#: The sums every usage row carries, in `UsageRow.from_row` order (after the keys).
#: Charges priced by a fallback rule rather than an exact price: a dated
#: snapshot at its family's rates, a service tier or class billed at base rates.
FALLBACK_FLAGS = ("priced_by_family", "tier_unpriced", "rate_missing")
FALLBACK_SQL = "(" + " OR ".join(f"flags LIKE '%{f}%'" for f in FALLBACK_FLAGS) + ")"
#: Charges made at their reservation, counted and summed on their own: a usage report
#: that could not be true, and a call a crash cut off before it settled.
FLAGGED = ("usage_implausible", "interrupted")

#: Charges priced from a period no source confirms (`confidence = "unconfirmed"`).
UNCONFIRMED_SQL = "flags LIKE '%price_unconfirmed%'"

#: The flag of a Realtime/Live session's first charge: a session is one request,
#: however many responses (or Live usage updates) it was charged for.
SESSION_START = "session_start"
#: The charges a report counts as requests: every charge of its own (REST calls,
#: batch lines, background responses), and each session once, at its first charge.
REQUEST_SQL = f"(session_id IS NULL OR flags LIKE '%{SESSION_START}%')"

USAGE_SUMS = ", ".join((
    f"SUM(CASE WHEN {REQUEST_SQL} THEN 1 ELSE 0 END)",
    *(f"SUM({c}_tokens)" for c in TOKEN_COLUMNS),
    "SUM(reasoning_tokens)", "SUM(seconds_ms)", "SUM(characters)", "SUM(images)",
    "SUM(cost_nanos)", "SUM(CASE WHEN priced = 0 THEN 1 ELSE 0 END)", "SUM(estimated)",
    "SUM(CASE WHEN estimated = 1 THEN cost_nanos ELSE 0 END)", "SUM(savings_nanos)",
    "SUM(COALESCE(billed_nanos, cost_nanos))",
    f"SUM(CASE WHEN {FALLBACK_SQL} THEN 1 ELSE 0 END)",
    f"SUM(CASE WHEN {FALLBACK_SQL} THEN cost_nanos ELSE 0 END)",
    f"SUM(CASE WHEN {UNCONFIRMED_SQL} THEN 1 ELSE 0 END)",
    f"SUM(CASE WHEN {UNCONFIRMED_SQL} THEN cost_nanos ELSE 0 END)",
    *(f"SUM(CASE WHEN flags LIKE '%{flag}%' THEN {what} ELSE 0 END)"
      for flag in FLAGGED for what in ("1", "cost_nanos")),
))


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


TAG_GROUP = re.compile(r"tag:([A-Za-z0-9_.-]{1,40})")


def group_tag(group_by: str) -> str | None:
    """The tag key of a `tag:<key>` grouping, None for a named grouping.

    Raises ValueError for anything else, so only known SQL is ever built.
    """
    if group_by in GROUPS:
        return None
    m = TAG_GROUP.fullmatch(group_by)
    if m is None:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)} or tag:<key>")
    return m.group(1)


def _tag_expr(p: Placeholder, dialect: str, key: str) -> tuple[str, Any]:
    """A tag's value from the JSON `tags` column (argument 1 of the query), as text."""
    if dialect == "postgresql":
        return f"left(tags::jsonb ->> {p(1)}, {MAX_VALUE})", key
    return f"substr(CAST(json_extract(tags, {p(1)}) AS TEXT), 1, {MAX_VALUE})", f'$."{key}"'


def _range(p: Placeholder, start: datetime | None, end: datetime | None, tenant: str | None,
           clauses: list[str], args: list[Any]) -> None:
    """The report range and tenant as WHERE clauses (arguments appended in order)."""
    for cond, value in (
        ("ts_ms >= {}", None if start is None else epoch_ms(start)),
        ("ts_ms < {}", None if end is None else epoch_ms(end)),
        ("tenant = {}", tenant),
    ):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))


def usage_sql(
    p: Placeholder,
    start_ms: int | None,
    end_ms: int | None,
    group_by: str,
    tenant: str | None,
    dialect: str = "sqlite",
) -> tuple[str, list[Any]]:
    """Usage rows summed from raw charges in [start_ms, end_ms) (None: unbounded)."""
    tag = group_tag(group_by)
    clauses: list[str] = []
    args: list[Any] = []
    if tag is not None:  # first: SQLite numbers `?` by position, and the key comes first
        key, arg = _tag_expr(p, dialect, tag)
        key2 = "NULL"
        args.append(arg)
    else:
        key, key2 = GROUP_SQL[group_by]
    for cond, value in (("ts_ms >= {}", start_ms), ("ts_ms < {}", end_ms),
                        ("tenant = {}", tenant)):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))
    group = "k" if key2 == "NULL" else f"k, {key2}"
    sql = (f"SELECT {key} AS k, {key2} AS k2, {USAGE_SUMS} "
           f"FROM charges {_where(clauses)} GROUP BY {group}")
    return sql, args


#: How many unpriced models a report names (with the config lines that price them).
UNPRICED_MODELS_SHOWN = 10


def unpriced_models_sql(
    p: Placeholder, start: datetime | None, end: datetime | None, tenant: str | None,
) -> tuple[str, list[Any]]:
    """The models of unpriced calls in a report's range, most calls first."""
    clauses: list[str] = ["priced = 0"]
    args: list[Any] = []
    _range(p, start, end, tenant, clauses, args)
    sql = (f"SELECT model, COUNT(*) AS n FROM charges {_where(clauses)} "
           f"GROUP BY model ORDER BY n DESC, model LIMIT {UNPRICED_MODELS_SHOWN}")
    return sql, args


def logs_sql(
    p: Placeholder,
    columns: tuple[str, ...],
    tenant: str | None,
    user: str | None,
    model: str | None,
    limit: int,
    before: str | None,
    request_id: str | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for cond, value in (
        ("tenant = {}", tenant), ("user_id = {}", user), ("model = {}", model),
        ("request_id = {}", request_id), ("id < {}", before),
    ):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))
    args.append(max(0, int(limit)))
    sql = (
        f"SELECT {', '.join(columns)} FROM charges {_where(clauses)} "
        f"ORDER BY id DESC LIMIT {p(len(args))}"
    )
    return sql, args
