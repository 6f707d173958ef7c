"""The ledger's side of reconciling with the provider's bill.

A separate, small addition to the ledger (issue 23): the daily totals that
reconciliation compares with the provider's costs (per UTC day, tenant and
key, with the counts of charges whose amount faregate is unsure of), the
same per line item, the Realtime calls and ephemeral keys faregate created
but could not meter (`delegated`), stored reconciliation results and the
provider-side limit changes faregate made. Dialect-neutral SQL except where
a JSON column is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

import orjson

from ._periods import epoch_ms
from ._queries import Placeholder
from ._record import new_id

if TYPE_CHECKING:
    from ._store import Store

#: Flags whose charges reconciliation names as a reason for drift.
UNCONFIRMED_FLAG = "unconfirmed"  # priced from a rate the price table marks unconfirmed
FROM_PROVIDER_FLAG = "from_provider"  # the provider's cost, attributed by reconciliation
REALTIME_ENDPOINTS = "(endpoint LIKE '/v1/realtime%' OR endpoint LIKE '/v1/live%')"


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def _flagged(flag: str) -> str:
    return f"flags LIKE '%{flag}%'"


# -- records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DelegatedEvent:
    """A WebRTC/SIP call or an ephemeral key faregate created (`created`), or the first
    session through faregate that used it (`seen`)."""

    ref: str  # call id (rtc_…) or "ek:<digest>" of a minted key, never the key
    event: str  # "created" | "seen"
    kind: str  # "call" | "secret"
    session_id: str  # created: the delegated session row; seen: the session that metered it
    tenant: str
    model: str
    user: str | None = None
    key_id: str | None = None
    project: str | None = None  # the creator's OpenAI project, if mapped
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    expires_at: datetime | None = None

    @property
    def id(self) -> str:
        return f"{self.event}:{self.ref}"


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A provider-side hard monthly limit set (or attempted) by `sync-limits`."""

    project: str
    tenants: tuple[str, ...]
    old_cents: int | None
    new_cents: int
    result: str  # "applied" | "failed"
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    id: str = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One UTC day and group: faregate's ledger beside the provider's cost."""

    day: date
    grouping: str  # project | api_key | line_item
    group: str
    ledger_nanos: int
    provider_nanos: int
    notes: tuple[str, ...] = ()
    final: bool = True  # the provider's day is final
    within: bool = True  # |drift| within the tolerance
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def drift_nanos(self) -> int:
        """Provider minus ledger: positive when the bill is higher than faregate saw."""
        return self.provider_nanos - self.ledger_nanos

    @property
    def drift_ratio(self) -> Decimal | None:
        """Drift as a share of the provider's cost; None when the provider billed nothing."""
        if self.provider_nanos == 0:
            return None if self.ledger_nanos else Decimal(0)
        return Decimal(self.drift_nanos) / Decimal(self.provider_nanos)

    @property
    def id(self) -> str:
        return f"{self.day.isoformat()}|{self.grouping}|{self.group}"


@dataclass(frozen=True, slots=True)
class DailyTotal:
    """The ledger's charges of one UTC day, tenant and key, with reasons to doubt them."""

    day: date
    tenant: str
    key_id: str | None
    cost_nanos: int
    charges: int = 0
    unpriced: int = 0
    estimated: int = 0
    estimated_nanos: int = 0
    unconfirmed: int = 0
    unconfirmed_nanos: int = 0
    from_provider_nanos: int = 0
    realtime_nanos: int = 0  # metered Realtime/Live sessions (not from_provider)


@dataclass(frozen=True, slots=True)
class LineItemTotal:
    """The ledger's cost of one UTC day, tenant, model and price class."""

    day: date
    tenant: str
    model: str
    item: str  # breakdown class: input, cached_input, output, tool:web_search, ...
    nanos: int


@dataclass(frozen=True, slots=True)
class DelegatedSession:
    """A created call or key, and when (if ever) a session through faregate used it."""

    ref: str
    kind: str
    session_id: str
    tenant: str
    user: str | None
    key_id: str | None
    model: str
    project: str | None
    created_ms: int
    expires_ms: int | None
    seen_ms: int | None


# -- rows of the journalled kinds --------------------------------------------------------

DELEGATED_COLUMNS: tuple[str, ...] = (
    "id", "ref", "event", "kind", "session_id", "tenant", "user_id", "key_id", "model",
    "project", "at", "at_ms", "expires_ms",
)


def delegated_to_row(e: DelegatedEvent) -> tuple[Any, ...]:
    at = e.at.astimezone(timezone.utc)
    return (e.id, e.ref, e.event, e.kind, e.session_id, e.tenant, e.user, e.key_id,
            e.model[:128], e.project, at.isoformat(), epoch_ms(at),
            epoch_ms(e.expires_at) if e.expires_at is not None else None)


