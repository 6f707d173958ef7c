"""What a request body tells metering about a call's cost (`RequestFacts`).

Read from an already-parsed JSON body or sniffed from the head of a
multipart upload. Every field is untrusted and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from faregate.pricing import find_json_str, request_tool_options

from ._endpoints import Endpoint
from ._strict import Unreadable

MAX_MODEL_NAME = 128


@dataclass(slots=True)
class RequestFacts:
    """What the request body tells metering. All fields untrusted and bounded."""

    model: str | None = None
    stream: bool = False
    include_usage: bool = False  # caller asked for the usage chunk itself
    user: str | None = None
    characters: int = 0  # speech input length
    images: int = 1  # n for image generation
    image_size: str | None = None
    image_quality: str | None = None
    prompt_bytes: int = 0  # for estimates when no usage is reported
    tools: dict[str, str] = field(default_factory=dict)  # hosted-tool options (fees)
    background: bool = False  # a Responses call run in the background (charged when final)
    prompt_id: str | None = None  # a stored prompt (its model may be known only from the answer)
    image_tool: bool = False  # the Responses image_generation tool is offered (image caps)
    hosted_tools: bool = False  # built-in tools offered: the call may run several model turns


def _str(value: Any, limit: int = MAX_MODEL_NAME) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def facts_from_json(endpoint: Endpoint, body: Any, size: int) -> RequestFacts:
    """Read the metering-relevant fields of a parsed JSON request body."""
    facts = RequestFacts(prompt_bytes=size)
    if not isinstance(body, dict):
        return facts
    facts.model = _str(body.get("model"))
    facts.stream = body.get("stream") is True
    opts = body.get("stream_options")
    facts.include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    facts.user = _str(body.get("user")) or _str(body.get("safety_identifier"))
    if endpoint.kind == "speech":
        text = body.get("input")
        facts.characters = len(text) if isinstance(text, str) else 0
    elif endpoint.kind == "responses":
        _responses_facts(facts, body)
    elif endpoint.kind == "client_secret" and isinstance(body.get("session"), dict):
        facts.model = facts.model or _str(body["session"].get("model"))
    elif endpoint.kind == "images":
        n = body.get("n")
        facts.images = n if isinstance(n, int) and 0 < n <= 1000 else 1
        facts.image_size = _str(body.get("size"), 32)
        facts.image_quality = _str(body.get("quality"), 32)
    return facts


def bound_secret_expiry(body: Any, ttl_s: int, default_s: int = 600) -> dict | None:
    """A client-secret request whose key would live longer than `ttl_s` (asked for, or
    the upstream's default when it asks nothing), rewritten to expire after `ttl_s`;
    None when it needs no change."""
    if not isinstance(body, dict):
        return None
    asked = body.get("expires_after")
    seconds = asked.get("seconds") if isinstance(asked, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        seconds = None if asked is None else ttl_s + 1  # unreadable: bound it
    if (seconds if seconds is not None else default_s) <= ttl_s:
        return None
    anchor = asked.get("anchor") if isinstance(asked, dict) else None
    return {**body, "expires_after": {"anchor": anchor if isinstance(anchor, str) else
                                      "created_at", "seconds": ttl_s}}


def _responses_facts(facts: RequestFacts, body: dict[str, Any]) -> None:
    tools = body.get("tools")
    facts.tools = request_tool_options(tools)
    facts.image_tool = isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == "image_generation" for t in tools[:128])
    facts.hosted_tools = isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") not in ("function", "custom") for t in tools[:128])
    facts.background = body.get("background") is True
    prompt = body.get("prompt")
    if isinstance(prompt, dict):
        version = _str(prompt.get("version"), 32)
        pid = _str(prompt.get("id"))
        facts.prompt_id = f"{pid}@{version}" if pid and version else pid


def inject_include_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Ask the upstream for the final usage chunk the caller did not request."""
    opts = body.get("stream_options")
    merged = dict(opts) if isinstance(opts, dict) else {}
    merged["include_usage"] = True
    return {**body, "stream_options": merged}


_FIELD_RE = re.compile(
    rb'content-disposition:[^\r\n]*[;\s]name="(model|n|size|quality|user)"[^\r\n]*\r\n'
    rb"(?:[^\r\n]+\r\n)*\r\n([^\r\n]{0,128})\r\n",
    re.IGNORECASE,
)
#: Any spelling of a form field that sets the model or the image count, size or quality.
MONEY_FIELD = re.compile(
    rb"content-disposition:[^\r\n]*?[;\s]name\*?\s*=\s*\"?(?:[a-z0-9-]*'[a-z-]*')?"
    rb"(model|n|size|quality)(?![A-Za-z0-9_])",
    re.IGNORECASE,
)


def facts_from_multipart_head(head: bytes, size: int) -> RequestFacts:
    """Read the small form fields of a multipart body from its first bytes.

    SDKs write the scalar fields (model, n, size, ...) before the file. A
    field that sets the model or an image count, size or quality must appear
    once, in the plain `name="..."` form, or the body is `Unreadable`.
    """
    facts = RequestFacts(prompt_bytes=size)
    seen: list[bytes] = []
    for match in _FIELD_RE.finditer(head):
        name = match.group(1).lower()
        value = match.group(2).decode("utf-8", "replace")
        seen.append(name)
        if name == b"model":
            facts.model = _str(value)
        elif name == b"n" and value.isdigit():
            facts.images = max(1, min(int(value), 1000))
        elif name == b"size":
            facts.image_size = _str(value, 32)
        elif name == b"quality":
            facts.image_quality = _str(value, 32)
        elif name == b"user":
            facts.user = _str(value)
    money = [m.group(1).lower() for m in MONEY_FIELD.finditer(head)]
    if len(money) != len(set(money)) or sorted(money) != sorted(n for n in seen if n != b"user"):
        raise Unreadable("a form field that sets the model or the images is given twice "
                         "or in a form faregate cannot read")
    return facts


def facts_from_call_head(head: bytes, size: int) -> RequestFacts:
    """A WebRTC call's offer: a raw SDP body names no model; a multipart one may carry
    a `session` part whose JSON names it."""
    facts = facts_from_multipart_head(head, size)
    if facts.model is None and b'"model"' in head:
        facts.model = _str(find_json_str(head, "model", len(head)))
    return facts
