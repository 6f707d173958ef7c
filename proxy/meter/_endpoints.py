"""Which API a path is, and whether it may cost money: metered, billable or free.

Money is default-deny. Every `/v1` call falls in one of three classes:

* **metered** — faregate knows the endpoint's usage shape (`Endpoint.kind`),
  reserves its worst case before forwarding and charges what it reports;
* **free** — a short list of operations known not to cost money (listing,
  retrieving, downloading, deleting; and the few POSTs in `FREE_POSTS`);
  classified `None`: forwarded with no admission and no ledger row;
* **billable** — everything else: any other POST (or PUT, PATCH, …) under
  `/v1`, now or added upstream later. Such a call is admitted against the
  caller's limits (refused while a budget is spent) and recorded with its
  status, flagged as not priced.

The lists here are the ones README documents. Paths arrive canonical
(`_paths`); a metered endpoint matches whatever its letter case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # metric/ledger label, e.g. "/v1/chat/completions"
    kind: str  # usage shape: chat, responses, embeddings, ... or "billable"
    body: str  # how the request body is read: "json", "multipart" or "any" (billable)

    @property
    def metered(self) -> bool:
        """A known usage shape (else: admitted and recorded, not priced)."""
        return self.kind != BILLABLE


BILLABLE = "billable"

_METERED: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/chat/completions", "chat", "json"),
        Endpoint("/v1/completions", "completions", "json"),
        Endpoint("/v1/responses", "responses", "json"),
        Endpoint("/v1/responses/compact", "responses", "json"),
        Endpoint("/v1/embeddings", "embeddings", "json"),
        Endpoint("/v1/moderations", "moderations", "json"),
        Endpoint("/v1/audio/speech", "speech", "json"),
        Endpoint("/v1/audio/transcriptions", "transcription", "multipart"),
        Endpoint("/v1/audio/translations", "transcription", "multipart"),
        Endpoint("/v1/images/generations", "images", "json"),
        Endpoint("/v1/images/edits", "images", "multipart"),
        Endpoint("/v1/images/variations", "images", "multipart"),
        # A batch: admitted by its input file's worst case; its output lines are charged.
        Endpoint("/v1/batches", "batch", "json"),
        # Ephemeral Realtime keys: free, but who minted them attributes later sessions.
        Endpoint("/v1/realtime/client_secrets", "client_secret", "json"),
        Endpoint("/v1/realtime/translations/client_secrets", "client_secret", "json"),
        Endpoint("/v1/realtime/transcription_sessions", "client_secret", "json"),
        Endpoint("/v1/realtime/sessions", "client_secret", "json"),
        # WebRTC calls (an SDP offer): the media flows past faregate, only the call is seen.
        Endpoint("/v1/realtime/calls", "realtime_call", "sdp"),
    )
}

#: Accepting an incoming SIP call starts a session whose media faregate does not see either.
SIP_ACCEPT = Endpoint("/v1/realtime/calls/accept", "realtime_call", "json")
_SIP_ACCEPT_PATH = re.compile(r"/v1/realtime/calls/([A-Za-z0-9_-]{1,128})/accept/?")
_ID = r"[^/]+"
#: POSTs that cost nothing: uploads, cancels and pauses, token counting, metadata edits.
#: (`/v1/responses/{id}/cancel` of a background response is metered by the REST edge.)
FREE_POSTS: tuple[str, ...] = (
    "/v1/files",
    "/v1/uploads",
    f"/v1/uploads/{_ID}/(?:parts|complete|cancel)",
    f"/v1/batches/{_ID}/cancel",
    f"/v1/fine_tuning/jobs/{_ID}/(?:cancel|pause)",
    f"/v1/evals/{_ID}/runs/{_ID}/cancel",
    f"/v1/threads/{_ID}/runs/{_ID}/cancel",
    f"/v1/vector_stores/{_ID}/file_batches/{_ID}/cancel",
    f"/v1/chatkit/sessions/{_ID}/cancel",
    f"/v1/responses/{_ID}/cancel",
    "/v1/responses/input_tokens",
    f"/v1/chat/completions/{_ID}",
)
_FREE_POST = re.compile("|".join(f"(?:{p})" for p in FREE_POSTS), re.IGNORECASE)
#: Methods that only read or delete.
FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

#: The label of every call that is not a metered endpoint.
OTHER = "other"

#: Path words that are API names, not object ids (for bounded labels of billable calls).
_WORDS = frozenset("""
    v1 agents automations invocations pause resume environments templates files sessions
    artifacts content events items subagents turns traces assistants audio speech
    transcriptions translations voice_consents voices batches cancel chat completions messages
    chatkit threads containers content_provenance_checks conversations decisions embeddings
    evals runs output_items alpha graders run validate fine_tuning checkpoints permissions jobs
    images edits generations variations live accept fork hangup refer reject models
    moderations realtime calls client_secrets transcription_sessions responses compact
    input_tokens input_items safety alerts cases skills versions steps submit_tool_outputs
    uploads parts complete vaults credentials vector_stores file_batches search videos
    characters remix extend edit webhook_endpoints rotate_secret test webhook_event_types
    organization projects users roles admin_api_keys api_keys invites certificates
    service_accounts rate_limits usage costs audit_logs groups spend_alerts spend_limit
    activate deactivate archive data_retention external_keys external_storage
    hosted_tool_permissions model_permissions service_tier_settings workload_identity_providers
    federation_rules automations
""".split())
MAX_LABEL_SEGMENTS = 8


def route_label(path: str) -> str:
    """A bounded label for any path: API words kept, every other segment `{id}`."""
    parts = path.split("/")[1:MAX_LABEL_SEGMENTS + 1]
    return "/" + "/".join(p if p.lower() in _WORDS else "{id}" for p in parts)


def classify(method: str, path: str) -> Endpoint | None:
    """The endpoint of a call (metered or billable), or None when it is free."""
    if method in FREE_METHODS:
        return None
    if method == "POST":
        endpoint = _METERED.get(path) or _METERED.get(path.lower())
        if endpoint is not None:
            return endpoint
        if path.startswith("/v1/realtime/calls/") and sip_call_id(path):
            return SIP_ACCEPT
        if _FREE_POST.fullmatch(path):
            return None
    return Endpoint(route_label(path), BILLABLE, "any")


def sip_call_id(path: str) -> str | None:
    """The call id of `POST /v1/realtime/calls/{id}/accept`, else None."""
    m = _SIP_ACCEPT_PATH.fullmatch(path)
    return m.group(1) if m else None


def endpoint_label(endpoint: Endpoint | None) -> str:
    """The metric/ledger label of a call: its endpoint's path, or `OTHER`."""
    return endpoint.path if endpoint is not None else OTHER


def session_endpoint(path: str) -> str | None:
    """A bounded label for a WebSocket path faregate can meter, else None (refused)."""
    lowered = path.lower()
    if lowered.startswith("/v1/live/"):
        return "/v1/live/sessions"
    if lowered == "/v1/realtime/translations":
        return "/v1/realtime/translations"
    if lowered == "/v1/realtime":
        return "/v1/realtime"
    if lowered == "/v1/responses":
        return "/v1/responses"
    return None
