"""Kinds of ledger entry: which table a record goes to and how it becomes a row.

The journal, the queue and both database backends carry *entries* — a kind
tag plus a flat row of primitives (str/int/float/None) — never a record
type they would have to know. A new record type (e.g. Realtime session rows)
is one more `Kind` here and one more migration; the writer, the journal and
replay need no change. Rows are the exact column values, so the journal
replays without re-deriving anything and both backends store identical data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Sequence

import orjson

from ._periods import epoch_ms, utc_stamp
from ._provider import (
    DELEGATED_COLUMNS,
    LIMIT_CHANGE_COLUMNS,
    DelegatedEvent,
    LimitChange,
    delegated_from_row,
    delegated_to_row,
    limit_change_from_row,
    limit_change_to_row,
)
from ._record import (
    TOKEN_COLUMNS,
    AlertRecord,
    BackgroundEvent,
    BatchEvent,
    LedgerRecord,
    ObjectRecord,
    SessionRecord,
)
from ._sessions import (
    SESSION_COLUMNS,
    decode_tags,
    encode_tags,
    from_session_row,
    to_session_row,
)

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Kind:
    """One record type: its journal tag, its table and its row mapping."""

    name: str  # the tag written in the journal; never rename a shipped one
    table: str
    columns: tuple[str, ...]  # first column is the unique id (ON CONFLICT target)
    record_type: type
    to_row: Callable[[Any], Row]
    from_row: Callable[[Sequence[Any]], Any]
    #: Values of columns added after the kind first shipped, in column order:
    #: a journal written by an older faregate has shorter rows, padded on replay.
    added: tuple[Any, ...] = ()

    def fit(self, row: Row) -> Row:
        """A row as the current columns expect it (old journal rows padded)."""
        missing = len(self.columns) - len(row)
        if missing <= 0:
            return row
        if missing > len(self.added):
            raise ValueError(f"a {self.name} row of {len(row)} values cannot be completed")
        return (*row, *self.added[len(self.added) - missing:])


CHARGE_COLUMNS: tuple[str, ...] = (
    "id", "ts", "ts_ms", "tenant", "user_id", "key_id", "model", "endpoint", "request_id",
    "status", *(f"{c}_tokens" for c in TOKEN_COLUMNS), "reasoning_tokens", "seconds_ms",
    "characters", "images", "cost_nanos", "breakdown", "price_version", "priced",
    "estimated", "latency_ms", "flags", "session_id", "response_id", "savings_nanos",
    "billed_nanos", "tags", "conversation_id",
)


def charge_to_row(r: LedgerRecord) -> Row:
    iso, ts_ms = utc_stamp(r.ts)
    tokens = r.tokens
    return (
        r.id, iso, ts_ms, r.tenant,
        r.user, r.key_id, r.model, r.endpoint, r.request_id, int(r.status),
        *[int(tokens.get(c, 0)) for c in TOKEN_COLUMNS], int(r.reasoning_tokens),
        int((Decimal(r.seconds) * 1000).to_integral_value()) if r.seconds else 0,
        int(r.characters),
        int(r.images), int(r.cost_nanos), orjson.dumps(r.breakdown).decode(), r.price_version,
        int(r.priced), int(r.estimated), float(r.latency_ms), ",".join(r.flags),
        r.session_id, r.response_id, int(r.savings_nanos),
        None if r.billed_nanos is None else int(r.billed_nanos), encode_tags(r.tags),
        r.conversation_id,
    )


def charge_from_row(row: Sequence[Any]) -> LedgerRecord:
    v = dict(zip(CHARGE_COLUMNS, row))
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
        latency_ms=float(v["latency_ms"]),
        flags=tuple(f for f in (v["flags"] or "").split(",") if f),
        session_id=v["session_id"],
        response_id=v["response_id"],
        savings_nanos=int(v["savings_nanos"] or 0),
        billed_nanos=None if v["billed_nanos"] is None else int(v["billed_nanos"]),
        tags=decode_tags(v["tags"]),
        conversation_id=v["conversation_id"],
    )


ALERT_COLUMNS: tuple[str, ...] = (
    "id", "scope", "period", "period_start", "threshold", "level", "limit_nanos",
    "spent_nanos", "projected_nanos", "at", "at_ms",
)


def alert_to_row(a: AlertRecord) -> Row:
    at = a.at.astimezone(timezone.utc)
    return (a.id, a.scope, a.period, a.period_start, a.threshold, a.level, int(a.limit_nanos),
            int(a.spent_nanos), int(a.projected_nanos), at.isoformat(), epoch_ms(at))


def alert_from_row(row: Sequence[Any]) -> AlertRecord:
    v = dict(zip(ALERT_COLUMNS, row))
    v.pop("at_ms")
    v["at"] = datetime.fromisoformat(v["at"])
    return AlertRecord(**v)


BATCH_COLUMNS: tuple[str, ...] = (
    "id", "batch_id", "event", "tenant", "user_id", "key_id", "tier", "tags", "endpoint",
    "file_id", "at", "at_ms",
)


def batch_to_row(b: BatchEvent) -> Row:
    at = b.at.astimezone(timezone.utc)
    return (b.id, b.batch_id, b.event, b.tenant, b.user, b.key_id, b.tier, encode_tags(b.tags),
            b.endpoint, b.file_id, at.isoformat(), epoch_ms(at))


def batch_from_row(row: Sequence[Any]) -> BatchEvent:
    v = dict(zip(BATCH_COLUMNS, row))
    return BatchEvent(
        id=v["id"], batch_id=v["batch_id"], event=v["event"], tenant=v["tenant"],
        user=v["user_id"], key_id=v["key_id"], tier=v["tier"], tags=decode_tags(v["tags"]),
        endpoint=v["endpoint"] or "", file_id=v["file_id"], at=datetime.fromisoformat(v["at"]))


BACKGROUND_COLUMNS: tuple[str, ...] = (
    "id", "response_id", "event", "tenant", "user_id", "key_id", "tier", "tags", "model",
    "request_id", "hold_nanos", "reserved", "at", "at_ms",
)


def background_to_row(b: BackgroundEvent) -> Row:
    at = b.at.astimezone(timezone.utc)
    return (b.id, b.response_id, b.event, b.tenant, b.user, b.key_id, b.tier,
            encode_tags(b.tags), b.model, b.request_id, int(b.hold_nanos),
            orjson.dumps(b.reserved).decode(), at.isoformat(), epoch_ms(at))


def background_from_row(row: Sequence[Any]) -> BackgroundEvent:
    v = dict(zip(BACKGROUND_COLUMNS, row))
    return BackgroundEvent(
        id=v["id"], response_id=v["response_id"], event=v["event"], tenant=v["tenant"],
        user=v["user_id"], key_id=v["key_id"], tier=v["tier"], tags=decode_tags(v["tags"]),
        model=v["model"] or "", request_id=v["request_id"] or "",
        hold_nanos=int(v["hold_nanos"] or 0), reserved=orjson.loads(v["reserved"] or "{}"),
        at=datetime.fromisoformat(v["at"]))
OBJECT_COLUMNS: tuple[str, ...] = ("id", "kind", "tenant", "user_id", "key_id", "created_at",
                                   "created_ms")


def object_to_row(o: ObjectRecord) -> Row:
    return (o.id, o.kind, o.tenant, o.user, o.key_id, *utc_stamp(o.at))


def object_from_row(row: Sequence[Any]) -> ObjectRecord:
    v = dict(zip(OBJECT_COLUMNS, row))
    return ObjectRecord(id=v["id"], kind=v["kind"], tenant=v["tenant"], user=v["user_id"],
                        key_id=v["key_id"], at=datetime.fromisoformat(v["created_at"]))


CHARGES = Kind("charge", "charges", CHARGE_COLUMNS, LedgerRecord, charge_to_row,
               charge_from_row, added=(0, None, "{}", None))
# added: 0006 savings, billed; 0008 tags; 0040 conversation_id
#: The charges table's columns before migration 0040 (an older ledger, as upgrades meet it).
CHARGE_COLUMNS_BEFORE_0040 = CHARGE_COLUMNS[:CHARGE_COLUMNS.index("conversation_id")]

SESSIONS = Kind("session", "sessions", SESSION_COLUMNS, SessionRecord, to_session_row,
                from_session_row, added=("{}", 0))  # 0008 tags, tool_calls
ALERTS = Kind("alert", "alerts", ALERT_COLUMNS, AlertRecord, alert_to_row, alert_from_row)
BATCHES = Kind("batch", "batches", BATCH_COLUMNS, BatchEvent, batch_to_row, batch_from_row)
DELEGATED = Kind("delegated", "delegated", DELEGATED_COLUMNS, DelegatedEvent, delegated_to_row,
                 delegated_from_row)  # 0050
LIMIT_CHANGES = Kind("limit_change", "limit_changes", LIMIT_CHANGE_COLUMNS, LimitChange,
                     limit_change_to_row, limit_change_from_row)  # 0050
BACKGROUND = Kind("background", "background_responses", BACKGROUND_COLUMNS, BackgroundEvent,
                  background_to_row, background_from_row)  # 0020
OBJECTS = Kind("object", "objects", OBJECT_COLUMNS, ObjectRecord, object_to_row,
               object_from_row)  # 0030

#: Every kind by journal tag. Add new kinds here (and a migration for their table).
KINDS: dict[str, Kind] = {k.name: k for k in (CHARGES, SESSIONS, ALERTS, BATCHES, DELEGATED,
                                               LIMIT_CHANGES, BACKGROUND, OBJECTS)}
_BY_TYPE: dict[type, Kind] = {k.record_type: k for k in KINDS.values()}


def kind_of(record: Any) -> Kind:
    try:
        return _BY_TYPE[type(record)]
    except KeyError:
        raise TypeError(f"the ledger has no kind for {type(record).__name__}") from None
