"""The REST edge: `ANY /v1/*` to the upstream and back, as a thin loop.

A call goes through named steps — read the body, identify the caller, read
its tags, refuse unpriced models, reserve its worst case — then is forwarded
on one pooled `ClientSession`; the answer streams back through the meter
its shape gets. The meter holds back the answer's last bytes until the
biller has put the charge in the ledger journal, so a client never holds a
complete answer whose charge a crash could still lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import aiohttp
from aiohttp import web

from .. import _errors as errors
from .._capture import MAX_TEXT, Capture
from .._metrics import Metrics
from .._runtime import Runtime
from ..caller import SecretBook, strip_query
from ..meter import (
    Biller,
    Contexts,
    Flow,
    ResponseMeter,
    classify,
    endpoint_label,
    response_meter,
)
from ..quota import Quota
from ._admission import check_priced, reserve
from ._batches import Batches, batch_route
from ._body import BodyTooLarge, UploadCounter
from ._headers import response_headers, upstream_headers
from ._intake import Body, Refused, identify, read_body, read_tags, start_capture

log = logging.getLogger("faregate.forward")
access_log = logging.getLogger("faregate.access")


class Forwarder:
    """The `/v1/*` handler for plain HTTP calls. One per app."""

    def __init__(self, runtime: Callable[[], Runtime], client: aiohttp.ClientSession,
                 quota: Quota, biller: Biller, batches: Batches, secrets: SecretBook,
                 metrics: Metrics, capture: Capture | None, contexts: Contexts) -> None:
        self.runtime = runtime
        self.client = client
        self.quota = quota
        self.biller = biller
        self.batches = batches
        self.secrets = secrets
        self.metrics = metrics
        self.capture = capture
        self.contexts = contexts

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime()
        flow = Flow(request.method, request.path, classify(request.method, request.path))
        flow.batch = batch_route(request.method, request.path)
        try:
            body = await self._admit(request, flow, rt)
            return await self._forward(request, flow, rt, body)
        except Refused as refused:
            flow.status = refused.response.status
            return refused.response
        finally:
            self.biller.bill_call(flow)
            log_flow(flow)
            self._keep_capture(flow)

    async def _admit(self, request: web.Request, flow: Flow, rt: Runtime) -> Body:
        """The steps before forwarding; each may refuse the call."""
        body = await read_body(request, flow, rt.settings.server.max_body_bytes)
        identify(request, flow, rt)
        read_tags(request, flow, body)
        start_capture(flow, body, self.capture, rt)
        if flow.endpoint is not None:
            check_priced(flow, rt, self.metrics)
            await reserve(flow, rt, body, self.quota, self.contexts)
        await self.batches.resolve(flow)
        return body

    async def _forward(self, request: web.Request, flow: Flow, rt: Runtime, body: Body
                       ) -> web.StreamResponse:
        server = rt.settings.server
        rid = flow.request_id
        url = server.upstream + strip_query(request.rel_url.raw_path_qs)
        headers = upstream_headers(request, flow, rt, body.changed)
        sent = time.perf_counter()
        flow.forwarded = True
        try:
            async with asyncio.timeout(server.response_timeout_s):
                upstream = await self.client.request(
                    request.method, url, headers=headers, data=body.data,
                    allow_redirects=False)
        except BodyTooLarge:
            flow.status = 413
            return errors.request_too_large(server.max_body_bytes, rid)
        except (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            flow.status = 504
            return errors.upstream_timeout(type(exc).__name__, rid)
        except aiohttp.ClientError as exc:
            if isinstance(body.data, UploadCounter) and body.data.too_large:
                flow.status = 413
                return errors.request_too_large(server.max_body_bytes, rid)
            flow.status = 502
            return errors.upstream_unavailable(type(exc).__name__, rid)
        async with upstream:
            flow.upstream_wait = time.perf_counter() - sent
            flow.status = upstream.status
            meter = await self.batches.meter(flow, upstream.status) or response_meter(
                flow, upstream.status, upstream.content_type, body.strip_usage)
            return await self._relay(request, upstream, flow, meter)

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
            captured = flow.captured_response
            async for chunk in upstream.content.iter_any():
                if captured is not None and len(captured) < MAX_TEXT:
                    captured += chunk[: MAX_TEXT - len(captured)]
                out = meter.feed(chunk)
                if out:
                    await response.write(out)
            tail = meter.close()
            complete = True
            self._bill(flow, meter)
            await meter.finish()
            if tail:
                await response.write(tail)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            flow.cut_short = True  # client went away: stop reading, drop the upstream
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
                self._bill(flow, meter)
        return response

    def _bill(self, flow: Flow, meter: ResponseMeter) -> None:
        """Take the meter's reading and bill the call (once)."""
        if flow.billed:
            return
        reading = meter.reading(complete=not flow.cut_short)
        if reading is not None:
            flow.reading = reading
            if reading.minted is not None and flow.caller is not None:
                self.secrets.note(reading.minted[0], flow.caller, reading.minted[1])
        self.biller.bill_call(flow)

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
                flow.captured_request or b"", bytes(flow.captured_response), flow.status)


def log_flow(flow: Flow) -> None:
    """One access-log line per call (skipped cheaply when the log is off)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    caller = flow.caller
    access_log.info(
        "request",
        extra={
            "request_id": flow.request_id,
            "method": flow.method,
            "endpoint": endpoint_label(flow.endpoint),
            "status": flow.status,
            "tenant": caller.tenant if caller else None,
            "key_id": caller.key_id if caller else None,
            "model": flow.model,
            "ms": round(flow.elapsed_ms(), 2),
            "upstream_ms": round(flow.upstream_wait * 1000, 2),
        },
    )
