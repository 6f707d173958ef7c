"""One REST call's way through faregate, as a single object passed stage to stage.

Forwarding fills a `Flow` (who, what, when, what came back); the biller
turns it into a priced charge and a ledger record. Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._ids import new_request_id
from ..caller import Caller
from ._endpoints import Endpoint
from ._facts import RequestFacts
from ._reading import Reading

if TYPE_CHECKING:
    from ..quota import Admission


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
    reading: Reading = field(default_factory=Reading)  # what the answer reported
    cut_short: bool = False  # client left or upstream broke mid-body
    admission: "Admission | None" = None  # held while the call is in flight
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    batch: tuple[str, str | None] | None = None  # a Batch API call (rest batch_route)
    billed: bool = False  # the biller has settled this call
    conversation_id: str | None = None  # the Responses conversation the call runs in
    captured_request: bytes | None = None  # bodies kept for opt-in capture
    captured_response: bytearray | None = None

    @property
    def model(self) -> str | None:
        return self.reading.model or self.facts.model

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
