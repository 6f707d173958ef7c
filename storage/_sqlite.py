"""SQLite backend: synchronous, confined to the ledger's one worker thread.

WAL mode, one connection, batches inserted with `executemany` inside one
transaction, `INSERT OR IGNORE` so replaying a record id is a no-op. The
async `Ledger` calls into this from its executor, never from the event loop.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from ._record import TOKEN_COLUMNS, LedgerRecord, SessionRecord
from ._report import GROUPS, UsageReport, UsageRow
from ._sessions import (
    REBUILD_SELECT,
    SESSION_COLUMNS,
    from_session_row,
    rebuilt_session,
    to_session_row,
)

COLUMNS: tuple[str, ...] = (
    "id", "ts", "ts_ms", "tenant", "user_id", "key_id", "model", "endpoint", "request_id",
    "status", *(f"{c}_tokens" for c in TOKEN_COLUMNS), "reasoning_tokens", "seconds_ms",
    "characters", "images", "cost_nanos", "breakdown", "price_version", "priced",
    "estimated", "latency_ms", "flags", "session_id", "response_id",
)

_GROUP_SQL = {
    "tenant": "tenant",
    "user": "user_id",
    "model": "model",
    "endpoint": "endpoint",
    "day": "substr(ts, 1, 10)",
}


def sqlite_path(url: str) -> str:
    """`sqlite:///rel.db` -> 'rel.db'; `sqlite:////abs.db` -> '/abs.db'."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite:///") :]
    if not path:
        raise ValueError("sqlite URL has no path")
    return path


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of every shipped migration, in order."""
    out = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def split_sql(sql: str) -> list[str]:
    """Statements of a migration file (no semicolons inside our SQL)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def to_row(r: LedgerRecord) -> tuple[Any, ...]:
    ts = r.ts.astimezone(timezone.utc)
    return (
        r.id, ts.isoformat(timespec="microseconds"), int(ts.timestamp() * 1000), r.tenant,
        r.user, r.key_id, r.model, r.endpoint, r.request_id, r.status,
        *(int(r.tokens.get(c, 0)) for c in TOKEN_COLUMNS), r.reasoning_tokens,
        int((Decimal(r.seconds) * 1000).to_integral_value()), r.characters, r.images,
        r.cost_nanos, orjson.dumps(r.breakdown).decode(), r.price_version, int(r.priced),
        int(r.estimated), float(r.latency_ms), ",".join(r.flags), r.session_id, r.response_id,
    )


def from_row(row: Sequence[Any]) -> LedgerRecord:
    v = dict(zip(COLUMNS, row))
    return LedgerRecord(
        id=v["id"],
        ts=datetime.fromisoformat(v["ts"]),
        tenant=v["tenant"],
        user=v["user_id"],
        key_id=v["key_id"],
        model=v["model"],
        endpoint=v["endpoint"],
        request_id=v["request_id"],
        status=v["status"],
        tokens={c: v[f"{c}_tokens"] for c in TOKEN_COLUMNS},
        reasoning_tokens=v["reasoning_tokens"],
        seconds=Decimal(v["seconds_ms"]).scaleb(-3),
        characters=v["characters"],
        images=v["images"],
        cost_nanos=v["cost_nanos"],
        breakdown=orjson.loads(v["breakdown"] or "{}"),
        price_version=v["price_version"],
        priced=bool(v["priced"]),
        estimated=bool(v["estimated"]),
        latency_ms=v["latency_ms"],
        flags=tuple(f for f in (v["flags"] or "").split(",") if f),
        session_id=v["session_id"],
        response_id=v["response_id"],
    )


class SqliteStore:
    """The ledger's tables in one SQLite file. Not thread-safe: one thread only."""

    def __init__(self, url: str):
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._insert = (
            f"INSERT OR IGNORE INTO charges ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in COLUMNS)})"
        )
        self._insert_session = (
            f"INSERT OR REPLACE INTO sessions ({', '.join(SESSION_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})"
        )

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now."""
        c = self.conn
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {v for (v,) in c.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, sql in migrations():
            if version in done:
                continue
            c.execute("BEGIN IMMEDIATE")
            try:
                for statement in split_sql(sql):
                    c.execute(statement)
                c.execute(
                    "INSERT OR IGNORE INTO schema_migrations VALUES (?, ?)",
                    (version, datetime.now(timezone.utc).isoformat()),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            applied.append(version)
        return applied

    def insert(self, records: Iterable[LedgerRecord | SessionRecord]) -> int:
        charges, sessions = [], []
        for r in records:
            if isinstance(r, SessionRecord):
                sessions.append(to_session_row(r))
            else:
                charges.append(to_row(r))
        c = self.conn
        c.execute("BEGIN")
        try:
            c.executemany(self._insert, charges)
            if sessions:
                c.executemany(self._insert_session, sessions)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(charges) + len(sessions)

    def sessions(
        self, tenant: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[SessionRecord]:
        clauses, args = [], []
        if tenant is not None:
            clauses.append("tenant = ?")
            args.append(tenant)
        if before is not None:
            clauses.append("id < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions {where} "
               "ORDER BY started_ms DESC, id DESC LIMIT ?")
        return [from_session_row(r) for r in self.conn.execute(sql, [*args, int(limit)])]

    def session(self, session_id: str) -> SessionRecord | None:
        row = self.conn.execute(
            f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return from_session_row(row) if row else None

    def rebuild_sessions(self) -> int:
        """Write session rows for sessions cut off by a crash (from their charges)."""
        rebuilt = [rebuilt_session(r) for r in self.conn.execute(REBUILD_SELECT).fetchall()]
        if rebuilt:
            self.insert(rebuilt)
        return len(rebuilt)

    def usage(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
        tenant: str | None = None,
    ) -> UsageReport:
        if group_by not in GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
        where, args = _range(start, end, tenant)
        key = _GROUP_SQL[group_by]
        sums = ", ".join(f"SUM({c}_tokens)" for c in TOKEN_COLUMNS)
        sql = (
            f"SELECT {key} AS k, COUNT(*), {sums}, SUM(reasoning_tokens), SUM(seconds_ms), "
            "SUM(characters), SUM(images), SUM(cost_nanos), "
            "SUM(CASE WHEN priced = 0 THEN 1 ELSE 0 END), SUM(estimated) "
            f"FROM charges {where} GROUP BY k"
        )
        rows = [UsageRow.from_sums(r[0], r[1:]) for r in self.conn.execute(sql, args)]
        return UsageReport.of(rows, group_by)

    def logs(
        self,
        tenant: str | None = None,
        user: str | None = None,
        model: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[LedgerRecord]:
        clauses, args = [], []
        for column, value in (("tenant", tenant), ("user_id", user), ("model", model)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if before is not None:
            clauses.append("id < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(COLUMNS)} FROM charges {where} ORDER BY id DESC LIMIT ?"
        return [from_row(r) for r in self.conn.execute(sql, [*args, max(0, int(limit))])]

    def close(self) -> None:
        self.conn.close()


def _range(start, end, tenant) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if start is not None:
        clauses.append("ts_ms >= ?")
        args.append(int(start.timestamp() * 1000))
    if end is not None:
        clauses.append("ts_ms < ?")
        args.append(int(end.timestamp() * 1000))
    if tenant is not None:
        clauses.append("tenant = ?")
        args.append(tenant)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args
