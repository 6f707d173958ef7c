"""A fake upstream for Realtime and Live WebSocket sessions (tests only).

`FakeSessions` is an aiohttp server on 127.0.0.1 that speaks enough of
`GET /v1/realtime` and `GET /v1/live/sessions` for the official SDK, plus
`POST /v1/realtime/client_secrets`, and the WebRTC/SIP call endpoints
(`POST /v1/realtime/calls` answers an SDP with `Location:
/v1/realtime/calls/rtc_…`; `POST /v1/realtime/calls/{id}/accept`). Usage is
deterministic so tests can compute exact costs:

Realtime, per `response.done` (the n-th response of a session, n from 1):
  input text tokens   = 10 + words of text items added since the session began
  input audio tokens  = appended audio bytes (decoded) // 4800 (≈ 10 tokens/s at 24 kHz PCM16)
  cached              = for n ≥ 2: half of the previous response's text input
                        and half of its audio input (both inside the totals above)
  output text tokens  = words of the fixed reply (5)
  output audio tokens = AUDIO_DELTAS × 20 when "audio" is in the output modalities
  A `response.create` with its own `input` (out of band) reads that instead of the
  conversation: input text tokens = 10 + words of that input; its `conversation:
  "none"` answer has `conversation_id: null` and joins nothing.
  `hidden_input_tokens` is added to every response's text input (context the
  client never sent: what faregate cannot see).
Server VAD (`vad = True`): session.created announces `server_vad` turn
  detection; once `vad_turn_bytes` of audio were appended since the last turn,
  the server commits the buffer (speech_started/stopped, committed) and starts
  a response itself. With `honour_caps`, `response.done` never reports more
  output than the session's (or the response's) `max_output_tokens`.
Live: `session.start` → `session.started`; each `session.input_audio.append`
  → `session.output_audio.delta` and a `session.usage.updated` whose
  cumulative seconds grow by 1.5; `session.close` → `session.closed` with the
  final cumulative usage, then a normal close.

Inspection of the REST side: `minted` (secrets), `mint_bodies` (their request
bodies), `calls` (call id, authorization, content type) and `accepted`.
Knobs: `refuse_next = (status, body)`, `close_after_response = (code, reason)`,
`omit_usage`, `delta_delay_s`, `vad`, `vad_turn_bytes`, `hidden_input_tokens`,
`response_delay_s`, `accept_delay_s`, `honour_caps`; inspection: `sessions` (one `SeenSession` per
connection: key, subprotocol, headers, query, events received, close code).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

KEY_PREFIX = "openai-insecure-api-key."
AUDIO_DELTAS = 3
AUDIO_DELTA_BYTES = 4800
REPLY = "Hello from the fake model"
LIVE_SECONDS_STEP = 1.5


@dataclass
class SeenSession:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    key: str | None
    subprotocol: str | None
    events: list[dict] = field(default_factory=list)
    close_code: int | None = None
    cancelled: int = 0

    def types(self) -> list[str]:
        return [e.get("type") for e in self.events]


def _error(message: str, code: str, status: int) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
    return web.json_response(body, status=status)


INVALID_JSON = {"type": "error", "error": {
    "type": "invalid_request_error", "code": "invalid_json",
    "message": "The event is not a JSON object."}}


def _event(data: str) -> dict | None:
    """A client event, or None when the frame is not a JSON object (answered with an error)."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class FakeSessions:
    def __init__(self) -> None:
        self.sessions: list[SeenSession] = []
        self.refuse_next: tuple[int, dict] | None = None
        self.close_after_response: tuple[int, str] | None = None
        self.omit_usage = False
        self.delta_delay_s = 0.0
        self.tool_calls_per_response = 0  # function_call items in each response's output
        self.live_seconds_step = LIVE_SECONDS_STEP  # cumulative Live seconds per audio append
        self.vad = False  # the server detects turns and answers them itself
        self.vad_turn_bytes = 48_000  # appended audio (decoded) that makes one turn
        self.hidden_input_tokens = 0  # text input every response carries unseen
        self.response_delay_s = 0.0  # before each response.done
        self.accept_delay_s = 0.0  # before a handshake is answered
        self.honour_caps = False  # output stays within max_output_tokens (as upstream)
        self.minted: list[str] = []
        self.mint_bodies: list[dict] = []
        self.calls: list[tuple[str, str, str]] = []
        self.accepted: list[str] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> "FakeSessions":
        app = web.Application()
        app.router.add_get("/v1/realtime", self.realtime)
        app.router.add_get("/v1/live/sessions", self._live)
        app.router.add_post("/v1/realtime/client_secrets", self._client_secret)
        app.router.add_post("/v1/realtime/calls", self._call)
        app.router.add_post("/v1/realtime/calls/{call_id}/accept", self._accept_call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):05d}"

    # -- handshake ------------------------------------------------------------

    async def _accept(self, request: web.Request) -> tuple[web.StreamResponse, SeenSession | None]:
        if self.accept_delay_s:
            await asyncio.sleep(self.accept_delay_s)
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")
                   if p.strip()]
        key = next((p[len(KEY_PREFIX):] for p in offered if p.startswith(KEY_PREFIX)), None)
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        key = key or request.headers.get("api-key")  # Azure OpenAI
        if self.refuse_next is not None:
            status, body = self.refuse_next
            self.refuse_next = None
            return web.json_response(body, status=status), None
        if not key:
            return _error("Missing bearer or basic authentication in header",
                          "missing_api_key", 401), None
        seen = SeenSession(request.path, dict(request.query),
                           {k.lower(): v for k, v in request.headers.items()}, key, None)
        protocols = ("realtime",) if "realtime" in offered else ()
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
        await ws.prepare(request)
        seen.subprotocol = ws.ws_protocol
        self.sessions.append(seen)
        return ws, seen

    async def _client_secret(self, request: web.Request) -> web.Response:
        secret = f"ek_fake{next(self._ids):08d}"
        self.minted.append(secret)
        body = await request.json()
        self.mint_bodies.append(body)
        return web.json_response({
            "value": secret, "expires_at": int(time.time()) + 600,
            "session": {"type": "realtime", "model": (body.get("session") or {}).get("model")},
        })

    async def _call(self, request: web.Request) -> web.Response:
        """A WebRTC offer: the answer's SDP, and the call's address in Location."""
        await request.read()
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return _error("Missing bearer authentication", "missing_api_key", 401)
        call_id = self._id("rtc")
        self.calls.append((call_id, auth[7:], request.content_type))
        return web.Response(status=201, text="v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n",
                            content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{call_id}"})

    async def _accept_call(self, request: web.Request) -> web.Response:
        await request.read()
        self.accepted.append(request.match_info["call_id"])
        return web.Response(status=200)

    # -- Realtime -----------------------------------------------------------

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        ws, seen = await self._accept(request)
        if seen is None:
            return ws
        assert isinstance(ws, web.WebSocketResponse)
        model = request.query.get("model", "gpt-realtime")
        state = {"words": 0, "audio": 0, "n": 0, "prev": (0, 0), "modalities": ["audio"],
                 "turn": 0, "cap": None}
        current: dict[str, Any] = {}

        async def send(event: dict) -> None:
            event.setdefault("event_id", self._id("event"))
            await ws.send_str(json.dumps(event))

        turns = {"type": "server_vad", "create_response": True} if self.vad else None
        await send({"type": "session.created", "session": {
            "id": self._id("sess"), "object": "realtime.session", "type": "realtime",
            "model": model, "output_modalities": ["audio"],
            "audio": {"input": {"turn_detection": turns}}}})
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])  # binary frames are echoed reversed
                continue
            if msg.type != WSMsgType.TEXT:
                continue
            event = _event(msg.data)
            if event is None:
                await send(dict(INVALID_JSON))
                continue
            seen.events.append(event)
            try:
                t = event.get("type")
                if t == "session.update":
                    session = event.get("session") or {}
                    state["modalities"] = session.get("output_modalities", state["modalities"])
                    state["cap"] = (session.get("max_output_tokens")
                                    or session.get("max_response_output_tokens") or state["cap"])
                    await send({"type": "session.updated", "session": {
                        "id": "sess", "object": "realtime.session", "type": "realtime",
                        "model": model, "output_modalities": state["modalities"]}})
                elif t == "conversation.item.create":
                    item = event.get("item") or {}
                    for part in item.get("content") or []:
                        state["words"] += len(str(part.get("text", "")).split())
                    await send({"type": "conversation.item.added", "previous_item_id": None,
                                "item": {**item, "id": self._id("item"), "status": "completed"}})
                elif t == "input_audio_buffer.append":
                    size = len(base64.b64decode(event.get("audio", "")))
                    state["audio"] += size
                    state["turn"] += size
                    if self.vad and state["turn"] >= self.vad_turn_bytes:
                        state["turn"] = 0
                        for kind in ("input_audio_buffer.speech_started",
                                     "input_audio_buffer.speech_stopped"):
                            await send({"type": kind, "audio_start_ms": 0, "item_id": "item"})
                        await send({"type": "input_audio_buffer.committed",
                                    "previous_item_id": None, "item_id": self._id("item")})
                        current["task"] = asyncio.create_task(
                            self._respond(ws, send, state, current, None))
                elif t == "input_audio_buffer.commit":
                    await send({"type": "input_audio_buffer.committed", "previous_item_id": None,
                                "item_id": self._id("item")})
                elif t == "response.create":
                    # A response's own output_modalities win over the session's (as upstream).
                    asked = event.get("response") or {}
                    current["task"] = asyncio.create_task(self._respond(
                        ws, send, state, current, asked.get("output_modalities"), asked))
                elif t == "response.cancel":
                    seen.cancelled += 1
                    task = current.get("task")
                    if task is not None and not task.done():
                        current["cancel"] = True
            except (AttributeError, TypeError, ValueError) as exc:  # like the real API: an error event
                await send({"type": "error", "error": {
                    "type": "invalid_request_error", "code": "invalid_event",
                    "message": f"Invalid event: {type(exc).__name__}"}})
        seen.close_code = ws.close_code
        task = current.get("task")
        if task is not None:
            task.cancel()
        return ws

    async def _respond(self, ws: web.WebSocketResponse, send, state: dict, current: dict,
                       modalities: list | None = None, asked: dict | None = None) -> None:
        asked = asked or {}
        inline = asked.get("input")
        out_of_band = asked.get("conversation") == "none" or inline is not None
        cap = asked.get("max_output_tokens") or state["cap"]
        state["n"] += 1
        rid = self._id("resp")
        current["cancel"] = False
        await send({"type": "response.created", "response": {
            "object": "realtime.response", "id": rid, "status": "in_progress", "output": []}})
        audio = "audio" in (modalities or state["modalities"] or [])
        deltas = 0
        for _ in range(AUDIO_DELTAS if audio else 0):
            if current.get("cancel"):
                break
            if self.delta_delay_s:
                await asyncio.sleep(self.delta_delay_s)
            await send({"type": "response.output_audio.delta", "response_id": rid,
                        "item_id": "item", "output_index": 0, "content_index": 0,
                        "delta": base64.b64encode(b"\x01" * AUDIO_DELTA_BYTES).decode()})
            deltas += 1
        if not audio:
            await send({"type": "response.output_text.delta", "response_id": rid,
                        "item_id": "item", "output_index": 0, "content_index": 0,
                        "delta": REPLY})
            await send({"type": "response.output_text.done", "response_id": rid,
                        "item_id": "item", "output_index": 0, "content_index": 0,
                        "text": REPLY})
        if self.response_delay_s:
            await asyncio.sleep(self.response_delay_s)
        if inline is not None:  # its own input, not the conversation
            text_in, audio_in, cached_text, cached_audio = 10 + sum(
                len(str(p.get("text", "")).split()) for item in inline
                for p in (item.get("content") or [])), 0, 0, 0
        else:
            text_in = 10 + state["words"]
            audio_in = state["audio"] // 4800
            prev_text, prev_audio = state["prev"]
            cached_text, cached_audio = prev_text // 2, prev_audio // 2
            if not out_of_band:
                state["prev"] = (text_in, audio_in)
        text_in += self.hidden_input_tokens
        out_text = len(REPLY.split())
        out_audio = deltas * 20
        if self.honour_caps and isinstance(cap, int) and out_text + out_audio > cap:
            out_audio = max(0, cap - out_text)
            out_text = min(out_text, cap)
        usage = {
            "total_tokens": text_in + audio_in + out_text + out_audio,
            "input_tokens": text_in + audio_in,
            "output_tokens": out_text + out_audio,
            "input_token_details": {
                "text_tokens": text_in, "audio_tokens": audio_in, "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text,
                                          "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
        calls = [{"type": "function_call", "id": self._id("item"), "call_id": self._id("call"),
                  "name": "get_weather", "arguments": "{}", "status": "completed"}
                 for _ in range(self.tool_calls_per_response)]
        response = {"object": "realtime.response", "id": rid,
                    "status": "cancelled" if current.get("cancel") else "completed",
                    "output": calls, "conversation_id": None if out_of_band else "conv_1"}
        if not self.omit_usage:
            response["usage"] = usage
        await send({"type": "response.done", "response": response})
        if self.close_after_response:
            code, reason = self.close_after_response
            await ws.close(code=code, message=reason.encode())

    # -- Live ------------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        ws, seen = await self._accept(request)
        if seen is None:
            return ws
        assert isinstance(ws, web.WebSocketResponse)
        session = {"id": self._id("live"), "object": "live.session", "model": None,
                   "expires_at": int(time.time()) + 3600, "status": "active"}
        seconds = 0.0

        async def send(event: dict) -> None:
            event.setdefault("event_id", self._id("event"))
            await ws.send_str(json.dumps(event))

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = _event(msg.data)
            if event is None:
                await send(dict(INVALID_JSON))
                continue
            seen.events.append(event)
            t = event.get("type")
            if t == "session.start":
                session["model"] = (event.get("session") or {}).get("model", "gpt-live-1")
                await send({"type": "session.started", "session": session})
            elif t == "session.input_audio.append":
                await send({"type": "session.output_audio.delta",
                            "delta": base64.b64encode(b"\x02" * 960).decode()})
                seconds += self.live_seconds_step
                await send({"type": "session.usage.updated", "usage": {"seconds": seconds}})
            elif t == "session.close":
                await send({"type": "session.closed", "reason": "close_requested",
                            "session": session, "usage": {"seconds": seconds}})
                await ws.close(code=1000, message=b"session closed")
                break
        seen.close_code = ws.close_code
        return ws

