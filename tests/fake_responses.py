"""Background responses and the Responses WebSocket mode on the fake upstream.

`FakeResponses(upstream)` takes over `POST /v1/responses` of a `FakeUpstream`
and adds what the real API does around a stored response:

- `background: true` answers at once with status `queued` and no usage; the
  response completes `run_s` seconds later (its usage as the plain fake
  computes it). `GET /v1/responses/{id}` shows `in_progress` until then,
  `completed` with its usage after; `?stream=true&starting_after=N` replays
  its events after sequence number N (the last one `response.completed`).
  With `stream: true` the create streams those events itself, slowed by
  `event_delay_s`; a client that leaves does not stop the response.
- `POST /v1/responses/{id}/cancel`: a running response becomes `cancelled`
  with the usage it had so far (`cancel_output` output tokens).
- `DELETE /v1/responses/{id}`: gone (later GETs are 404).
- `GET /v1/responses` upgraded to a WebSocket: each `response.create` event
  gets the streamed events of a plain call, as JSON text frames.

`polls[id]` counts the GETs of each response.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

FINAL = ("completed", "failed", "cancelled", "incomplete")


@dataclass
class Stored:
    final: dict  # the response as it is when done
    events: list[dict]
    done_at: float
    status: str = "queued"  # queued -> in_progress -> completed | cancelled
    usage: dict | None = None  # when cancelled: what it had used
    polls: int = 0
    extra: dict = field(default_factory=dict)

    def now(self) -> dict:
        if self.status not in FINAL and time.monotonic() >= self.done_at:
            self.status = "completed"
        if self.status == "completed":
            return self.final
        pending = {**self.final, "status": self.status, "output": [], "usage": self.usage,
                   "completed_at": None}
        return pending


class FakeResponses:
    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.stored: dict[str, Stored] = {}
        self.run_s = 0.3
        self.event_delay_s = 0.0
        self.cancel_output = 3
        self.sockets: list[list[dict]] = []  # client events received per WebSocket
        upstream.add_route("POST", "/v1/responses", self._create)
        upstream.add_route("GET", "/v1/responses/", self._get, prefix=True)
        upstream.add_route("POST", "/v1/responses/", self._cancel, prefix=True)
        upstream.add_route("DELETE", "/v1/responses/", self._delete, prefix=True)
        upstream.add_route("GET", "/v1/responses", self._socket)

    def polls(self, rid: str) -> int:
        return self.stored[rid].polls

    async def _create(self, request: web.Request) -> web.StreamResponse:
        p = self.upstream.last_request.json or {}
        response, events = self.upstream.response_parts(request.path, p)
        if not p.get("background"):
            if p.get("stream"):
                return await self._stream(request, events)
            return self.upstream._json(response)
        stored = Stored(response, events, time.monotonic() + self.run_s)
        self.stored[response["id"]] = stored
        if p.get("stream"):
            return await self._stream(request, events)
        return self.upstream._json(stored.now())

    async def _stream(self, request: web.Request, events: list[dict]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        try:
            await resp.prepare(request)
            for event in events:
                if self.event_delay_s:
                    await asyncio.sleep(self.event_delay_s)
                await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client left; a background response runs on regardless
        return resp

    def _find(self, request: web.Request) -> tuple[str, Stored | None]:
        rid = request.path.removeprefix("/v1/responses/").split("/", 1)[0]
        return rid, self.stored.get(rid)

    @staticmethod
    def _missing(rid: str) -> web.Response:
        return web.json_response({"error": {"message": f"Response with id '{rid}' not found.",
                                            "type": "invalid_request_error", "param": None,
                                            "code": None}}, status=404)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        rid, stored = self._find(request)
        if stored is None:
            return self._missing(rid)
        stored.polls += 1
        if request.query.get("stream") != "true":
            return self.upstream._json(stored.now())
        while stored.now()["status"] not in FINAL:
            await asyncio.sleep(0.02)
        after = int(request.query.get("starting_after", "-1"))
        return await self._stream(request, [e for e in stored.events
                                            if e["sequence_number"] > after])

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        rid, stored = self._find(request)
        if stored is None or not request.path.endswith("/cancel"):
            return self._missing(rid)
        if stored.now()["status"] not in FINAL:
            stored.status = "cancelled"
            prompt = stored.final["usage"]["input_tokens"]
            out = self.cancel_output
            stored.usage = {"input_tokens": prompt, "output_tokens": out,
                            "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens_details": {"reasoning_tokens": 0},
                            "total_tokens": prompt + out}
        return self.upstream._json(stored.now())

    async def _delete(self, request: web.Request) -> web.Response:
        rid, stored = self._find(request)
        if stored is None:
            return self._missing(rid)
        del self.stored[rid]
        return web.json_response({"id": rid, "object": "response.deleted", "deleted": True})

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        """The Responses WebSocket mode: one streamed answer per `response.create`."""
        if request.headers.get("upgrade", "").lower() != "websocket":
            return web.json_response({"error": {"message": "Invalid URL (GET /v1/responses)",
                                                "type": "invalid_request_error"}}, status=404)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen: list[dict] = []
        self.sockets.append(seen)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event: Any = json.loads(msg.data)
            seen.append(event)
            if event.get("type") != "response.create":
                continue
            body = {k: v for k, v in event.items() if k != "type"}
            _, events = self.upstream.response_parts("/v1/responses", body)
            for e in events:
                if self.event_delay_s:
                    await asyncio.sleep(self.event_delay_s)
                await ws.send_str(json.dumps(e))
        return ws
