"""The Realtime/Live edge: `GET /v1/*` WebSocket upgrades, relayed both ways.

After the handshake, two loops copy frames in order, one per direction;
each awaits the other side's send before reading the next frame, so a slow
peer backpressures the fast one instead of growing a buffer. Every frame
passes the session (its meter and quota); what it meters is billed at once.

If the client leaves while a response is being generated, the upstream
socket is kept for `cancel_grace_s`: faregate sends `response.cancel` and
waits for the final `response.done`, so the tokens already billed are
recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .. import _errors as errors
from .._ids import new_event_id, new_request_id
from .._runtime import Runtime
from ..caller import BadTags, Caller, IdentityError, SecretBook, call_scrubber, request_tags
from ..meter import ResponsesSocketMeter, session_endpoint
from ..objects import Objects, not_found, object_route
from ..provider import Delegations
from ..quota import (
    CANCEL_EVENT,
    Policy,
    Quota,
    Refusal,
    SessionQuota,
    SessionTicket,
    budget_headers,
    first_response,
    time_cut,
)
from ._handshake import (
    client_socket,
    cost_events_asked,
    credential,
    dial,
    offered_subprotocols,
    origin_allowed,
    upstream_offer,
    ws_url,
)
from ._responses import ResponsesSocketQuota
from ._session import Session, SessionServices

log = logging.getLogger("faregate.relay")

_UNSENDABLE_CLOSE = frozenset({1005, 1006, 1015})
SHUTDOWN_REASON = "faregate is shutting down"
RESPONSES_SOCKET = "/v1/responses"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An admitted WebSocket upgrade: who asked, for which session, with what."""

    path: str  # canonical
    label: str  # the session endpoint (`meter.session_endpoint`)
    request_id: str
    protocols: list[str]  # the subprotocols the client offered
    caller: Caller
    in_subprotocol: bool  # the credential came in a subprotocol
    tags: dict[str, str]
    cost_events: bool | None  # the connection's own choice (None: its policy's)


class Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Relay:
    """The WebSocket handler; one per app."""

    def __init__(self, services: SessionServices, quota: Quota, secrets: SecretBook,
                 draining: Callable[[], bool], unseen: Delegations | None = None,
                 objects: Objects | None = None) -> None:
        self.services = services
        self.runtime = services.runtime
        self.sessions = services.sessions
        self.quota = quota
        self.secrets = secrets
        self.draining = draining
        self.unseen = unseen
        self.objects = objects

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """Relay one WebSocket session on `path` (canonical, see `meter._paths`)."""
        rt = self.runtime()
        rid = new_request_id()
        protocols = offered_subprotocols(request)
        label = session_endpoint(path)
        try:
            if label is None:  # an upgrade faregate cannot meter is not relayed
                raise Refused(errors.openai_error(
                    403, "invalid_request_error", "endpoint_not_allowed",
                    f"faregate cannot meter WebSocket sessions on {path[:200]}: only Realtime, "
                    "Live and Responses sessions are relayed.", request_id=rid))
            up = self._admit(request, rt, protocols, rid, path, label)
            await self._own_call(request, up.caller, rid)
            ticket = await self._admit_session(rt, rt.policy(up.caller), up.caller,
                                               request.query.get("model"), rid)
        except Refused as refused:
            return refused.response
        try:  # the ticket's slots are given back on every way out
            return await self._serve(request, rt, up, ticket)
        finally:
            ticket.release()

    async def _serve(self, request: web.Request, rt: Runtime, up: Upgrade,
                     ticket: SessionTicket) -> web.StreamResponse:
        """Dial the upstream and relay the admitted session until it ends."""
        caller, rid, protocols = up.caller, up.request_id, up.protocols
        headers, subprotocols = upstream_offer(request, caller, protocols, up.in_subprotocol)
        server = rt.settings.server
        scrubber = call_scrubber(caller.upstream_authorization)
        upstream = await dial(ws_url(server.upstream, up.path, request), headers, subprotocols,
                              server, rid, scrubber.bytes if scrubber else None)
        if isinstance(upstream, web.Response):
            return upstream
        client = client_socket(upstream, protocols, server)
        policy = rt.policy(caller)
        now = datetime.now(timezone.utc)
        client.headers.extend(budget_headers(self.quota.budget_counters(policy, now),
                                             now.timestamp()))
        model = request.query.get("model")
        if up.label == RESPONSES_SOCKET:  # the Responses API over a WebSocket: a stream
            session = Session.start(self.services, caller, up.label,
                                    ResponsesSocketQuota(self.quota, policy, rt),  # type: ignore[arg-type]
                                    model, up.tags, meter=ResponsesSocketMeter(rt.prices))
        else:
            squota = SessionQuota(self.quota, policy, rt.prices, model, server.admission_wait_s)
            session = Session.start(self.services, caller, up.label, squota, model, up.tags)
        session.client_ws = client
        session.ticket = ticket
        session.cost_events = (policy.session_cost_events if up.cost_events is None
                               else up.cost_events)
        if self.unseen is not None:  # the sideband of a call, or a session on a minted key
            self.unseen.seen(credential(request, protocols)[0], request.query.get("call_id"),
                             session.id, caller, model)
        timer = self._time_limit(session, policy)
        try:
            await client.prepare(request)
            await self._pump(client, upstream, session, rt)
        finally:
            if timer is not None:
                timer.cancel()
            await upstream.close()
            session.finish(session.end_reason or "client_closed")
        return client

    def _admit(self, request: web.Request, rt: Runtime, protocols: list[str], rid: str,
               path: str, label: str) -> Upgrade:
        """The checks before dialling: draining, origin, identity, tags, limits."""
        if self.draining():
            raise Refused(errors.openai_error(
                503, "api_error", "shutting_down", "faregate is shutting down.",
                request_id=rid))
        if not origin_allowed(request.headers.get("Origin"), rt.settings.server.allowed_origins):
            raise Refused(errors.openai_error(
                403, "invalid_request_error", "origin_not_allowed",
                "This Origin may not open sessions through faregate "
                "([server] allowed_origins).", request_id=rid))
        token, in_subprotocol = credential(request, protocols)
        try:
            caller = (self.secrets.caller(token) if token else None) or rt.directory.identify(
                token, request.headers, None)
        except IdentityError as exc:
            raise Refused(errors.identity_refused(exc, rid)) from None
        try:
            tags = request_tags(request.headers, request.query)
        except BadTags as exc:
            raise Refused(errors.invalid_request(f"Bad attribution tags: {exc}",
                                                 "invalid_tags", rid)) from None
        try:
            cost_events = cost_events_asked(request)
        except ValueError as exc:
            raise Refused(errors.invalid_request(str(exc), "invalid_parameter", rid)) from None
        policy = rt.policy(caller)
        model = request.query.get("model")
        if not policy.allows_path(path):
            raise Refused(errors.endpoint_not_allowed(path, rid))
        if model and policy.unknown_model == "reject" and rt.prices.entry(model, None) is None:
            raise Refused(errors.model_not_priced(model, rid))
        if not self.services.biller.accepting() and rt.refuses_without_ledger(policy):
            raise Refused(errors.ledger_unavailable(rid))
        return Upgrade(path, label, rid, protocols, caller, in_subprotocol, tags, cost_events)

    async def _own_call(self, request: web.Request, caller: Caller, rid: str) -> None:
        """A sideband session (`?call_id=rtc_…`) only for the tenant whose call it is."""
        call_id = request.query.get("call_id")
        if call_id is None or self.objects is None:
            return
        route = object_route("GET", f"/v1/realtime/calls/{call_id}")
        denial = (not_found("realtime_call", call_id[:128], "call_id") if route is None
                  else await self.objects.check(route, caller, None, None))
        if denial is not None:
            if denial.status == 404:
                denial = not_found("realtime_call", call_id[:128], "call_id")
            raise Refused(errors.denied(denial, rid))

    async def _admit_session(self, rt: Runtime, policy: Policy, caller: Caller,
                             model: str | None, rid: str) -> SessionTicket:
        """Concurrency slots, taken before the upstream is dialled, then the model and
        budget checks: the session's first response must be affordable (DESIGN §5)."""
        shared = rt.settings.upstream_limits.max_concurrent_sessions
        ticket = await self.quota.take_session(policy, shared, self.sessions.by_tenant())
        if isinstance(ticket, Refusal):
            raise Refused(errors.refused(ticket, rid))
        now = datetime.now(timezone.utc)
        try:
            refusal = await self.quota.admit_session(
                policy, now, model, first_response(rt.prices, model, now),
                rt.settings.server.admission_wait_s)
        except BaseException:
            ticket.release()
            raise
        if refusal is not None:
            ticket.release()
            raise Refused(errors.refused(refusal, rid))
        return ticket

    @staticmethod
    def _time_limit(session: Session, policy: Policy) -> asyncio.TimerHandle | None:
        if not policy.max_session_seconds:
            return None
        return asyncio.get_running_loop().call_later(
            policy.max_session_seconds, session.request_cut,
            time_cut(policy.max_session_seconds))

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking sessions; let open ones end within `grace_s`, then close them."""
        sessions = list(self.sessions)
        if sessions:
            log.warning("shutting down: waiting for open sessions to end",
                        extra={"sessions": len(sessions), "grace_s": grace_s})
        deadline = time.monotonic() + grace_s
        while len(self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if len(self.sessions):
            log.warning("closing the sessions still open (1001); their usage is recorded",
                        extra={"sessions": len(self.sessions)})
        for session in self.sessions:
            session.shutting_down = True
            if session.client_ws is not None and not session.client_ws.closed:
                # The pending receive() sees the close; the pump settles and records.
                await session.client_ws.close(code=1001, message=SHUTDOWN_REASON.encode())
        waits = [t for s in sessions for t in s.tasks]
        if waits:
            await asyncio.wait(waits, timeout=grace_s + 10)

    async def _pump(self, client: web.WebSocketResponse, upstream: ClientConnection,
                    session: Session, rt: Runtime) -> None:
        to_upstream = asyncio.create_task(self._client_to_upstream(client, upstream, session))
        to_client = asyncio.create_task(self._upstream_to_client(client, upstream, session))
        session.tasks = (to_upstream, to_client)
        cut = asyncio.create_task(session.cut_event.wait())
        done, _ = await asyncio.wait({to_upstream, to_client, cut},
                                     return_when=asyncio.FIRST_COMPLETED)
        grace = rt.settings.server.cancel_grace_s
        if cut in done and to_upstream not in done and to_client not in done:
            await self._cut(client, upstream, session, grace, to_upstream, to_client)
            return
        cut.cancel()
        if to_upstream in done:
            await self._client_left(client, upstream, session, grace, to_upstream, to_client)
        else:
            await self._upstream_left(client, upstream, session, to_upstream)

    async def _cut(self, client: web.WebSocketResponse, upstream: ClientConnection,
                   session: Session, grace: float, to_upstream: asyncio.Task,
                   to_client: asyncio.Task) -> None:
        """faregate ends the session: error event, settle in-flight, close 1008."""
        cut = session.cut
        assert cut is not None
        try:
            await client.send_str(cut.event(new_event_id()))
        except (ConnectionResetError, RuntimeError):
            pass
        if session.meter.busy:
            await _wait_idle(session, grace, to_client)
            if session.meter.busy:
                await self._cancel_and_wait(upstream, session, grace)
        session.end_reason = cut.end_reason
        session.client_gone = True
        if not client.closed:
            await client.close(code=1008, message=cut.code.encode())
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        await upstream.close(1000, "")

    async def _client_left(self, client: web.WebSocketResponse, upstream: ClientConnection,
                           session: Session, grace: float, to_upstream: asyncio.Task,
                           to_client: asyncio.Task) -> None:
        """The client closed (or faregate is shutting down): settle, then close upstream."""
        if to_upstream.cancelled() or session.shutting_down:
            code, reason = 1001, SHUTDOWN_REASON
        else:
            code, reason = to_upstream.result()
        session.client_gone = True
        if not client.closed:
            await client.close(code=code, message=reason.encode()[:120])
        if session.meter.busy:
            await self._cancel_and_wait(upstream, session, grace)
        to_client.cancel()
        await asyncio.gather(to_client, return_exceptions=True)
        session.end_reason = session.end_reason or (
            "shutdown" if session.shutting_down else "client_closed"
        )
        await upstream.close(code if code not in _UNSENDABLE_CLOSE else 1000, reason[:120])

    async def _upstream_left(self, client: web.WebSocketResponse, upstream: ClientConnection,
                             session: Session, to_upstream: asyncio.Task) -> None:
        """The upstream closed: relay its code and reason to the client."""
        code = upstream.close_code
        reason = upstream.close_reason or ""
        if session.end_reason is None:
            normal = code is not None and (code in (1000, 1001) or 3000 <= code < 5000)
            session.end_reason = "upstream_closed" if normal else "error"
        if code is None or code in _UNSENDABLE_CLOSE:
            code, reason = 1011, reason or "upstream connection lost"
        if not client.closed:
            await client.close(code=code, message=reason.encode()[:120])
        to_upstream.cancel()
        await asyncio.gather(to_upstream, return_exceptions=True)

    async def _client_to_upstream(self, client: web.WebSocketResponse,
                                  upstream: ClientConnection, session: Session
                                  ) -> tuple[int, str]:
        while True:
            msg = await client.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                # Binary frames too: an upstream may read them as events.
                frame = await session.client_frame(msg.data)
                for reply in session.take_replies():
                    await client.send_str(reply)
                if frame is None:
                    continue
                try:
                    await upstream.send(frame)
                except ConnectionClosed:
                    return 1000, ""
            elif msg.type == WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) else 1000
                reason = msg.extra if isinstance(msg.extra, str) else ""
                if not client.closed:
                    await client.close(code=code, message=reason.encode()[:120])
                return code, reason
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return (client.close_code or 1001), ""

    async def _upstream_to_client(self, client: web.WebSocketResponse,
                                  upstream: ClientConnection, session: Session) -> None:
        try:
            async for frame in upstream:
                frame, own = await session.server_frame(frame)
                for event in own:
                    await upstream.send(event)
                if session.client_gone or client.closed:
                    session.notices.clear()
                    continue  # draining billing events after the client left
                try:
                    if isinstance(frame, str):
                        await client.send_str(frame)
                    else:
                        await client.send_bytes(frame)
                    while session.notices:  # faregate's own events follow the frame
                        await client.send_str(session.notices.pop(0))
                except (ConnectionResetError, RuntimeError):
                    session.client_gone = True
        except ConnectionClosed:
            pass

    async def _cancel_and_wait(self, upstream: ClientConnection, session: Session,
                               grace: float) -> None:
        """Cancel the in-progress response and wait (bounded) for its response.done."""
        cancel = getattr(session.meter, "cancel_event", CANCEL_EVENT)
        try:
            if cancel is not None:
                await upstream.send(cancel)
        except ConnectionClosed:
            return
        await _wait_idle(session, grace, session.tasks[1])
        if session.meter.busy:
            log.warning(
                "response still in progress after cancel grace; its usage is estimated",
                extra={"session_id": session.id, "grace_s": grace},
            )
            session.charge_unfinished()


async def _wait_idle(session: Session, grace: float, reader: asyncio.Task) -> None:
    deadline = time.monotonic() + grace
    while session.meter.busy and time.monotonic() < deadline and not reader.done():
        await asyncio.sleep(0.01)
