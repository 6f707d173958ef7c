"""One ledger row: a charge as the ledger stores it.

The ledger does not know about pricing or HTTP; the proxy turns each priced
call into a `LedgerRecord`. Money is integer nano-USD (1e-9 USD), so sums in
SQL are exact integers on every backend.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

#: Token columns, in the same order as `faregate.pricing.TOKEN_CLASSES`.
TOKEN_COLUMNS: tuple[str, ...] = (
    "input",
    "cached_input",
    "output",
    "audio_input",
    "cached_audio_input",
    "audio_output",
    "image_input",
    "cached_image_input",
    "image_output",
)


def new_id() -> str:
    """A unique, roughly time-ordered record id (uuid7-style hex)."""
    # 48-bit millisecond timestamp + 80 random bits: ids sort by time, and
    # replaying the same record twice is idempotent on the primary key.
    ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    rand = uuid.uuid4().int & ((1 << 80) - 1)
    return f"{(ms << 80) | rand:032x}"


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """A single charge. `tokens` maps TOKEN_COLUMNS names to counts."""

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
