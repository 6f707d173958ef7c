"""Which API a path is: the endpoints faregate meters, and their labels.

Only a handful of endpoints carry billable usage; this module names them
(`Endpoint`: its label, its usage shape and how its request body is read).
What a request body says about the cost is in `_facts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # metric/ledger label, e.g. "/v1/chat/completions"
    kind: str  # usage shape: chat, responses, embeddings, transcription, speech, images, ...
    body: str  # how the request body is read: "json" or "multipart"


_METERED: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/chat/completions", "chat", "json"),
        Endpoint("/v1/completions", "completions", "json"),
        Endpoint("/v1/responses", "responses", "json"),
        Endpoint("/v1/embeddings", "embeddings", "json"),
        Endpoint("/v1/moderations", "moderations", "json"),
        Endpoint("/v1/audio/speech", "speech", "json"),
        Endpoint("/v1/audio/transcriptions", "transcription", "multipart"),
        Endpoint("/v1/audio/translations", "transcription", "multipart"),
        Endpoint("/v1/images/generations", "images", "json"),
        Endpoint("/v1/images/edits", "images", "multipart"),
        Endpoint("/v1/images/variations", "images", "multipart"),
        # Ephemeral Realtime keys: free, but who minted them attributes later sessions.
        Endpoint("/v1/realtime/client_secrets", "client_secret", "json"),
        Endpoint("/v1/realtime/transcription_sessions", "client_secret", "json"),
        Endpoint("/v1/realtime/sessions", "client_secret", "json"),
        # WebRTC calls (an SDP offer): the media flows past faregate, only the call is seen.
        Endpoint("/v1/realtime/calls", "realtime_call", "sdp"),
    )
}

#: Accepting an incoming SIP call starts a session whose media faregate does not see either.
SIP_ACCEPT = Endpoint("/v1/realtime/calls/accept", "realtime_call", "json")
_SIP_ACCEPT_PATH = re.compile(r"/v1/realtime/calls/([A-Za-z0-9_-]{1,128})/accept/?")

#: The label of every call that is not a metered endpoint.
OTHER = "other"


def classify(method: str, path: str) -> Endpoint | None:
    """The metered endpoint for a request, or None (forward unmetered)."""
    if method != "POST":
        return None
    found = _METERED.get(path.rstrip("/"))
    if found is None and path.startswith("/v1/realtime/calls/") and sip_call_id(path):
        return SIP_ACCEPT
    return found


def sip_call_id(path: str) -> str | None:
    """The call id of `POST /v1/realtime/calls/{id}/accept`, else None."""
    m = _SIP_ACCEPT_PATH.fullmatch(path)
    return m.group(1) if m else None


def endpoint_label(endpoint: Endpoint | None) -> str:
    """The metric/ledger label of a call: its endpoint's path, or `OTHER`."""
    return endpoint.path if endpoint is not None else OTHER


def session_endpoint(path: str) -> str:
    """A bounded label for a WebSocket path (session ids are not labels)."""
    if path.startswith("/v1/live/"):
        return "/v1/live/sessions"
    if path.startswith("/v1/realtime/translations"):
        return "/v1/realtime/translations"
    return "/v1/realtime"