def delegated_from_row(row: Sequence[Any]) -> DelegatedEvent:
    v = dict(zip(DELEGATED_COLUMNS, row))
    expires = v["expires_ms"]
    return DelegatedEvent(
        ref=v["ref"], event=v["event"], kind=v["kind"], session_id=v["session_id"],
        tenant=v["tenant"], model=v["model"], user=v["user_id"], key_id=v["key_id"],
        project=v["project"], at=datetime.fromisoformat(v["at"]),
        expires_at=None if expires is None else datetime.fromtimestamp(
            int(expires) / 1000, timezone.utc))


LIMIT_CHANGE_COLUMNS: tuple[str, ...] = (
    "id", "project", "tenants", "old_cents", "new_cents", "result", "error", "at", "at_ms",
)


def limit_change_to_row(c: LimitChange) -> tuple[Any, ...]:
    at = c.at.astimezone(timezone.utc)
    return (c.id, c.project, ",".join(c.tenants), c.old_cents, int(c.new_cents), c.result,
            c.error, at.isoformat(), epoch_ms(at))


def limit_change_from_row(row: Sequence[Any]) -> LimitChange:
    v = dict(zip(LIMIT_CHANGE_COLUMNS, row))
    return LimitChange(
        project=v["project"], tenants=tuple(t for t in v["tenants"].split(",") if t),
        old_cents=None if v["old_cents"] is None else int(v["old_cents"]),
        new_cents=int(v["new_cents"]), result=v["result"], error=v["error"],
        at=datetime.fromisoformat(v["at"]), id=v["id"])


# -- queries -------------------------------------------------------------------------------

_RECONCILE_COLUMNS = ("id", "day", "grouping", "grp", "ledger_nanos", "provider_nanos",
                      "drift_nanos", "drift_ratio", "notes", "final", "within", "checked_at",
                      "checked_ms")


def _reconcile_row(r: Reconciliation) -> tuple[Any, ...]:
    ratio = r.drift_ratio
    checked = r.checked_at.astimezone(timezone.utc)
    return (r.id, r.day.isoformat(), r.grouping, r.group, r.ledger_nanos, r.provider_nanos,
            r.drift_nanos, None if ratio is None else format(ratio, "f"),
            orjson.dumps(list(r.notes)).decode(), int(r.final), int(r.within),
            checked.isoformat(), epoch_ms(checked))


def _from_reconcile_row(row: Sequence[Any]) -> Reconciliation:
    v = dict(zip(_RECONCILE_COLUMNS, row))
    notes = orjson.loads(v["notes"] or "[]")
    return Reconciliation(
        day=date.fromisoformat(v["day"]), grouping=v["grouping"], group=v["grp"],
        ledger_nanos=int(v["ledger_nanos"]), provider_nanos=int(v["provider_nanos"]),
        notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
        final=bool(v["final"]), within=bool(v["within"]),
        checked_at=datetime.fromisoformat(v["checked_at"]))


def _daily_sql(p: Placeholder) -> str:
    unconfirmed, provider = _flagged(UNCONFIRMED_FLAG), _flagged(FROM_PROVIDER_FLAG)
    return (
        "SELECT substr(ts, 1, 10), tenant, key_id, SUM(cost_nanos), COUNT(*), "
        "SUM(CASE WHEN priced = 0 THEN 1 ELSE 0 END), SUM(estimated), "
        "SUM(CASE WHEN estimated = 1 THEN cost_nanos ELSE 0 END), "
        f"SUM(CASE WHEN {unconfirmed} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {unconfirmed} THEN cost_nanos ELSE 0 END), "
        f"SUM(CASE WHEN {provider} THEN cost_nanos ELSE 0 END), "
        f"SUM(CASE WHEN {REALTIME_ENDPOINTS} AND NOT {provider} THEN cost_nanos ELSE 0 END) "
        f"FROM charges WHERE ts_ms >= {p(1)} AND ts_ms < {p(2)} "
        "GROUP BY substr(ts, 1, 10), tenant, key_id"
    )


def _line_items_sql(p: Placeholder, dialect: str) -> str:
    if dialect == "postgresql":
        each, value = "jsonb_each_text(c.breakdown::jsonb) j", "(j.value)::bigint"
    else:
        each, value = "json_each(c.breakdown) j", "j.value"
    return (f"SELECT substr(c.ts, 1, 10), c.tenant, c.model, j.key, SUM({value}) "
            f"FROM charges c, {each} WHERE c.ts_ms >= {p(1)} AND c.ts_ms < {p(2)} "
            "GROUP BY substr(c.ts, 1, 10), c.tenant, c.model, j.key")


