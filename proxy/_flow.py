"""One call's way through faregate, as a single object passed stage to stage.

Forwarding fills a `Flow` (who, what, when, what came back); metering turns
it into a priced `Charge` and a ledger record. Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from faregate.storage import random_hex

from ._endpoints import Endpoint, RequestFacts
from ._identity import Caller


def new_request_id() -> str:
    return "fg_" + random_hex(96)


@dataclass(slots=True)
class Flow:
    method: str
    path: str
    endpoint: Endpoint | None
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    facts: RequestFacts = field(default_factory=RequestFacts)
    caller: Caller | None = None
    status: int = 0
    forwarded: bool = False  # reached the point of calling the upstream
    upstream_wait: float = 0.0  # request sent -> response headers
    overhead: float = 0.0  # faregate's own time before headers reached the client
    usage: dict[str, Any] | None = None  # the provider's report, as found
    served_model: str | None = None  # model named in the response
    service_tier: str | None = None  # the tier the upstream says it applied
    tool_calls: tuple[tuple[str, int], ...] = ()  # hosted-tool fee keys and counts
    deltas: int = 0  # streamed content events seen (estimates)
    cut_short: bool = False  # client left or upstream broke mid-body
    response_bytes: int = 0
    admission: Any = None  # _quota.Admission held while the call is in flight
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    batch: tuple[str, str | None] | None = None  # a Batch API call (_batches.batch_route)
    upstream_tokens: int = 0  # estimate taken from the shared [upstream_limits] tpm
    captured_request: bytes | None = None  # bodies kept for opt-in capture
    captured_response: bytearray | None = None

    @property
    def model(self) -> str | None:
        return self.served_model or self.facts.model

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
