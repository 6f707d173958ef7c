"""Sans-IO meter for Realtime and Live WebSocket sessions.

The relay feeds every frame to `SessionMeter.server_frame()` /
`client_frame()` and gets back the usages to charge (`Metered`). The meter
knows nothing of sockets, so every event shape is testable without a server.

Client frames are *read*, never sniffed: every one is parsed (strictly: a
frame whose keys could be read two ways is refused, see `_strict`), once,
and the parsed event is handed to every room that needs it — a nested
`"type"` placed before the top-level one cannot hide a `response.create`.
Server frames come from the upstream: their type is taken from the head of
the frame with a regex, and only the few events that carry usage or session
facts are parsed. Audio deltas — the bulk of the traffic — are counted by
length only.

What is charged:
* Realtime `response.done` → its `response.usage`, once per response id.
* `conversation.item.input_audio_transcription.completed` → its `usage`,
  priced with the session's transcription model.
* Live `session.usage.updated` → the *increase* of the cumulative seconds
  (and of cumulative tokens, when reported), never the running total.
* A `response.done` without usage (some deployments never send it) →
  an estimate from what actually flowed — audio both ways, the text the
  model streamed and the text items the client sent — flagged `estimated`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from faregate.pricing import (
    Usage,
    usage_from_realtime,
    usage_from_responses,
    usage_from_transcription,
)

from ._items import NOTHING, Added, items_added
from ._reading import Metered
from ._strict import FRAME_KEYS, Unreadable, strict_json

_TYPE_RE = re.compile(rb'"type"\s*:\s*"([A-Za-z0-9_.]{1,96})"')
HEAD = 256
MAX_PARSE = 8 * 1024 * 1024

#: Rough audio-token rates for estimates (OpenAI: user audio ~10 tokens/s,
#: assistant audio ~20 tokens/s) and PCM16 24 kHz mono bytes per second.
INPUT_AUDIO_TOKENS_PER_S = 10
OUTPUT_AUDIO_TOKENS_PER_S = 20
PCM_BYTES_PER_S = 48_000
_B64_OVERHEAD = 160  # JSON around a delta's base64 payload, roughly
_TEXT_OVERHEAD = 160  # JSON around a text delta, roughly
TEXT_BYTES_PER_TOKEN = 4
SERVER_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.text.delta"})
CLIENT_TEXT_ITEMS = frozenset({"conversation.item.create"})

SERVER_AUDIO = frozenset(
    {"response.output_audio.delta", "response.audio.delta", "session.output_audio.delta"}
)
CLIENT_AUDIO = frozenset({"input_audio_buffer.append", "session.input_audio.append"})
SERVER_PARSED = frozenset(
    {
        "session.created",
        "session.updated",
        "response.created",
        "response.done",
        "conversation.item.input_audio_transcription.completed",
        "session.usage.updated",
        "session.closed",  # Live: carries the final cumulative usage
        "session.started",
        "session.tool_call",  # Live: the model calls the caller's functions
        "error",
    }
)
#: Output items that are the model calling a tool the caller (or a server) runs.
TOOL_CALL_ITEMS = frozenset({"function_call", "mcp_call"})
#: Live wraps delegated Responses events; only their terminal ones carry usage.
_DELEGATED_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


def frame_type(frame: str | bytes) -> str | None:
    """The event `type` of a JSON frame, found without parsing it."""
    raw = frame.encode() if isinstance(frame, str) else frame
    m = _TYPE_RE.search(raw, 0, HEAD)
    if m:
        return m.group(1).decode()
    if len(raw) <= MAX_PARSE:
        obj = parse(raw)
        t = obj.get("type") if obj else None
        return t if isinstance(t, str) else None
    return None


def parse(frame: str | bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A client frame as read once: its top-level event type and the parsed object.
    Handed to every room. `refused` says why a frame meant as JSON cannot be read
    (it is not forwarded)."""

    type: str | None
    obj: dict[str, Any] | None = None
    refused: str | None = None
    inline: Added | None = None  # a response.create's own input (an out-of-band response)


def _meant_as_json(frame: str | bytes) -> bool:
    """Does the frame start (after whitespace and a byte-order mark) like a JSON object —
    the only thing an upstream could take for an event?"""
    head = frame[:64].lstrip() if isinstance(frame, str) else frame[:64].decode(
        "utf-8", "replace").lstrip()
    head = head.lstrip("\ufeff").lstrip()
    return head[:1] == "{"


