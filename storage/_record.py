"""One ledger row: a charge as the ledger stores it.

The ledger does not price anything or know about HTTP; the proxy turns each
priced call into a `LedgerRecord` (the token classes are pricing's). Money is
integer nano-USD (1e-9 USD), so sums in SQL are exact integers on every backend.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from faregate.pricing import TOKEN_CLASSES

#: One `<class>_tokens` column per token class, in `TOKEN_CLASSES` order: the
#: classes are pricing's, defined there once (a new class needs a migration).
TOKEN_COLUMNS: tuple[str, ...] = TOKEN_CLASSES


#: Ids must be unique, not secret: a generator seeded from the OS once per
#: process (again in a forked child) instead of a system call per id. The
#: call matters beyond its own cost: os.urandom lets go of the GIL, and the
#: ledger's writer thread may then hold it for a while.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def random_hex(bits: int) -> str:
    """`bits` random bits (a multiple of 4) as lowercase hex, zero-padded."""
    return f"{_rng.getrandbits(bits):0{bits // 4}x}"


def new_id() -> str:
    """A unique, roughly time-ordered record id (uuid7-style hex)."""
    # 48-bit millisecond timestamp + 80 random bits: ids sort by time, and
    # replaying the same record twice is idempotent on the primary key.
    return f"{time.time_ns() // 1_000_000:012x}{random_hex(80)}"


@dataclass(slots=True)
class LedgerRecord:
    """A single charge. `tokens` maps TOKEN_COLUMNS names to counts.

    Not `frozen` only because a frozen dataclass of 28 fields takes twice as
    long to build (one per call on the hot path); treat it as immutable and
    use `dataclasses.replace` for a changed copy. (Its dict fields already
    made it unhashable.)
    """

    tenant: str
    model: str
    endpoint: str  # e.g. "/v1/chat/completions"
    status: int  # upstream HTTP status (or 499/502/504 set by the proxy)
    cost_nanos: int
    id: str = field(default_factory=new_id)
    ts: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    user: str | None = None
    key_id: str | None = None  # short fingerprint of the caller's key, never the key
    request_id: str = ""
    tokens: dict[str, int] = field(default_factory=dict)
    reasoning_tokens: int = 0
    seconds: Decimal = Decimal(0)
    characters: int = 0
    images: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)  # class -> nano-USD
    price_version: str = ""
    priced: bool = True
    estimated: bool = False
    latency_ms: float = 0.0
    flags: tuple[str, ...] = ()
    session_id: str | None = None  # Realtime/Live session this charge belongs to
    response_id: str | None = None  # unique within the session
    savings_nanos: int = 0  # what cached tokens saved against the uncached price
    billed_nanos: int | None = None  # cost x (1 + tenant markup); None: billed at cost
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    conversation_id: str | None = None  # the Responses conversation the call ran in

    @property
    def billed(self) -> int:
        return self.cost_nanos if self.billed_nanos is None else self.billed_nanos


#: Why a session ended.
END_REASONS: tuple[str, ...] = (
    "client_closed",
    "upstream_closed",
    "budget_exceeded",
    "time_limit",
    "tool_call_limit",
    "error",
    "shutdown",
    "interrupted",  # rebuilt from its charges after a crash
    "delegated",  # a WebRTC/SIP call or ephemeral key: its media flows past faregate
)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Totals of one Realtime/Live session, written when it ends."""

    id: str
    tenant: str
    model: str
    endpoint: str
    started_at: datetime
    end_reason: str
    ended_at: datetime | None = None
    upstream_session_id: str | None = None
    user: str | None = None
    key_id: str | None = None
    responses: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    seconds: Decimal = Decimal(0)
    cost_nanos: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    estimated: bool = False
    flags: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    tool_calls: int = 0  # function calls the model made in this session

    @property
    def duration_s(self) -> Decimal:
        if self.ended_at is None:
            return Decimal(0)
        ms = int((self.ended_at - self.started_at).total_seconds() * 1000)
        return Decimal(ms).scaleb(-3)


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """A Batch API fact: a batch created (by whom), an output file seen, a file charged.

    `id` makes each fact happen once: the batch id for `created`,
    "file:<id>" for `output`, "charged:<id>" for `charged`.
    """

    id: str
    batch_id: str
    event: str  # "created", "output" or "charged"
    tenant: str
    user: str | None = None
    key_id: str | None = None
    tier: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    endpoint: str = ""
    file_id: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(slots=True)
class ObjectRecord:
    """An upstream object created through faregate (a stored response, a file, a
    batch, …) and the tenant it belongs to. The first record of an id wins."""

    id: str  # the upstream's object id: resp_…, conv_…, file-…, batch_…, vs_…, …
    kind: str  # response, conversation, file, batch, vector_store, container, upload, …
    tenant: str
    user: str | None = None
    key_id: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True, slots=True)
class BackgroundEvent:
    """A background response: created (pending, with the amount held) or final (charged).

    `id` makes each fact happen once: "pending:<response id>", "final:<response id>".
    """

    id: str
    response_id: str
    event: str  # "pending" or "final"
    tenant: str
    user: str | None = None
    key_id: str | None = None
    tier: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    model: str = ""
    request_id: str = ""
    hold_nanos: int = 0
    reserved: dict[str, int] = field(default_factory=dict)  # worst-case tokens by class
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A budget threshold crossed and announced (its id makes it happen once)."""

    id: str
    scope: str
    period: str
    period_start: str
    threshold: str
    level: str
    limit_nanos: int
    spent_nanos: int
    projected_nanos: int
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
