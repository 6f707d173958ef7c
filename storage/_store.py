"""Choosing a backend from the `[storage] url`.

Both backends have the same async surface and apply migrations when opened,
so the ledger above them does not care which one it talks to. Writes
(`insert`, `fetch` for INSERT … RETURNING, leases, retention) and reads
(`read`, `snapshot`) take different connections on both: a report never
waits for, nor delays, a batch of charges.
"""

from __future__ import annotations

from typing import Any, AsyncContextManager, Mapping, Protocol, Sequence

from ._kinds import Row
from ._outage import describe_failure, postgres_address


class View(Protocol):
    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Store(Protocol):
    dialect: str
    where: str  # "SQLite at ./faregate.db", "PostgreSQL at host:5432, database …" (no password)

    async def insert(self, rows_by_kind: Mapping[str, Sequence[Row]]) -> int: ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def snapshot(self) -> AsyncContextManager[View]: ...

    def placeholder(self, i: int) -> str: ...

    async def lease(self, scope: str, period: str, key: str, want: int, limit: int, seed: int,
                    now_ms: int) -> int: ...

    async def unlease(self, scope: str, period: str, key: str, amount: int,
                      now_ms: int) -> None: ...

    async def merge_rollups(self, rows: Sequence[Row], mark: str, value: str) -> bool: ...

    async def expire(self, horizon_ms: int) -> None: ...

    async def maintain(self, now_ms: int) -> None: ...
    async def hold_slots(self, scope: str, holder: str, count: int, limit: int, now_ms: int,
                         ttl_ms: int) -> bool: ...

    async def renew_slots(self, holder: str, now_ms: int, ttl_ms: int) -> None: ...

    async def close(self) -> None: ...


class LedgerUnavailable(RuntimeError):
    """The database could not be opened; the message says which, where and why."""


def store_address(url: str) -> str:
    """Which backend at which address a `[storage] url` names (never its password)."""
    if url.startswith("sqlite:///"):
        return f"SQLite at {url[len('sqlite:///'):]}"
    return f"PostgreSQL at {postgres_address(url)}"


async def open_store(url: str, *, upto: int | None = None) -> Store:
    """Connect and migrate. Raises `LedgerUnavailable` if the database cannot be reached.

    `upto` stops the migrations at that version, to build an older schema
    for upgrade tests and benchmarks; such a store is for reading only.
    """
    if url.startswith("sqlite:///"):
        from ._sqlite import SqliteStore as opener
    elif url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore as opener  # type: ignore[assignment]
    else:
        raise ValueError("[storage] url must be sqlite:///PATH or postgresql://…")
    try:
        return await opener.open(url, upto=upto)
    except ValueError:
        raise
    except Exception as exc:
        raise LedgerUnavailable(describe_failure(store_address(url), exc)) from exc
