"""List answers of object collections: only the caller's own objects.

`GET /v1/files` (and batches, vector stores, containers, fine-tuning jobs,
stored chat completions) answers one page of a list the upstream shares
between every tenant of its key. faregate reads the page (bounded), keeps
the items the caller may see (`Objects.keep_own`) and answers that page:
`first_id`/`last_id` name the kept items, `has_more` is the upstream's. A
page that keeps nothing while the upstream has more would end an SDK's
paging early, so faregate reads on (`after=` the upstream's last id), at most
`MAX_PAGES` pages; if even those keep nothing it answers the empty page with
`has_more` and the upstream's `last_id`, so a client can go on from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from .. import _errors as errors
from .._runtime import Runtime
from ..meter import Flow
from ..objects import UNANSWERED, LookupFailed
from ._body import BodyTooLarge, read_bounded
from ._headers import response_headers, upstream_headers

if TYPE_CHECKING:
    from ._forward import Forwarder

MAX_PAGES = 10
MAX_LIST_BYTES = 32 << 20


async def filtered_list(fw: "Forwarder", request: web.Request, flow: Flow, rt: Runtime
                        ) -> web.StreamResponse:
    """The list the caller asked for, with only the objects it may see."""
    assert flow.caller is not None
    url = fw.upstream_url(request, flow, rt)
    headers = upstream_headers(request, flow, rt, False)
    for page in range(MAX_PAGES):
        upstream = await fw.send("GET", url, headers, None, flow, rt)
        if isinstance(upstream, web.Response):
            return upstream
        async with upstream:
            flow.status = upstream.status
            try:
                raw = await read_bounded(upstream.content, MAX_LIST_BYTES)
            except (BodyTooLarge, aiohttp.ClientError, TimeoutError) as exc:
                flow.status = 502
                return errors.upstream_unavailable(
                    f"the list answer could not be read whole ({type(exc).__name__})",
                    flow.request_id)
            listed = _page(upstream, raw)
            if listed is None:  # an error, or not a list: the upstream's answer as it is
                scrub = flow.scrubber.bytes if flow.scrubber and upstream.status >= 400 else None
                return _answer(upstream, flow, scrub(raw) if scrub else raw)
            if flow.batch is not None:
                await fw.batches.book.after_read(listed)
            try:
                kept, last = await fw.objects.keep_own(flow.caller, listed)
            except LookupFailed:
                return errors.denied(UNANSWERED, flow.request_id)
            more = listed.get("has_more") is True
            if kept["data"] or not more or last is None or page == MAX_PAGES - 1:
                if not kept["data"] and more and last is not None:
                    kept["last_id"] = last  # where the next page starts
                return _answer(upstream, flow, orjson.dumps(kept))
            url = url.update_query(after=last)
    raise AssertionError("unreachable")


def _page(upstream: aiohttp.ClientResponse, raw: bytes) -> dict[str, Any] | None:
    if upstream.status != 200 or upstream.content_type != "application/json":
        return None
    try:
        listed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(listed, dict) or not isinstance(listed.get("data"), list):
        return None
    return listed


def _answer(upstream: aiohttp.ClientResponse, flow: Flow, body: bytes) -> web.Response:
    headers = CIMultiDict(response_headers(upstream, flow, length_changes=True))
    return web.Response(status=upstream.status, reason=upstream.reason, body=body,
                        headers=headers)
