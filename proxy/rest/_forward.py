"""The REST edge: `ANY /v1/*` to the upstream and back, as a thin loop.

A call goes through named steps — read the body, identify the caller, check
the ledger can keep its charge, read its tags, check the objects it names
are its tenant's, refuse unpriced models, reserve its worst case — then is
forwarded on one pooled `ClientSession`; the answer streams back through the
meter its shape gets. The meter holds back the answer's last bytes (an SSE
stream's terminal event included) until the biller has put the charge in the
ledger journal, so a client never holds a complete answer whose charge a
crash could still lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import aiohttp
from aiohttp import web
from yarl import URL

from .. import _errors as errors
from .._capture import MAX_TEXT, Capture
from .._logging import log_access
from .._metrics import Metrics
from .._runtime import Runtime
from ..caller import call_scrubber, strip_query
from ..meter import (
    Biller,
    Contexts,
    Flow,
    ResponseMeter,
    SseMeter,
    classify,
    endpoint_label,
    response_meter,
)
from ..objects import KEEP_BYTES, Objects, object_route
from ..provider import Delegations
from ..quota import Quota
from ._admission import (
    UNSEEN_KINDS,
    admit_billable,
    check_endpoint,
    check_ledger,
    check_priced,
    reserve,
    reserve_unseen,
)
from ._background import Background
from ._batches import Batches, batch_route
from ._body import BodyTooLarge, BodyUnreadable, UploadCounter
from ._headers import response_headers, upstream_headers
from ._intake import (
    Body,
    Refused,
    check_objects,
    identify,
    read_body,
    read_tags,
    start_capture,
    unreadable,
)
from ._listing import filtered_list
from ._prompts import PromptModels

log = logging.getLogger("faregate.forward")
access_log = logging.getLogger("faregate.access")

_REPEATED_FIELD = ("a form field that sets the model or the images comes again after the "
                   "upload's head")


class Forwarder:
    """The `/v1/*` handler for plain HTTP calls. One per app."""

    def __init__(self, runtime: Callable[[], Runtime], client: aiohttp.ClientSession,
                 quota: Quota, biller: Biller, batches: Batches, background: Background,
                 unseen: Delegations, metrics: Metrics, capture: Capture | None,
                 objects: Objects, contexts: Contexts) -> None:
        self.runtime = runtime
        self.client = client
        self.quota = quota
        self.biller = biller
        self.batches = batches
        self.background = background
        self.unseen = unseen
        self.metrics = metrics
        self.capture = capture
        self.objects = objects
        self.prompts = PromptModels()
        self.contexts = contexts

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """Answer one call to `path` (the request's canonical path, see `meter._paths`)."""
        rt = self.runtime()
        flow = Flow(request.method, path, classify(request.method, path))
        flow.batch = batch_route(request.method, path)
        flow.follow = self.background.route(request.method, path)
        flow.route = object_route(request.method, path)
        try:
            body = await self._admit(request, flow, rt)
            if flow.route is not None and flow.route.action == "list":
                return await filtered_list(self, request, flow, rt)
            return await self._forward(request, flow, rt, body)
        except Refused as refused:
            flow.status = refused.response.status
            return refused.response
        finally:
            self.biller.bill_call(flow)
            log_flow(flow, rt.settings.server.access_log)
            self._keep_capture(flow)

    async def _admit(self, request: web.Request, flow: Flow, rt: Runtime) -> Body:
        """The steps before forwarding; each may refuse the call."""
        body = await read_body(request, flow, rt.settings.server.max_body_bytes)
        call = flow.endpoint is not None and flow.endpoint.kind == "realtime_call"
        identify(request, flow, rt, self.unseen.secrets if call else None)
        assert flow.caller is not None
        flow.scrubber = call_scrubber(flow.caller.upstream_authorization)
        check_ledger(flow, rt, self.biller)
        read_tags(request, flow, body)
        start_capture(flow, body, self.capture, rt)
        await check_objects(flow, body, self.objects)
        policy = rt.policy(flow.caller)
        check_endpoint(flow, policy, self.metrics)
        endpoint = flow.endpoint
        if endpoint is not None and endpoint.kind == "batch":
            await self.batches.admit_create(flow, body.parsed, policy, rt, request)
        elif endpoint is not None and endpoint.kind in UNSEEN_KINDS:
            await reserve_unseen(flow, rt, body, self.quota, policy, self.unseen.holds)
        elif endpoint is not None and endpoint.metered:
            self.background.admit(flow)
            priced = check_priced(flow, rt, policy, self.metrics)
            await reserve(flow, rt, body, self.quota, policy, self.contexts, self.prompts,
                          priced)
        elif endpoint is not None:
            await admit_billable(flow, rt, self.quota, policy)
        await self.batches.resolve(flow, request)
        return body

    def upstream_url(self, request: web.Request, flow: Flow, rt: Runtime) -> URL:
        """The canonical path goes upstream as it is: no client-side normalising after it."""
        query = request.rel_url.raw_query_string
        return URL(rt.settings.server.upstream
                   + strip_query(flow.path + ("?" + query if query else "")), encoded=True)

    async def _forward(self, request: web.Request, flow: Flow, rt: Runtime, body: Body
                       ) -> web.StreamResponse:
        headers = upstream_headers(request, flow, rt, body.changed)
        self.biller.start(flow)  # the start marker, before anything can be spent
        upstream = await self.send(request.method, self.upstream_url(request, flow, rt),
                                   headers, body.data, flow, rt)
        if isinstance(upstream, web.Response):
            return upstream
        async with upstream:
            flow.status = upstream.status
            location = upstream.headers.get("location")
            if flow.route is not None and flow.route.kind == "realtime_call":
                flow.location = location
            meter = (await self.batches.meter(flow, upstream.status)
                     or self.background.meter(flow, upstream.status, upstream.content_type)
                     or response_meter(flow, upstream.status, upstream.content_type,
                                       body.strip_usage, location, flow.scrubber))
            return await self._relay(request, upstream, flow, meter)

    async def send(self, method: str, url: URL | str, headers: list[tuple[str, str]],
                   data: object, flow: Flow, rt: Runtime
                   ) -> aiohttp.ClientResponse | web.Response:
        """The upstream's answer (headers in), or faregate's own when it gave none."""
        server = rt.settings.server
        rid = flow.request_id
        sent = time.perf_counter()
        flow.forwarded = True
        try:
            async with asyncio.timeout(server.response_timeout_s):
                upstream = await self.client.request(
                    method, url, headers=headers, data=data, allow_redirects=False)
        except BodyTooLarge:
            flow.status = 413
            return errors.request_too_large(server.max_body_bytes, rid)
        except BodyUnreadable:
            flow.status = 400
            return unreadable(flow, _REPEATED_FIELD).response
        except (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            flow.status = 504
            return errors.upstream_timeout(type(exc).__name__, rid)
        except aiohttp.ClientError as exc:
            if isinstance(data, UploadCounter) and data.too_large:
                flow.status = 413
                return errors.request_too_large(server.max_body_bytes, rid)
            if isinstance(data, UploadCounter) and data.unreadable:
                flow.status = 400
                return unreadable(flow, _REPEATED_FIELD).response
            flow.status = 502
            return errors.upstream_unavailable(type(exc).__name__, rid)
        flow.upstream_wait = time.perf_counter() - sent
        return upstream

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     flow: Flow, meter: ResponseMeter) -> web.StreamResponse:
        """Relay the body through its meter; the charge is billed before the end."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in response_headers(upstream, flow, length_changes=meter.rewrites):
            response.headers.add(k, v)
        complete = False
        try:
            await response.prepare(request)
            self._observe_latency(flow)
            captured, answer = flow.captured_response, flow.answer
            early = (flow.route is not None and flow.route.action == "create"
                     and isinstance(meter, SseMeter))
            async for chunk in upstream.content.iter_any():
                if captured is not None and len(captured) < MAX_TEXT:
                    captured += chunk[: MAX_TEXT - len(captured)]
                if answer is not None and len(answer) < KEEP_BYTES:
                    answer += chunk[: KEEP_BYTES - len(answer)]
                out = meter.feed(chunk)
                if out:
                    await response.write(out)
                if early and meter.response_id:  # type: ignore[attr-defined]
                    early = self._bind_early(flow, meter.response_id,  # type: ignore[attr-defined]
                                             upstream.status)
                if meter.ended and not flow.billed:  # the terminal event is in: bill, send it
                    await self._end(flow, meter, response, request)
            await self._end(flow, meter, response, request)
            complete = True
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            if not complete:  # the client went away mid-answer
                complete = await self._read_on(upstream, flow, meter, request)
            upstream.close()
        except (aiohttp.ClientPayloadError, aiohttp.ClientError, asyncio.TimeoutError):
            flow.cut_short = True  # upstream broke or stalled mid-body
            log.warning("upstream body cut short", extra={"request_id": flow.request_id})
            upstream.close()
            if request.transport is not None:
                request.transport.close()  # the client must see a broken body, not EOF
        finally:
            if not complete:  # cut short: what was seen so far is what gets charged
                meter.abort()
                self._bill(flow, meter, request)
        return response

    async def _end(self, flow: Flow, meter: ResponseMeter, response: web.StreamResponse,
                   request: web.Request) -> None:
        """The answer's end is in: bill the call (once), then send what the meter held."""
        tail = meter.close()
        if not flow.billed:
            self._bill(flow, meter, request)
            await meter.finish()
        if tail:
            await response.write(tail)

    async def _read_on(self, upstream: aiohttp.ClientResponse, flow: Flow,
                       meter: ResponseMeter, request: web.Request) -> bool:
        """The client left mid-answer. An answer the upstream has already made (JSON) is
        read on to its end (bounded by `cancel_grace_s`) and its real usage charged; a
        stream is not read on (that would keep the model generating at the caller's
        cost): it is charged as cut short — the prompt as reserved and at least the output
        the client was sent. True when the answer was read whole and billed."""
        if flow.billed:
            return True
        if not meter.read_on:
            flow.cut_short = True
            return False
        try:
            async with asyncio.timeout(self.runtime().settings.server.cancel_grace_s):
                async for chunk in upstream.content.iter_any():
                    meter.feed(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            flow.cut_short = True
            return False
        meter.close()
        self._bill(flow, meter, request)
        await meter.finish()
        return True

    def _bill(self, flow: Flow, meter: ResponseMeter, request: web.Request) -> None:
        """Take the meter's reading and bill the call (once), binding what it created; a
        background response that is not final yet keeps its hold and is followed up."""
        if flow.billed:
            return
        reading = meter.reading(complete=not flow.cut_short)
        if reading is not None:
            flow.reading = reading
            self.unseen.after_call(flow)  # a minted key or a WebRTC/SIP call: noted, held
            self._learn_prompt(flow)
            self.background.track(flow, request.headers)
        owned: list = []  # the owner of what the call created: journaled with its charge
        if flow.route is not None and 200 <= flow.status < 300 and not flow.cut_short:
            if flow.answer is None:  # a metered answer: its id is in its reading
                self.objects.bind_created(flow.route, flow.caller, flow.reading.response_id,
                                          flow.store, owned)
            else:
                self.objects.after_answer(flow.route, flow.caller, flow.answer, flow.store,
                                          flow.location)
        self.biller.bill_call(flow, owned)
        if flow.status >= 400:
            log_refusal(flow, meter)

    def _bind_early(self, flow: Flow, object_id: str, status: int) -> bool:
        """Bind a streamed response as soon as its id shows (it can be cancelled at once)."""
        if 200 <= status < 300:
            self.objects.bind_created(flow.route, flow.caller, object_id, flow.store)
        return False

    def _learn_prompt(self, flow: Flow) -> None:
        """A stored prompt's answer names its model: later calls are checked against it."""
        facts, model = flow.facts, flow.reading.model
        if facts.prompt_id is None or facts.model is not None or not model or not flow.caller:
            return
        allowed = self.runtime().policy(flow.caller).allows(model)
        self.prompts.learn(facts.prompt_id, model, allowed, flow.caller.tenant)

    def _observe_latency(self, flow: Flow) -> None:
        flow.overhead = (time.perf_counter() - flow.started) - flow.upstream_wait
        label = endpoint_label(flow.endpoint)
        self.metrics.upstream_latency.labels(label).observe(flow.upstream_wait)
        self.metrics.proxy_overhead.labels(label).observe(flow.overhead)

    def _keep_capture(self, flow: Flow) -> None:
        if (self.capture is not None and flow.captured_response is not None
                and flow.forwarded and flow.caller):
            self.capture.exchange(
                f"rest-{flow.caller.tenant}", flow.request_id, flow.path,
                flow.captured_request or b"", bytes(flow.captured_response), flow.status,
                flow.scrubber.bytes if flow.scrubber else None)


def log_refusal(flow: Flow, meter: ResponseMeter) -> None:
    """The upstream refused a call because of its credential or failed: say so (its
    message scrubbed of the key's fragments; other refusals may quote the caller's input)."""
    message = getattr(meter, "message", None)
    if flow.status in (401, 403) or flow.status >= 500:
        log.warning("upstream refused the call", extra={
            "request_id": flow.request_id, "status": flow.status, "upstream_message": message,
            "tenant": flow.caller.tenant if flow.caller else None})


def log_flow(flow: Flow, on: bool) -> None:
    """One access-log line per call (skipped cheaply when the log is off)."""
    if not on or not access_log.isEnabledFor(logging.INFO):
        return
    caller = flow.caller
    log_access({
        "request_id": flow.request_id,
        "method": flow.method,
        "endpoint": endpoint_label(flow.endpoint),
        "status": flow.status,
        "tenant": caller.tenant if caller else None,
        "key_id": caller.key_id if caller else None,
        "model": flow.model,
        "ms": round(flow.elapsed_ms(), 2),
        "upstream_ms": round(flow.upstream_wait * 1000, 2),
    })