def read_client_frame(frame: str | bytes) -> ClientEvent:
    """Parse a client frame once: its real top-level `type`, or why it cannot be read."""
    try:
        obj = strict_json(frame, FRAME_KEYS)
    except Unreadable as exc:
        return ClientEvent(None, refused=str(exc)) if _meant_as_json(frame) else ClientEvent(None)
    if not isinstance(obj, dict):
        return ClientEvent(None)
    t = obj.get("type")
    return ClientEvent(t[:96] if isinstance(t, str) else None, obj)


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any, limit: int = 128) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _seconds(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() and d >= 0 else None


@dataclass
class SessionMeter:
    kind: str  # "realtime" or "live"
    model: str | None = None
    upstream_session_id: str | None = None
    transcription_model: str | None = None
    responses: int = 0
    in_progress: set[str] = field(default_factory=set)
    errors: int = 0
    tool_calls: int = 0  # function calls the model made (tool-call caps)
    audio_in_bytes: int = 0  # decoded-size estimate of appended input audio
    audio_out_bytes: int = 0  # since the last response.done
    text_out_bytes: int = 0  # streamed text since the last response.done (estimates)
    text_out_deltas: int = 0
    text_in_bytes: int = 0  # text items the client created since the last response.done
    last_type: str | None = None  # the type of the last server frame
    added: Added = NOTHING  # input the client added to the conversation since the last response
    started: str | None = None  # the response a `response.created` just started
    auto_responses: bool = False  # the server answers turns itself (server/semantic VAD)
    ga: bool = False  # the session speaks the GA shape (`session.type`)
    out_of_band: bool = False  # the last response.done was outside the conversation
    _charged: set[str] = field(default_factory=set)
    _live_seconds: Decimal = Decimal(0)
    _live_paused: Decimal = Decimal(0)
    _live_tokens: dict[str, int] = field(default_factory=dict)

    # -- server -> client ---------------------------------------------------

    def server_frame(self, frame: str | bytes) -> list[Metered]:
        """What one server frame bills (usually nothing); its type stays in `last_type`."""
        t = self.last_type = frame_type(frame)
        self.started = None
        if t is None:
            return []
        if t in SERVER_AUDIO:
            self.audio_out_bytes += max(0, len(frame) - _B64_OVERHEAD) * 3 // 4
            return []
        if t in SERVER_TEXT_DELTAS:
            self.text_out_bytes += max(0, len(frame) - _TEXT_OVERHEAD)
            self.text_out_deltas += 1
            return []
        if t == "response.event":
            raw = frame.encode() if isinstance(frame, str) else frame
            if not any(m in raw for m in _DELEGATED_TERMINAL):
                return []
            obj = parse(raw)
            return self._delegated(obj) if obj is not None else []
        if t not in SERVER_PARSED:
            return []
        obj = parse(frame)
        if obj is None:
            return []
        return self._server_event(t, obj)

    def _server_event(self, t: str, obj: dict[str, Any]) -> list[Metered]:
        if t in ("session.created", "session.updated", "session.started"):
            self._session_facts(obj.get("session") if isinstance(obj.get("session"), dict)
                                else obj)
            return []
        if t == "response.created":
            rid = _text(_dig(obj, "response", "id"))
            if rid:
                self.in_progress.add(rid)
                self.started = rid
            return []
        if t == "response.done":
            return self._response_done(obj)
        if t == "conversation.item.input_audio_transcription.completed":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                return [Metered(usage_from_transcription(usage),
                                self.transcription_model, _text(obj.get("item_id")),
                                "transcription")]
            return []
        if t == "session.usage.updated":
            return self._live_usage(obj)
        if t == "session.closed":
            if isinstance(obj.get("session"), dict):
                self._session_facts(obj["session"])
            return self._live_usage(obj) if isinstance(obj.get("usage"), dict) else []
        if t == "session.tool_call":
            calls = obj.get("calls") if isinstance(obj.get("calls"), list) else [obj]
            self.tool_calls += len(calls)
            return []
        if t == "error":
            self.errors += 1
        return []

    def _session_facts(self, session: dict[str, Any]) -> None:
        self.upstream_session_id = self.upstream_session_id or _text(session.get("id"))
        self.model = _text(session.get("model")) or self.model
        self.ga = self.ga or session.get("type") == "realtime"
        audio = session.get("audio")
        held = audio.get("input") if isinstance(audio, dict) else None
        for where in (held, session):
            if isinstance(where, dict) and "turn_detection" in where:
                turns = where["turn_detection"]
                self.auto_responses = isinstance(turns, dict) and turns.get(
                    "create_response", True) is not False
        tmodel = (
            _dig(session, "audio", "input", "transcription", "model")
            or _dig(session, "input_audio_transcription", "model")
        )
        self.transcription_model = _text(tmodel) or self.transcription_model

    def _response_done(self, obj: dict[str, Any]) -> list[Metered]:
        response = obj.get("response") if isinstance(obj.get("response"), dict) else {}
        rid = _text(response.get("id"))
        if rid:
            self.in_progress.discard(rid)
            if rid in self._charged:
                return []  # a repeated response.done is charged once
            self._charged.add(rid)
        self.responses += 1
        self.out_of_band = "conversation_id" in response and not response["conversation_id"]
        output = response.get("output")
        if isinstance(output, list):
            self.tool_calls += sum(1 for item in output if isinstance(item, dict)
                                   and item.get("type") in TOOL_CALL_ITEMS)
        usage = response.get("usage")
        estimate = self._estimate()
        self._flowed()
        if isinstance(usage, dict):  # the estimate stands in if the report cannot be true
            return [Metered(usage_from_realtime(usage), self.model, rid, fallback=estimate)]
        return [Metered(estimate, self.model, rid)]

    def _estimate(self) -> Usage:
        """What flowed since the last response: audio both ways, text out and in."""
        return Usage(
            input=-(-self.text_in_bytes // TEXT_BYTES_PER_TOKEN),
            audio_input=self.audio_in_bytes * INPUT_AUDIO_TOKENS_PER_S // PCM_BYTES_PER_S,
            output=max(self.text_out_deltas, -(-self.text_out_bytes // TEXT_BYTES_PER_TOKEN)),
            audio_output=self.audio_out_bytes * OUTPUT_AUDIO_TOKENS_PER_S // PCM_BYTES_PER_S,
            estimated=True,
            flags=("usage_missing",),
        )

    def _paused_increase(self, usage: dict[str, Any]) -> Decimal:
        """The increase of a WebRTC session's cumulative `paused_seconds` (the
        standby part of its seconds, billed at the standby rate); 0 without it."""
        paused = _seconds(usage.get("paused_seconds"))
        if paused is None or paused <= self._live_paused:
            return Decimal(0)
        increase, self._live_paused = paused - self._live_paused, paused
        return increase

    def _flowed(self) -> None:
        """A response is accounted for: what flowed (and was added) so far belongs to it."""
        self.audio_out_bytes = self.audio_in_bytes = 0
        self.text_out_bytes = self.text_out_deltas = self.text_in_bytes = 0
        self.added = NOTHING

    def _live_usage(self, obj: dict[str, Any]) -> list[Metered]:
        """Cumulative counters -> the increase since the last report."""
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else obj
        out: list[Metered] = []
        seconds = None
        for key in ("seconds", "total_seconds", "duration_seconds", "billed_seconds"):
            seconds = _seconds(usage.get(key))
            if seconds is not None:
                break
        standby = self._paused_increase(usage)
        if seconds is not None and seconds > self._live_seconds:
            delta = seconds - self._live_seconds
            self._live_seconds = seconds
            out.append(Metered(Usage(seconds=delta, standby_seconds=min(standby, delta)),
                               self.model, None, "live"))
        tokens = usage.get("tokens") if isinstance(usage.get("tokens"), dict) else None
        if tokens is None and any(k in usage for k in ("input_tokens", "output_tokens")):
            tokens = usage
        if tokens:
            total = usage_from_realtime(tokens)
            now = total.tokens()
            inc = {k: max(0, v - self._live_tokens.get(k, 0)) for k, v in now.items()}
            self._live_tokens = {k: max(v, self._live_tokens.get(k, 0)) for k, v in now.items()}
            if any(inc.values()):
                out.append(Metered(Usage(**inc), self.model, None, "live"))
        return out

    def _delegated(self, obj: dict[str, Any]) -> list[Metered]:
        """A Live delegation's Responses call: charged at the backend model's rates."""
        response = _dig(obj, "event", "response")
        if not isinstance(response, dict) or not isinstance(response.get("usage"), dict):
            return []
        rid = _text(response.get("id"))
        if rid:
            if rid in self._charged:
                return []
            self._charged.add(rid)
        usage = usage_from_responses(response["usage"])
        return [Metered(usage, _text(response.get("model")), rid, "delegated")]

    # -- client -> server ---------------------------------------------------

    def client_frame(self, frame: str | bytes) -> ClientEvent:
        """Read a client event once and note what it says."""
        event = read_client_frame(frame)
        t, obj = event.type, event.obj
        if obj is None:
            return event
        if t in CLIENT_AUDIO:
            audio = obj.get("audio")
            if isinstance(audio, str):
                self.audio_in_bytes += len(audio) * 3 // 4
        elif t in ("session.update", "session.start"):
            session = obj.get("session")
            if isinstance(session, dict):
                self._session_facts({k: v for k, v in session.items() if k != "id"})
        elif t == "conversation.item.create":
            self.added = self.added + items_added(obj.get("item"), len(frame), self.model)
        elif t == "response.create":
            inline = _dig(obj, "response", "input")
            if inline is not None:
                event = dataclasses.replace(event, inline=items_added(inline, len(frame),
                                                                      self.model))
        if t in CLIENT_TEXT_ITEMS:
            self.text_in_bytes += len(frame)
        return event

    def unfinished(self) -> list[Metered]:
        """Responses that never reported usage: an estimate of each, flagged
        `cut_short`, once (the session is ending)."""
        out = []
        for rid in sorted(self.in_progress):
            estimate = dataclasses.replace(self._estimate(), flags=("cut_short",))
            self._flowed()
            out.append(Metered(estimate, self.model, rid))
        self.in_progress.clear()
        return out

    @property
    def busy(self) -> bool:
        """A response is being generated (cancel it before closing)."""
        return bool(self.in_progress)
