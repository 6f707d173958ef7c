"""Reading a REST call: its body, its caller, its tags — named steps.

Each step either fills the `Flow` or raises `Refused` with the answer to
send instead of forwarding. The body is read only as far as metering needs
(a JSON body of a metered endpoint is parsed; uploads stream through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import _errors as errors
from .._capture import Capture
from .._runtime import Runtime
from ..caller import BadTags, IdentityError, bearer_token, request_tags
from ..meter import (
    HEAD_BYTES,
    Flow,
    facts_from_json,
    facts_from_multipart_head,
    inject_include_usage,
)
from ..objects import DERIVED_FILES, Objects
from ._body import BodyTooLarge, UploadCounter, read_bounded, read_head


class Refused(Exception):
    """A step refused the call: `response` is the answer to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(slots=True)
class Body:
    """What goes upstream, and what faregate read of it."""

    data: bytes | UploadCounter | None = None
    parsed: Any = None  # the JSON body of a metered endpoint, if it parsed
    changed: bool = False  # faregate rewrote it (asked for the usage chunk)
    strip_usage: bool = False  # ... so the usage chunk is removed again


def too_large(flow: Flow, limit: int) -> Refused:
    return Refused(errors.request_too_large(limit, flow.request_id))


async def read_body(request: web.Request, flow: Flow, limit: int) -> Body:
    """The request body, bounded; a metered JSON body parsed into `flow.facts`, and the
    JSON body of an object call parsed for the objects it names."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(flow, limit)
    endpoint = flow.endpoint
    body = Body()
    try:
        if endpoint is None and flow.route is not None and request.method == "POST" \
                and not request.content_type.startswith("multipart/"):
            # Whatever its declared type, read as the upstream might (a BOM too), so no
            # object it names goes unchecked; a body that is not JSON names none.
            raw = await read_bounded(request.content, limit)
            try:
                body.parsed = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf")) if raw else None
            except orjson.JSONDecodeError:
                body.parsed = None
            body.data = raw
        elif endpoint is not None and endpoint.body == "json":
            raw = await read_bounded(request.content, limit)
            try:
                body.parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body.parsed = None  # the upstream answers malformed JSON itself
            flow.facts = facts_from_json(endpoint, body.parsed, len(raw))
            if (endpoint.kind == "chat" and flow.facts.stream and not flow.facts.include_usage
                    and isinstance(body.parsed, dict)):
                raw = orjson.dumps(inject_include_usage(body.parsed))
                body.changed = body.strip_usage = True
            body.data = raw
        elif request.body_exists:
            head = await read_head(request.content, HEAD_BYTES)
            if endpoint is not None:
                flow.facts = facts_from_multipart_head(head, request.content_length or 0)
            body.data = UploadCounter(head, request.content, limit)
    except BodyTooLarge:
        raise too_large(flow, limit) from None
    return body


def identify(request: web.Request, flow: Flow, rt: Runtime) -> None:
    """Who is calling (`flow.caller`), or refuse an unknown key."""
    try:
        flow.caller = rt.directory.identify(
            bearer_token(request.headers), request.headers, flow.facts.user)
    except IdentityError as exc:
        raise Refused(errors.identity_refused(exc, flow.request_id)) from None


async def check_objects(flow: Flow, body: Body, objects: Objects) -> None:
    """The object in the path and those the body names must be the caller's tenant's."""
    assert flow.caller is not None
    raw = body.data if isinstance(body.data, bytes) else None
    denial = await objects.check(flow.route, flow.caller, body.parsed, raw)
    if denial is not None:
        raise Refused(errors.denied(denial, flow.request_id))
    route = flow.route
    if route is None:
        return
    if isinstance(body.parsed, dict) and isinstance(body.parsed.get("store"), bool):
        flow.store = body.parsed["store"]
    if route.action == "create" and not route.readable(flow.store):
        flow.route = None  # creates nothing anyone can read back: nothing to own
    elif flow.endpoint is None and (route.action == "create" or route.kind in DERIVED_FILES):
        flow.answer = bytearray()  # read its ids once it answers


def read_tags(request: web.Request, flow: Flow, body: Body) -> None:
    """The caller's attribution tags (header, query, body metadata)."""
    parsed = body.parsed
    try:
        flow.tags = request_tags(request.headers, request.query,
                                 parsed.get("metadata") if isinstance(parsed, dict) else None)
    except BadTags as exc:
        raise Refused(errors.invalid_request(f"Bad x-faregate-tags: {exc}", "invalid_tags",
                                             flow.request_id)) from None


def start_capture(flow: Flow, body: Body, capture: Capture | None, rt: Runtime) -> None:
    """Opt-in conversation capture keeps the call's bodies (only with a key)."""
    assert flow.caller is not None
    if capture is None or not rt.captures(flow.caller.tenant):
        return
    flow.captured_response = bytearray()
    data = body.data
    flow.captured_request = data if isinstance(data, bytes) else (
        b"" if data is None else b"(binary upload, not captured)")
