"""Choosing a backend from the `[storage] url`.

Both backends have the same async surface (`insert`, `usage`, `logs`,
`close`) and apply migrations when opened, so the ledger above them does not
care which one it talks to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

from ._kinds import Row
from ._record import LedgerRecord
from ._report import UsageReport


class Store(Protocol):
    dialect: str

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

    async def hold_slots(self, scope: str, holder: str, count: int, limit: int, now_ms: int,
                         ttl_ms: int) -> bool: ...

    async def renew_slots(self, holder: str, now_ms: int, ttl_ms: int) -> None: ...

    async def close(self) -> None: ...


async def open_store(url: str) -> Store:
    """Connect and migrate. Raises if the database cannot be reached."""
    if url.startswith("sqlite:///"):
        from ._sqlite import SqliteStore

        return await SqliteStore.open(url)
    if url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ValueError("[storage] url must be sqlite:///PATH or postgresql://…")
