"""The meter of a call that starts a WebRTC/SIP Realtime session.

`POST /v1/realtime/calls` answers with the SDP of the upstream's side and the
call's address in `Location` (`/v1/realtime/calls/rtc_…`); accepting a SIP
call names the call in its path. Neither answer carries usage: the session's
media flows past faregate. The reading is the call id, so the call can be
recorded with its creator and matched with a sideband socket later.
"""

from __future__ import annotations

import re

from ._endpoints import sip_call_id
from ._facts import RequestFacts
from ._reading import HoldLast, Reading

_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def call_id_from(location: str | None, path: str) -> str | None:
    """The call id from the answer's `Location` (WebRTC) or the request path (SIP)."""
    found = sip_call_id(path)
    if found is None and location:
        tail = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        found = tail if _CALL_ID.fullmatch(tail) else None
    return found


class CallMeter(HoldLast):
    """Passes the answer through (its end waits for the record); reads the call id."""

    __slots__ = ("call_id", "facts")

    def __init__(self, call_id: str | None, facts: RequestFacts) -> None:
        super().__init__()
        self.call_id = call_id
        self.facts = facts

    def reading(self, complete: bool = True) -> Reading:
        return Reading(call_id=self.call_id if complete else None, model=self.facts.model)
