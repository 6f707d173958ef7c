"""meter — what was consumed, sans-IO, and the biller that charges it.

Endpoint classification and labels, what a request body says (`RequestFacts`,
and the shape of its input: `InputShape`), reservations and worst cases
(`estimate`, with image bounds and what earlier responses carried: `Contexts`), one meter per response shape (a JSON
sample, SSE streams, batch output lines, Realtime/Live frames) behind one
protocol (`ResponseMeter`: bytes in, bytes out, a `Reading` at the end), and
the `Biller` — the only place a charge is priced, recorded, settled, counted
and noted for alerts. Nothing here touches a socket.
"""

from ._biller import Account, Biller, charge_record, count_charge, observe
from ._consumed import call_usage
from ._endpoints import OTHER, Endpoint, classify, endpoint_label, session_endpoint
from ._context import Contexts
from ._estimate import (
    Estimate,
    affordable_output,
    cost_nanos,
    estimate,
    with_output,
    worst_nanos,
)
from ._facts import RequestFacts, facts_from_json, facts_from_multipart_head, inject_include_usage
from ._flow import Flow
from ._images import image_tokens
from ._inputs import InputShape, input_shape
from ._lines import KINDS as BATCH_KINDS
from ._lines import JsonCollector, LineMeter, line_id
from ._reading import HoldLast, Metered, Reading, ResponseMeter
from ._sample import HEAD_BYTES, BodySample, JsonMeter
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
    "Contexts",
    "Endpoint",
    "Estimate",
    "Flow",
    "HoldLast",
    "InputShape",
    "JsonCollector",
    "JsonMeter",
    "LineMeter",
    "Metered",
    "Reading",
    "RequestFacts",
    "ResponseMeter",
    "SessionMeter",
    "SseMeter",
    "affordable_output",
    "call_usage",
    "charge_record",
    "classify",
    "cost_nanos",
    "count_charge",
    "endpoint_label",
    "estimate",
    "facts_from_json",
    "facts_from_multipart_head",
    "image_tokens",
    "inject_include_usage",
    "input_shape",
    "line_id",
    "observe",
    "response_meter",
    "session_endpoint",
    "with_output",
    "worst_nanos",
]
