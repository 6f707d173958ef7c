"""Reading a REST call: its body, its caller, its tags — named steps.

Each step either fills the `Flow` or raises `Refused` with the answer to
send instead of forwarding. The body is read only as far as metering needs
(a JSON body of a metered endpoint is parsed; uploads stream through).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import _errors as errors
from .._capture import Capture
from .._runtime import Runtime
from ..caller import BadTags, IdentityError, SecretBook, bearer_token, request_tags, secret_ref
from ..meter import (
    HEAD_BYTES,
    MONEY_FIELD,
    Endpoint,
    Flow,
    Unreadable,
    facts_from_json,
    facts_from_call_head,
    facts_from_multipart_head,
    inject_include_usage,
    strict_json,
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
    """The request body, bounded; a metered body read into `flow.facts`, and the JSON
    body of a free object call parsed for the objects it names.

    A body faregate must read (JSON of a metered or billable call, the form
    fields of a metered upload) and cannot read is refused here, before
    anything is forwarded: 400 `invalid_request_body`.
    """
    if request.content_length is not None and request.content_length > limit:
        raise too_large(flow, limit)
    endpoint = flow.endpoint
    body = Body()
    try:
        ctype = request.content_type if "Content-Type" in request.headers else ""
        shape = _shape(endpoint, ctype) if endpoint is not None else "stream"
        if endpoint is None and flow.route is not None and request.method == "POST" \
                and not ctype.startswith("multipart/"):
            # Whatever its declared type, read as the upstream might (a BOM too), so no
            # object it names goes unchecked; a body that is not JSON names none.
            raw = await read_bounded(request.content, limit)
            try:
                body.parsed = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf")) if raw else None
            except orjson.JSONDecodeError:
                body.parsed = None
            body.data = raw
        elif shape == "json":
            raw = await read_bounded(request.content, limit)
            _read_json(raw, flow, body)
        elif request.body_exists:
            watch = MONEY_FIELD if shape == "form" and endpoint.metered else None  # type: ignore[union-attr]
            head = await read_head(request.content, HEAD_BYTES, watch and _MODEL_FIELD, limit)
            if endpoint is not None and endpoint.kind == "realtime_call":  # a WebRTC offer
                flow.facts = facts_from_call_head(head, request.content_length or 0)
            elif shape == "form":
                flow.facts = facts_from_multipart_head(head, request.content_length or 0)
            body.data = UploadCounter(head, request.content, limit, watch)
    except BodyTooLarge:
        raise too_large(flow, limit) from None
    except Unreadable as exc:
        raise unreadable(flow, str(exc)) from None
    return body


#: Content types of billable calls that are passed on unread (WebRTC offers, raw bytes).
_OPAQUE = frozenset({"application/sdp", "application/octet-stream"})
_MODEL_FIELD = re.compile(rb'[;\s]name="model"', re.IGNORECASE)


def _shape(endpoint: Endpoint, content_type: str) -> str:
    """How a call's body is read: "json" (parsed whole), "form" (fields from its head)
    or "stream" (passed on unread)."""
    multipart = content_type.startswith("multipart/")
    if endpoint.body == "json":
        return "json"
    if endpoint.body == "multipart":
        if content_type == "application/json":
            return "json"
        if not multipart:
            raise Unreadable(f"a {content_type or 'body'} where a multipart form is expected")
        return "form"
    if multipart:
        return "form"
    return "stream" if content_type in _OPAQUE else "json"


def _read_json(raw: bytes, flow: Flow, body: Body) -> None:
    endpoint = flow.endpoint
    assert endpoint is not None
    body.parsed = strict_json(raw) if raw.strip() else None
    flow.facts = facts_from_json(endpoint, body.parsed, len(raw))
    if (endpoint.kind == "chat" and flow.facts.stream and not flow.facts.include_usage
            and isinstance(body.parsed, dict)):
        raw = orjson.dumps(inject_include_usage(body.parsed))
        body.changed = body.strip_usage = True
    body.data = raw


def unreadable(flow: Flow, why: str) -> Refused:
    return Refused(errors.invalid_request(
        f"faregate cannot read this request body: {why}.", "invalid_request_body",
        flow.request_id))


def identify(request: web.Request, flow: Flow, rt: Runtime,
             secrets: SecretBook | None = None) -> None:
    """Who is calling (`flow.caller`), or refuse an unknown key. With `secrets`
    (WebRTC calls), an ephemeral key minted through faregate names its minter."""
    token = bearer_token(request.headers) if secrets is not None else None
    minted = secrets.minted(token) if secrets is not None and token else None
    if minted is not None and token:
        flow.caller = secrets.caller(token)  # type: ignore[union-attr]
        flow.secret_ref = secret_ref(token)
        flow.facts.model = flow.facts.model or minted.model
        if flow.caller is not None:
            return
    try:
        flow.caller = rt.directory.identify(
            bearer_token(request.headers), request.headers, flow.facts.user)
    except IdentityError as exc:
        raise Refused(errors.identity_refused(exc, flow.request_id)) from None


#: Metered calls whose meter reads no object id (a batch object, a WebRTC call's SDP
#: answer): the objects they create are read from the answer itself.
_OWN_ANSWER_KINDS = frozenset({"batch", "realtime_call"})


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
    elif (flow.endpoint is None or flow.endpoint.kind in _OWN_ANSWER_KINDS) and (
            route.action == "create" or route.kind in DERIVED_FILES):
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
