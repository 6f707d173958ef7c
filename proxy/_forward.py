"""REST and SSE forwarding: `ANY /v1/*` to the upstream and back.

The request is read only as far as metering needs (a JSON body is parsed;
uploads stream through), the caller is identified, the call is forwarded on
one pooled `ClientSession`, and the response is streamed back untouched
while a sample of it (or the SSE meter) finds the usage report. Just before
the response's last bytes go out the flow is settled: priced, recorded,
counted — so a client never holds a complete answer whose charge is not yet
in the ledger journal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import aiohttp
import orjson
from aiohttp import web

from faregate.pricing import ToolScan, find_json_str, find_service_tier, find_usage

from . import _errors as errors
from ._batches import batch_route, open_tap
from ._batches import prepare as prepare_batch
from ._body import HEAD_BYTES, BodySample, BodyTooLarge, UploadCounter, read_bounded, read_head
from ._capture import MAX_TEXT
from ._endpoints import (
    classify,
    facts_from_json,
    facts_from_multipart_head,
    inject_include_usage,
)
from ._flow import Flow
from ._identity import MissingUpstreamKey, UnknownKey, bearer_token
from ._meter import settle
from ._quota import Refusal
from ._reserve import cost_nanos, worst_case
from ._runtime import Runtime
from ._secrets import minted_secret
from ._sse import SseMeter
from ._state import State
from ._tags import BadTags, request_tags, strip_query

log = logging.getLogger("faregate.forward")

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
_NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "api-key", "content-length", "expect"}


def _connection_listed(headers) -> set[str]:
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


def upstream_headers(request: web.Request, flow: Flow, rt: Runtime, body_changed: bool):
    """The client's headers minus hop-by-hop and faregate's own, plus auth."""
    ident = rt.settings.identity
    headers = request.headers
    # Metered responses (and Batch API answers) must be readable: ask for identity.
    readable = flow.endpoint is not None or flow.batch is not None
    drop = _request_drop(ident.tenant_header, ident.user_header, readable)
    encoded = "content-encoding" in headers
    if encoded or "connection" in headers:
        # aiohttp hands faregate a decompressed body: it is sent as what it now is.
        drop = drop | _connection_listed(headers) | ({"content-encoding"} if encoded else set())
    out = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    if flow.caller and flow.caller.upstream_authorization:
        out.append(("Authorization", flow.caller.upstream_authorization))
    length = headers.get("content-length")
    if length is not None and not body_changed and not encoded:
        out.append(("Content-Length", length))
    if readable:
        out.append(("Accept-Encoding", "identity"))
    return out


def response_headers(upstream: aiohttp.ClientResponse, flow: Flow, length_changes: bool):
    drop = _RESPONSE_DROP[length_changes]
    if "connection" in upstream.headers:
        drop = drop | _connection_listed(upstream.headers)
    out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in drop]
    out.append(("x-faregate-request-id", flow.request_id))
    return out


class Forwarder:
    """The `/v1/*` handler. One instance per app; state lives in `State`."""

    def __init__(self, state: State):
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        rt = state.runtime
        flow = Flow(request.method, request.path, classify(request.method, request.path))
        flow.batch = batch_route(request.method, request.path)
        settled = False

        def settle_once() -> None:
            nonlocal settled
            if not settled:
                settled = True
                markup = rt.markup(flow.caller.tenant) if flow.caller is not None else None
                charge = settle(flow, rt.prices, state.metrics, state.record, markup)
                if flow.admission is not None:
                    self._settle_quota(flow, charge)

        try:
            return await self._handle(request, flow, rt, settle_once)
        finally:
            settle_once()
            state.log_flow(flow)
            if flow.captured_response is not None and flow.forwarded and flow.caller:
                state.capture.exchange(
                    f"rest-{flow.caller.tenant}", flow.request_id, flow.path,
                    flow.captured_request or b"", bytes(flow.captured_response), flow.status)

    def _settle_quota(self, flow: Flow, charge) -> None:
        quota, admission = self.state.quota, flow.admission
        now = datetime.now(timezone.utc)
        if charge is None or not flow.forwarded or flow.status in (502, 504):
            # Never reached the upstream (or it never answered): nothing was spent.
            quota.release(admission, uncount=True)
            self.state.upstream.give_back(admission.policy.tenant, flow.upstream_tokens)
            return
        if flow.upstream_tokens:
            self.state.upstream.give_back(
                admission.policy.tenant, flow.upstream_tokens - charge.usage.total_tokens)
        quota.settle(admission, charge.cost_nanos, now, charge.usage.total_tokens)
        if self.state.alerting is not None and flow.caller is not None:
            self.state.alerting.note_model(admission.policy, now, charge.family or charge.model,
                                           charge.cost_nanos)

    async def _handle(
        self, request: web.Request, flow: Flow, rt: Runtime, settle_once: Callable[[], None]
    ) -> web.StreamResponse:
        server = rt.settings.server
        limit = server.max_body_bytes
        rid = flow.request_id
        if request.content_length is not None and request.content_length > limit:
            flow.status = 413
            return errors.request_too_large(limit, rid)

        endpoint = flow.endpoint
        body: Any = None
        parsed: Any = None
        body_changed = strip_usage = False
        try:
            if endpoint is not None and endpoint.body == "json":
                raw = await read_bounded(request.content, limit)
                try:
                    parsed = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    parsed = None  # the upstream answers malformed JSON itself
                flow.facts = facts_from_json(endpoint, parsed, len(raw))
                if (
                    endpoint.kind == "chat"
                    and flow.facts.stream
                    and not flow.facts.include_usage
                    and isinstance(parsed, dict)
                ):
                    raw = orjson.dumps(inject_include_usage(parsed))
                    body_changed = strip_usage = True
                body = raw
            elif request.body_exists:
                head = await read_head(request.content, HEAD_BYTES)
                if endpoint is not None:
                    flow.facts = facts_from_multipart_head(head, request.content_length or 0)
                body = UploadCounter(head, request.content, limit)
        except BodyTooLarge:
            flow.status = 413
            return errors.request_too_large(limit, rid)

        try:
            flow.caller = rt.directory.identify(
                bearer_token(request.headers), request.headers, flow.facts.user
            )
        except UnknownKey:
            flow.status = 401
            return errors.invalid_api_key(rid)
        except MissingUpstreamKey:
            flow.status = 500
            return errors.openai_error(
                500, "api_error", "upstream_key_missing",
                f"faregate has no upstream key: ${rt.settings.server.upstream_api_key_env} "
                "is not set.", request_id=rid,
            )

        try:
            flow.tags = request_tags(
                request.headers, request.query,
                parsed.get("metadata") if isinstance(parsed, dict) else None)
        except BadTags as exc:
            flow.status = 400
            return errors.invalid_request(f"Bad x-faregate-tags: {exc}", "invalid_tags", rid)
        if self.state.capturing(flow.caller.tenant):
            flow.captured_response = bytearray()
            flow.captured_request = body if isinstance(body, bytes) else (
                b"" if body is None else b"(binary upload, not captured)")

        if (
            endpoint is not None
            and rt.settings.pricing.unknown_model == "reject"
            and flow.facts.model is not None
            and rt.prices.entry(flow.facts.model, None) is None
        ):
            flow.status = 403
            self.state.metrics.quota_rejections.labels(flow.caller.tenant, "model").inc()
            return errors.model_not_allowed(
                f"The model {flow.facts.model!r} has no price in faregate and unknown models "
                "are refused here; add [pricing.models] for it.",
                rid,
            )

        if endpoint is not None:
            refusal = await self._admit(flow, rt, parsed)
            if refusal is not None:
                flow.status = refusal.status
                return refusal.response(rid)
        return await self._forward(
            request, flow, rt, body, body_changed, strip_usage, settle_once
        )

    async def _admit(self, flow: Flow, rt: Runtime, parsed: Any) -> Refusal | None:
        """Hold the call's worst-case cost against its budgets, or refuse it."""
        assert flow.endpoint is not None and flow.caller is not None
        policy = rt.policy(flow.caller)
        now = datetime.now(timezone.utc)
        usage, tpm_tokens = worst_case(flow.endpoint, flow.facts, parsed,
                                       policy.default_max_output_tokens, rt.prices, now)
        amount = cost_nanos(usage, flow.facts.model, rt.prices, now)
        images = flow.facts.images if flow.endpoint.kind == "images" else 0
        if self.state.quota.leasing:
            await self.state.quota.ensure(policy, amount, now)
        result = self.state.quota.admit(policy, amount, now, model=flow.facts.model,
                                        images=images, tpm_tokens=tpm_tokens)
        if isinstance(result, Refusal):
            return result
        shared = rt.settings.upstream_limits
        if shared.rpm or shared.tpm:
            refused = self.state.upstream.admit(flow.caller.tenant, shared.rpm, shared.tpm,
                                                tpm_tokens)
            if refused is not None:
                self.state.quota.release(result, uncount=True)
                self.state.metrics.quota_rejections.labels(flow.caller.tenant,
                                                           refused.reason).inc()
                return refused
            flow.upstream_tokens = tpm_tokens if shared.tpm else 0
        flow.admission = result
        return None

    async def _forward(
        self,
        request: web.Request,
        flow: Flow,
        rt: Runtime,
        body: Any,
        body_changed: bool,
        strip_usage: bool,
        settle_once: Callable[[], None],
    ) -> web.StreamResponse:
        server = rt.settings.server
        rid = flow.request_id
        url = server.upstream + strip_query(request.rel_url.raw_path_qs)
        if flow.batch is not None:
            await prepare_batch(self.state, flow)
        headers = upstream_headers(request, flow, rt, body_changed)
        sent = time.perf_counter()
        flow.forwarded = True
        try:
            async with asyncio.timeout(server.response_timeout_s):
                upstream = await self.state.client.request(
                    request.method, url, headers=headers, data=body,
                    allow_redirects=False,
                )
        except BodyTooLarge:
            flow.status = 413
            return errors.request_too_large(server.max_body_bytes, rid)
        except (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            flow.status = 504
            return errors.upstream_timeout(type(exc).__name__, rid)
        except aiohttp.ClientError as exc:
            if isinstance(body, UploadCounter) and body.too_large:
                flow.status = 413
                return errors.request_too_large(server.max_body_bytes, rid)
            flow.status = 502
            return errors.upstream_unavailable(type(exc).__name__, rid)

        async with upstream:
            flow.upstream_wait = time.perf_counter() - sent
            flow.status = upstream.status
            return await self._relay(request, upstream, flow, strip_usage, settle_once)

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        flow: Flow,
        strip_usage: bool,
        settle_once: Callable[[], None],
    ) -> web.StreamResponse:
        """Relay the body; the charge is recorded before the client sees its end.

        A recorded flow's last bytes (the held-back last chunk, or the end of a
        chunked stream) are sent only after `settle_once()` has put the charge
        in the ledger journal, so no client can hold a complete response whose
        charge a crash right after could still lose.
        """
        metered = flow.endpoint is not None and upstream.status < 400
        is_sse = upstream.content_type == "text/event-stream"
        meter = SseMeter(flow.endpoint.kind, strip_usage=strip_usage) if (
            metered and is_sse
        ) else None
        sample = BodySample(
            ToolScan() if flow.endpoint.kind == "responses" else None
        ) if metered and meter is None else None
        tap = await open_tap(self.state, flow, upstream.status) if flow.batch else None

        taken = False
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in response_headers(upstream, flow, length_changes=meter is not None):
            response.headers.add(k, v)
        try:
            await response.prepare(request)
            flow.overhead = (time.perf_counter() - flow.started) - flow.upstream_wait
            endpoint_label = flow.endpoint.path if flow.endpoint else "other"
            metrics = self.state.metrics
            metrics.upstream_latency.labels(endpoint_label).observe(flow.upstream_wait)
            metrics.proxy_overhead.labels(endpoint_label).observe(flow.overhead)
            # Recorded flows keep their last chunk until the charge is journalled.
            hold = (flow.endpoint is not None and meter is None) or tap is not None
            held = b""
            captured = flow.captured_response
            async for chunk in upstream.content.iter_any():
                flow.response_bytes += len(chunk)
                if captured is not None and len(captured) < MAX_TEXT:
                    captured += chunk[: MAX_TEXT - len(captured)]
                if meter is not None:
                    chunk = meter.feed(chunk)
                elif sample is not None:
                    sample.add(chunk)
                elif tap is not None:
                    tap.feed(chunk)
                if hold:
                    chunk, held = held, chunk
                if chunk:
                    await response.write(chunk)
            if meter is not None:
                rest = meter.close()
                if rest:
                    await response.write(rest)
            self._take_usage(flow, meter, sample)
            taken = True
            settle_once()
            if tap is not None:
                await tap.finish()
                tap = None
            if held:
                await response.write(held)
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
            if not taken:  # cut short: what was seen so far is what gets charged
                self._take_usage(flow, meter, sample)
            if tap is not None:
                tap.abort()
        return response

    def _take_usage(self, flow: Flow, meter: SseMeter | None, sample: BodySample | None) -> None:
        if meter is not None:
            flow.usage = meter.usage
            flow.served_model = meter.model
            flow.deltas = meter.deltas
            flow.service_tier = meter.service_tier
            if meter.tools is not None:
                flow.tool_calls = meter.tools.fee_keys(flow.facts.tools)
        elif sample is not None:
            self._read_sample(flow, sample)

    def _read_sample(self, flow: Flow, sample: BodySample) -> None:
        if flow.cut_short:
            return
        if flow.endpoint is not None and flow.endpoint.kind == "client_secret":
            self._note_secret(flow, sample)
            return
        flow.usage = find_usage(sample.tail)
        flow.service_tier = find_service_tier(sample.tail)
        if sample.tools is not None:
            flow.tool_calls = sample.tools.fee_keys(flow.facts.tools)
        if b'"model"' in sample.head:
            flow.served_model = find_json_str(bytes(sample.head), "model", HEAD_BYTES)

    def _note_secret(self, flow: Flow, sample: BodySample) -> None:
        if flow.caller is None or sample.size > len(sample.head):
            return
        try:
            body = orjson.loads(bytes(sample.head))
        except orjson.JSONDecodeError:
            return
        minted = minted_secret(body) if isinstance(body, dict) else None
        if minted is not None:
            self.state.secrets.note(minted[0], flow.caller, minted[1])
            if isinstance(body.get("session"), dict):
                flow.served_model = find_json_str(bytes(sample.head), "model", HEAD_BYTES)
