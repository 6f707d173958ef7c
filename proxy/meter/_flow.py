"""One REST call's way through faregate, as a single object passed stage to stage.

Forwarding fills a `Flow` (who, what, when, what came back); the biller
turns it into a priced charge and a ledger record. Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faregate.pricing import Usage

from .._ids import new_request_id
from ..caller import Caller, KeyScrubber
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
    reserved: Usage | None = None  # the worst case the admission holds (for estimates)
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    batch: tuple[str, str | None] | None = None  # a Batch API call (rest batch_route)
    secret_ref: str | None = None  # the call came with an ephemeral key minted via faregate
    follow: str | None = None  # the pending background response this call reads or cancels
    billed: bool = False  # the biller has settled this call
    hold_open: bool = False  # its admission outlives the call (a pending background response)
    conversation_id: str | None = None  # the Responses conversation the call runs in
    captured_request: bytes | None = None  # bodies kept for opt-in capture
    captured_response: bytearray | None = None
    charge_id: str | None = None  # the ledger id its start marker and its charge share
    scrubber: KeyScrubber | None = None  # the upstream key's fragments, out of error answers
    route: Any = None  # the object it creates, lists or uses (objects.ObjectRoute)
    answer: bytearray | None = None  # the answer's bytes, kept (bounded) to read object ids
    location: str | None = None  # the answer's Location header (a Realtime call's id)
    store: bool | None = None  # the body's `store` (whether what it creates can be read back)

    @property
    def model(self) -> str | None:
        return self.reading.model or self.facts.model

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
