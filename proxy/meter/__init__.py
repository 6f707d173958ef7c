"""meter — what was consumed, sans-IO, and the biller that charges it.

Canonical paths and endpoint classes (metered, billable, free: money is
default-deny), strict reading of untrusted JSON, what a request body says
(`RequestFacts`) and the shape of its input (`InputShape`), reservations
and worst cases (`estimate`, with image bounds and what earlier responses
carried: `Contexts`), one meter per response shape (a JSON sample, SSE
streams, batch output lines, Realtime/Live frames, Responses WebSocket
frames) behind one protocol (`ResponseMeter`: bytes in, bytes out, a
`Reading` at the end), and the `Biller` — the only place a charge is priced, recorded, settled, counted
and noted for alerts. Nothing here touches a socket.
"""

from ._biller import Biller
from ._charges import Account, charge_record, count_charge, observe
from ._call import CallMeter, call_id_from
from ._consumed import answer_usage, call_usage
from ._context import Contexts
from ._endpoints import (
    BILLABLE,
    FREE_POSTS,
    OTHER,
    Endpoint,
    classify,
    endpoint_label,
    route_label,
    session_endpoint,
    sip_call_id,
)
from ._estimate import (
    DEFAULT_REALTIME_MODEL,
    MAX_REALTIME_SESSION_S,
    Estimate,
    affordable_output,
    cost_nanos,
    dearest_nanos,
    estimate,
    estimate_nanos,
    session_reservation,
    sizing,
    unseen_session_seconds,
    with_output,
    worst_nanos,
)
from ._facts import (
    MONEY_FIELD,
    RequestFacts,
    bound_secret_expiry,
    facts_from_call_head,
    facts_from_json,
    facts_from_multipart_head,
    inject_include_usage,
)
from ._paths import canonical_path
from ._strict import FRAME_KEYS, Unreadable, strict_json
from ._flow import Flow
from ._images import image_tokens
from ._inputs import InputShape, input_shape
from ._lines import KINDS as BATCH_KINDS
from ._lines import JsonCollector, LineMeter, line_id
from ._reading import HoldLast, Metered, Reading, ResponseMeter
from ._sample import HEAD_BYTES, BodySample, JsonMeter, find_status
from ._scrub import ScrubMeter
from ._session import ClientEvent, SessionMeter
from ._socket import ResponsesSocketMeter
from ._shapes import response_meter
from ._sse import SseMeter

__all__ = [
    "BATCH_KINDS",
    "BILLABLE",
    "DEFAULT_REALTIME_MODEL",
    "FRAME_KEYS",
    "FREE_POSTS",
    "MONEY_FIELD",
    "Unreadable",
    "canonical_path",
    "route_label",
    "strict_json",
    "HEAD_BYTES",
    "MAX_REALTIME_SESSION_S",
    "OTHER",
    "Account",
    "Biller",
    "BodySample",
    "CallMeter",
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
    "ResponsesSocketMeter",
    "ScrubMeter",
    "SessionMeter",
    "SseMeter",
    "answer_usage",
    "bound_secret_expiry",
    "call_id_from",
    "affordable_output",
    "call_usage",
    "charge_record",
    "classify",
    "cost_nanos",
    "dearest_nanos",
    "count_charge",
    "endpoint_label",
    "facts_from_call_head",
    "estimate",
    "estimate_nanos",
    "facts_from_json",
    "find_status",
    "facts_from_multipart_head",
    "image_tokens",
    "inject_include_usage",
    "input_shape",
    "line_id",
    "observe",
    "response_meter",
    "session_endpoint",
    "session_reservation",
    "sizing",
    "sip_call_id",
    "unseen_session_seconds",
    "with_output",
    "worst_nanos",
]
