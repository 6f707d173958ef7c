"""meter — what was consumed, sans-IO, and the biller that charges it.

Endpoint classification and labels, what a request body says (`RequestFacts`),
worst-case estimates for reservations, one meter per response shape (a JSON
sample, SSE streams, batch output lines, Realtime/Live frames) behind one
protocol (`ResponseMeter`: bytes in, bytes out, a `Reading` at the end), and
the `Biller` — the only place a charge is priced, recorded, settled, counted
and noted for alerts. Nothing here touches a socket.
"""

from ._biller import Account, Biller, charge_record, count_charge, observe
from ._consumed import call_usage
from ._endpoints import OTHER, Endpoint, classify, endpoint_label, session_endpoint
from ._estimate import cost_nanos, worst_case
from ._facts import RequestFacts, facts_from_json, facts_from_multipart_head, inject_include_usage
from ._flow import Flow
from ._lines import KINDS as BATCH_KINDS
from ._lines import JsonCollector, LineMeter, line_id
from ._reading import HoldLast, Metered, Reading, ResponseMeter
from ._sample import HEAD_BYTES, BodySample, JsonMeter
from ._scrub import ScrubMeter
from ._session import ClientEvent, SessionMeter
from ._shapes import response_meter
from ._sse import SseMeter

__all__ = [
    "BATCH_KINDS",
    "HEAD_BYTES",
    "OTHER",
    "Account",
    "Biller",
    "BodySample",
    "ClientEvent",
    "Endpoint",
    "Flow",
    "HoldLast",
    "JsonCollector",
    "JsonMeter",
    "LineMeter",
    "Metered",
    "Reading",
    "RequestFacts",
    "ResponseMeter",
    "ScrubMeter",
    "SessionMeter",
    "SseMeter",
    "call_usage",
    "charge_record",
    "classify",
    "cost_nanos",
    "count_charge",
    "endpoint_label",
    "facts_from_json",
    "facts_from_multipart_head",
    "inject_include_usage",
    "line_id",
    "observe",
    "response_meter",
    "session_endpoint",
    "worst_case",
]
