"""Headers across the proxy: hop-by-hop handling (RFC 9110 §7.6.1) and auth.

The client's headers go upstream minus the connection-specific ones and
faregate's own, with the upstream credential in place of the caller's (in
`Authorization`, or in `api-key` for Azure OpenAI). A
call faregate must read is asked of the upstream uncompressed. The
upstream's headers come back minus the hop-by-hop ones, plus
`x-faregate-request-id` and, for an admitted call of a caller with a USD
budget, `x-faregate-budget-*` (the tightest budget after this call's hold).
"""

from __future__ import annotations

import functools
import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from .._runtime import Runtime
from ..meter import Flow
from ..quota import budget_headers

# RFC 9110 §7.6.1 connection-specific fields, plus the ones we set ourselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: ... and headers some servers read as another method or path than the request line's.
_REROUTING = frozenset({"x-http-method-override", "x-http-method", "x-method-override",
                        "x-original-url", "x-rewrite-url", "x-original-method"})
_NOT_FORWARDED = (HOP_BY_HOP | _REROUTING
                  | {"host", "authorization", "api-key", "content-length", "expect"})


Headers = list[tuple[str, str]]


def _connection_listed(headers: "CIMultiDictProxy[str]") -> set[str]:
    """The header names a `Connection` header marks as connection-specific."""
    listed = set()
    for value in headers.getall("connection", ()):
        listed.update(t.strip().lower() for t in value.split(",") if t.strip())
    return listed


@functools.lru_cache(maxsize=64)
def _request_drop(tenant_header: str, user_header: str, readable: bool) -> frozenset[str]:
    """Request headers never forwarded: hop-by-hop, faregate's own, and (for calls
    faregate reads) the client's Accept-Encoding, replaced by identity."""
    own = {tenant_header.lower(), user_header.lower(), "x-faregate-tags"}
    return _NOT_FORWARDED | own | ({"accept-encoding"} if readable else set())


_RESPONSE_DROP = {False: HOP_BY_HOP, True: HOP_BY_HOP | {"content-length"}}
_BUDGET_HEADERS = frozenset({"x-faregate-budget-remaining", "x-faregate-budget-limit",
                             "x-faregate-budget-reset", "x-faregate-budget-scope"})


def upstream_headers(request: web.Request, flow: Flow, rt: Runtime, body_changed: bool
                     ) -> Headers:
    """The client's headers minus hop-by-hop and faregate's own, plus auth."""
    ident = rt.settings.identity
    headers = request.headers
    # Metered responses, Batch API answers, followed background responses and the object
    # answers faregate reads (lists, what a call created) must be readable: ask for identity.
    readable = (flow.endpoint is not None or flow.batch is not None or flow.follow is not None
                or flow.answer is not None
                or (flow.route is not None and flow.route.action == "list"))
    drop = _request_drop(ident.tenant_header, ident.user_header, readable)
    encoded = "content-encoding" in headers
    if encoded or "connection" in headers:
        # aiohttp hands faregate a decompressed body: it is sent as what it now is.
        drop = drop | _connection_listed(headers) | ({"content-encoding"} if encoded else set())
    if flow.batch is not None and flow.batch[0] == "content":
        # A batch output still to be charged is read whole (its lines are charged once);
        # the client gets the whole file (a server may answer a Range request so).
        drop = drop | {"range", "if-range"}
    out = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    if flow.caller and flow.caller.upstream_authorization:
        out.append((flow.caller.upstream_header, flow.caller.upstream_authorization))
    length = headers.get("content-length")
    if length is not None and not body_changed and not encoded:
        out.append(("Content-Length", length))
    if readable:
        out.append(("Accept-Encoding", "identity"))
    return out


def response_headers(upstream: aiohttp.ClientResponse, flow: Flow, length_changes: bool
                     ) -> Headers:
    """The upstream's answer headers for the client (Content-Length dropped when the
    meter may change the body's length)."""
    drop = _RESPONSE_DROP[length_changes]
    if "connection" in upstream.headers:
        drop = drop | _connection_listed(upstream.headers)
    budget = (budget_headers(flow.admission.budgets, time.time())
              if flow.admission is not None and flow.admission.budgets else None)
    if budget:  # ours replace any the upstream sent (a faregate in front of a faregate)
        drop = drop | _BUDGET_HEADERS
    out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in drop]
    out.append(("x-faregate-request-id", flow.request_id))
    if budget:
        out += budget
    return out