def _delegated_sql(p: Placeholder) -> str:
    return (
        "SELECT c.ref, c.kind, c.session_id, c.tenant, c.user_id, c.key_id, c.model, "
        "c.project, c.at_ms, c.expires_ms, "
        "(SELECT MIN(s.at_ms) FROM delegated s WHERE s.ref = c.ref AND s.event = 'seen') "
        f"FROM delegated c WHERE c.event = 'created' AND c.at_ms >= {p(1)} "
        f"AND c.at_ms < {p(2)} ORDER BY c.at_ms, c.ref"
    )


def _upsert_sql(p: Placeholder, rows: int) -> str:
    width = len(_RECONCILE_COLUMNS)
    values = ", ".join(
        "(" + ", ".join(p(r * width + i + 1) for i in range(width)) + ")" for r in range(rows))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _RECONCILE_COLUMNS[4:])
    return (f"INSERT INTO reconciliations ({', '.join(_RECONCILE_COLUMNS)}) VALUES {values} "
            f"ON CONFLICT (id) DO UPDATE SET {updates}")


class ProviderQueries:
    """Ledger reads and writes for reconciliation (mixed into `LedgerQueries`)."""

    _store: "Store"

    async def daily_totals(self, first: date, last: date) -> list[DailyTotal]:
        """Per UTC day (first..last inclusive), tenant and key: the ledger's cost and the
        charges it is unsure of (unpriced, estimated, unconfirmed rates), the cost
        attributed from the provider and the metered Realtime cost."""
        bounds = [epoch_ms(_day_start(first)), epoch_ms(_day_start(last + timedelta(days=1)))]
        rows = await self._store.fetch(_daily_sql(self._store.placeholder), bounds)
        return [DailyTotal(date.fromisoformat(r[0]), r[1], r[2],
                           *(int(x or 0) for x in r[3:])) for r in rows]

    async def line_item_totals(self, first: date, last: date) -> list[LineItemTotal]:
        """Per UTC day, tenant, model and breakdown class: the ledger's cost."""
        bounds = [epoch_ms(_day_start(first)), epoch_ms(_day_start(last + timedelta(days=1)))]
        store = self._store
        rows = await store.fetch(_line_items_sql(store.placeholder, store.dialect), bounds)
        return [LineItemTotal(date.fromisoformat(r[0]), r[1], r[2], r[3], int(r[4] or 0))
                for r in rows]

    async def delegated_sessions(self, since: datetime, until: datetime
                                 ) -> list[DelegatedSession]:
        """Calls and keys created in [since, until), each with its first sighting."""
        rows = await self._store.fetch(_delegated_sql(self._store.placeholder),
                                       [epoch_ms(since), epoch_ms(until)])
        return [DelegatedSession(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], int(r[8]),
                                 None if r[9] is None else int(r[9]),
                                 None if r[10] is None else int(r[10])) for r in rows]

    async def save_reconciliations(self, results: Sequence[Reconciliation]) -> None:
        """Store results, replacing earlier ones for the same day, grouping and group."""
        for start in range(0, len(results), 200):
            chunk = results[start:start + 200]
            args = [v for r in chunk for v in _reconcile_row(r)]
            await self._store.fetch(_upsert_sql(self._store.placeholder, len(chunk)), args)

    async def reconciliations(self, grouping: str, first: date | None = None,
                              last: date | None = None, limit: int = 10_000
                              ) -> list[Reconciliation]:
        """Stored results of one grouping between two days (inclusive), oldest first."""
        p = self._store.placeholder
        args: list[Any] = [grouping]
        sql = f"SELECT {', '.join(_RECONCILE_COLUMNS)} FROM reconciliations WHERE grouping = {p(1)}"
        for op, day in ((">=", first), ("<=", last)):
            if day is not None:
                args.append(day.isoformat())
                sql += f" AND day {op} {p(len(args))}"
        args.append(max(1, int(limit)))
        sql += f" ORDER BY day, grp LIMIT {p(len(args))}"
        return [_from_reconcile_row(r) for r in await self._store.fetch(sql, args)]

    async def limit_changes(self, limit: int = 100) -> list[LimitChange]:
        """Provider-side limit changes faregate made, newest first."""
        p = self._store.placeholder
        rows = await self._store.fetch(
            f"SELECT {', '.join(LIMIT_CHANGE_COLUMNS)} FROM limit_changes "
            f"ORDER BY at_ms DESC LIMIT {p(1)}", [max(1, int(limit))])
        return [limit_change_from_row(r) for r in rows]
