"""What a request body tells metering about a call's cost (`RequestFacts`).

Read from an already-parsed JSON body or sniffed from the head of a
multipart upload. Every field is untrusted and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from faregate.pricing import request_tool_options

from ._endpoints import Endpoint

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
        tools = body.get("tools")
        facts.tools = request_tool_options(tools)
        facts.hosted_tools = isinstance(tools, list) and any(
            isinstance(t, dict) and t.get("type") not in ("function", "custom")
            for t in tools[:128])
    elif endpoint.kind == "images":
        n = body.get("n")
        facts.images = n if isinstance(n, int) and 0 < n <= 1000 else 1
        facts.image_size = _str(body.get("size"), 32)
        facts.image_quality = _str(body.get("quality"), 32)
    return facts


def inject_include_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Ask the upstream for the final usage chunk the caller did not request."""
    opts = body.get("stream_options")
    merged = dict(opts) if isinstance(opts, dict) else {}
    merged["include_usage"] = True
    return {**body, "stream_options": merged}


_FIELD_RE = re.compile(
    rb'content-disposition:[^\r\n]*name="(model|n|size|quality|user)"[^\r\n]*\r\n'
    rb"(?:[^\r\n]+\r\n)*\r\n([^\r\n]{0,128})\r\n",
    re.IGNORECASE,
)


def facts_from_multipart_head(head: bytes, size: int) -> RequestFacts:
    """Sniff small form fields from the first bytes of a multipart body.

    SDKs write scalar fields (model, response_format, ...) before or after
    the file; the caller passes whatever prefix/suffix it has seen.
    """
    facts = RequestFacts(prompt_bytes=size)
    for match in _FIELD_RE.finditer(head):
        name = match.group(1).lower()
        value = match.group(2).decode("utf-8", "replace")
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
    return facts
