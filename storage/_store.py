"""Choosing a backend from the `[storage] url`.

Both backends have the same async surface (`insert`, `usage`, `logs`,
`close`) and apply migrations when opened, so the ledger above them does not
care which one it talks to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

from ._kinds import Row
from ._outage import describe_failure, postgres_address
from ._record import LedgerRecord
from ._report import UsageReport


class Store(Protocol):
    dialect: str
    where: str  # "SQLite at ./faregate.db", "PostgreSQL at host:5432, database …" (no password)

    async def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int: ...

    async def usage(
        self, start: datetime | None, end: datetime | None, group_by: str, tenant: str | None
    ) -> UsageReport: ...

    async def logs(
        self, tenant: str | None, user: str | None, model: str | None, limit: int,
        before: str | None,
    ) -> list[LedgerRecord]: ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def placeholder(self, i: int) -> str: ...

    async def lease(self, scope: str, period: str, key: str, want: int, limit: int, seed: int,
                    now_ms: int) -> int: ...

    async def unlease(self, scope: str, period: str, key: str, amount: int,
                      now_ms: int) -> None: ...

    async def close(self) -> None: ...


class LedgerUnavailable(RuntimeError):
    """The database could not be opened; the message says which, where and why."""


def store_address(url: str) -> str:
    """Which backend at which address a `[storage] url` names (never its password)."""
    if url.startswith("sqlite:///"):
        return f"SQLite at {url[len('sqlite:///'):]}"
    return f"PostgreSQL at {postgres_address(url)}"


async def open_store(url: str) -> Store:
    """Connect and migrate. Raises `LedgerUnavailable` if the database cannot be reached."""
    if url.startswith("sqlite:///"):
        from ._sqlite import SqliteStore as opener
    elif url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore as opener  # type: ignore[assignment]
    else:
        raise ValueError("[storage] url must be sqlite:///PATH or postgresql://…")
    try:
        return await opener.open(url)
    except ValueError:
        raise
    except Exception as exc:
        raise LedgerUnavailable(describe_failure(store_address(url), exc)) from exc
