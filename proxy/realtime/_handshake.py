"""The WebSocket handshake, both sides: who the caller is, and the upstream dial.

The upstream is dialled *before* the client's upgrade is accepted, so an
upstream refusal reaches the client as the same HTTP status and body, and
an unreachable upstream as 502. Browsers may send their key in the
`openai-insecure-api-key.<key>` subprotocol; in keys mode it is replaced by
the real upstream key, which is never echoed back to the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable
from urllib.parse import quote

from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from .. import _errors as errors
from .._config import ServerSettings
from ..caller import SUBPROTOCOL_KEY_PREFIX, TAGS_QUERY, Caller, bearer_token

_HANDSHAKE_HEADERS = frozenset(
    {
        "host", "upgrade", "connection", "authorization", "api-key", "origin", "cookie",
        "content-length", "user-agent", "sec-websocket-key", "sec-websocket-version",
        "sec-websocket-extensions", "sec-websocket-protocol", "sec-websocket-accept",
        "x-faregate-tags",
    }
)

# websockets logs every handshake header at DEBUG, the upstream key among them:
# faregate's own DEBUG logging must not turn that on.
logging.getLogger("websockets.client").setLevel(logging.INFO)


def is_websocket(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("upgrade", "").lower() == "websocket"
    )


def offered_subprotocols(request: web.Request) -> list[str]:
    raw = ",".join(request.headers.getall("sec-websocket-protocol", ()))
    return [p.strip() for p in raw.split(",") if p.strip()]


def credential(request: web.Request, protocols: list[str]) -> tuple[str | None, bool]:
    """The caller's key and whether it came in the browser subprotocol form."""
    for p in protocols:
        if p.startswith(SUBPROTOCOL_KEY_PREFIX):
            return p[len(SUBPROTOCOL_KEY_PREFIX):], True
    return bearer_token(request.headers), False


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """A browser's `Origin` against `[server] allowed_origins` (empty list: all).

    Non-browser clients send no Origin and are identified by their key alone.
    """
    if not allowed or origin is None or "*" in allowed:
        return True
    return origin.strip().rstrip("/").lower() in allowed


#: `?faregate_cost_events=1` (or 0): this connection's `faregate.session.cost` events
COST_EVENTS_QUERY = "faregate_cost_events"
_OWN_QUERY = frozenset({TAGS_QUERY, COST_EVENTS_QUERY})
_SWITCH = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def cost_events_asked(request: web.Request) -> bool | None:
    """The connection's own choice of cost events (None: the tier/tenant decides).

    Raises ValueError for a value that is not 1/0, true/false or on/off."""
    values = request.query.getall(COST_EVENTS_QUERY, [])
    if not values:
        return None
    if len(values) > 1 or values[0].strip().lower() not in _SWITCH:
        raise ValueError(f"{COST_EVENTS_QUERY} must be 1 or 0 (given once)")
    return _SWITCH[values[0].strip().lower()]


def ws_url(upstream: str, path: str, request: web.Request) -> str:
    """The upstream address of this upgrade (its canonical `path`), without faregate's
    own query parameters."""
    base = "ws" + upstream[4:] if upstream.startswith("http") else upstream
    query = [(k, v) for k, v in request.query.items() if k not in _OWN_QUERY]
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    return base + path + (f"?{qs}" if qs else "")


def _bare(authorization: str | None) -> str:
    if not authorization:
        return ""
    return authorization.split(" ", 1)[1] if " " in authorization else authorization


def upstream_offer(request: web.Request, caller: Caller, protocols: list[str],
                   in_subprotocol: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(headers, subprotocols) of the upstream handshake."""
    subprotocols = [
        (SUBPROTOCOL_KEY_PREFIX + _bare(caller.upstream_authorization))
        if p.startswith(SUBPROTOCOL_KEY_PREFIX) else p
        for p in protocols
    ]
    headers = [
        (k, v) for k, v in request.headers.items() if k.lower() not in _HANDSHAKE_HEADERS
        and not k.lower().startswith("x-faregate-")
    ]
    if not in_subprotocol and caller.upstream_authorization:
        headers.append((caller.upstream_header, caller.upstream_authorization))
    if "user-agent" in request.headers:
        headers.append(("User-Agent", request.headers["user-agent"]))
    return headers, subprotocols


async def dial(url: str, headers: list[tuple[str, str]], subprotocols: list[str],
               server: ServerSettings, request_id: str,
               scrub: Callable[[bytes], bytes] | None = None
               ) -> ClientConnection | web.Response:
    """The open upstream socket, or the answer to give the client instead (an upstream
    refusal's body scrubbed of the upstream key's fragments by `scrub`)."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            user_agent_header=None,
            compression=None,
            open_timeout=server.connect_timeout_s,
            max_size=server.max_ws_frame_bytes,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
        )
    except InvalidStatus as exc:
        resp = exc.response
        h = {"x-faregate-request-id": request_id}
        ctype = resp.headers.get("content-type")
        if ctype:
            h["content-type"] = ctype
        body = resp.body or b""
        return web.Response(status=resp.status_code, body=scrub(body) if scrub else body,
                            headers=h)
    except (TimeoutError, asyncio.TimeoutError):
        return errors.upstream_timeout("WebSocket handshake", request_id)
    except (OSError, InvalidHandshake) as exc:
        return errors.upstream_unavailable(type(exc).__name__, request_id)


def client_socket(upstream: ClientConnection, protocols: list[str],
                  server: ServerSettings) -> web.WebSocketResponse:
    """The client's side of the session, accepting what the upstream chose."""
    chosen = upstream.subprotocol
    # Echo the upstream's choice only if the client offered it, and never the
    # key-carrying subprotocol (in keys mode it holds the real upstream key).
    echo = (chosen,) if (chosen and chosen in protocols
                         and not chosen.startswith(SUBPROTOCOL_KEY_PREFIX)) else ()
    return web.WebSocketResponse(
        protocols=echo,
        max_msg_size=server.max_ws_frame_bytes,
        heartbeat=30.0,
        autoclose=False,
        autoping=True,
        compress=False,
    )
