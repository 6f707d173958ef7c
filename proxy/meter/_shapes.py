"""Which meter an answer gets: one meter per response shape, chosen in one place.

Adding a shape means adding a meter and a line here; the edges only feed
whatever meter they are given.
"""

from __future__ import annotations

from ._call import CallMeter, call_id_from
from ..caller import KeyScrubber
from ._flow import Flow
from ._reading import HoldLast, ResponseMeter
from ._sample import JsonMeter
from ._scrub import ScrubMeter
from ._sse import SseMeter


def response_meter(flow: Flow, status: int, content_type: str, strip_usage: bool,
                   location: str | None = None, scrubber: KeyScrubber | None = None
                   ) -> ResponseMeter:
    """The meter for the answer to `flow` (status, content type and `Location` as the
    upstream sent them).

    An error answer is scrubbed of the call's upstream key (`scrubber`) on any
    endpoint; on a metered one its end also waits for the (zero-cost) record.
    """
    endpoint = flow.endpoint
    if status >= 400 and scrubber:
        return ScrubMeter(scrubber)
    if endpoint is None:  # not metered: bytes pass at once, unless an object id is read
        return HoldLast() if flow.answer is not None else ResponseMeter()
    if status >= 400:
        return HoldLast()  # recorded (at no cost): the end waits for the record
    if endpoint.kind == "realtime_call":
        return CallMeter(call_id_from(location, flow.path), flow.facts)
    if content_type == "text/event-stream":
        return SseMeter(endpoint.kind, strip_usage=strip_usage, facts=flow.facts)
    return JsonMeter(endpoint.kind, flow.facts)
