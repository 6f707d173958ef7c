"""Sans-IO meter for the Responses API over a WebSocket (`/v1/responses` upgraded).

The client sends `response.create` events (the body of a `POST
/v1/responses`) and `response.steer` events; the server answers with the
same events a Responses stream carries. So it is metered like a stream:
each response's terminal event (`response.completed`, `.incomplete`,
`.failed`) carries its usage — charged once per response id, with its
hosted-tool calls and the tier the upstream applied. Client frames are read
with the same strict parse as Realtime frames (`_session.read_client_frame`).

A response still running when the session ends is charged an estimate: the
prompt as its create frame sizes it (the reservation's estimate) and at
least the text the client was sent, flagged `cut_short`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from faregate.pricing import PriceTable, ToolScan, Usage

from ._consumed import answer_usage
from ._estimate import BYTES_PER_TOKEN_HIGH
from ._reading import Metered, Reading
from ._session import ClientEvent, frame_type, read_client_frame
from ._sse import _RESPONSES_TEXT, _text_bytes

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
MAX_NAME = 128


def _text(value: Any, limit: int = MAX_NAME) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


@dataclass
class ResponsesSocketMeter:
    """One Responses WebSocket session: what its responses report, once each."""

    table: PriceTable  # the price table in force (usage normalisation)
    kind: str = "responses"
    model: str | None = None
    upstream_session_id: str | None = None
    responses: int = 0
    tool_calls: int = 0
    audio_in_bytes: int = 0  # (Realtime's; a Responses socket appends no audio)
    last_type: str | None = None
    in_progress: set[str] = field(default_factory=set)
    delivered: int = 0  # text bytes sent since the last terminal event
    prompts: list[int] = field(default_factory=list)  # prompt estimate per create, in order
    cancel_event: str | None = None  # there is no cancel event in this protocol
    started: str | None = None  # (Realtime's: the server starts no response of its own)
    out_of_band: bool = False  # (Realtime's: every response is in the conversation)
    _charged: set[str] = field(default_factory=set)

    def client_frame(self, frame: str | bytes) -> ClientEvent:
        event = read_client_frame(frame)
        if event.obj is not None and event.type in ("response.create", "response.steer"):
            self.model = _text(event.obj.get("model")) or self.model
            self.prompts.append(len(frame) // BYTES_PER_TOKEN_HIGH + 16)
        return event

    def server_frame(self, frame: str | bytes) -> list[Metered]:
        t = self.last_type = frame_type(frame)
        raw = frame.encode() if isinstance(frame, str) else frame
        if t is not None and t.endswith(".delta"):
            self.delivered += _text_bytes(raw, _RESPONSES_TEXT)
            return []
        if t == "response.created":
            try:
                rid = _text(orjson.loads(raw).get("response", {}).get("id"))
            except (orjson.JSONDecodeError, AttributeError):
                rid = None
            if rid:
                self.in_progress.add(rid)
            return []
        if t not in TERMINAL:
            return []
        return self._terminal(raw)

    def _terminal(self, raw: bytes) -> list[Metered]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        response = obj.get("response") if isinstance(obj, dict) else None
        if not isinstance(response, dict):
            return []
        rid = _text(response.get("id"))
        if rid:
            self.in_progress.discard(rid)
            if rid in self._charged:
                return []
            self._charged.add(rid)
        self.responses += 1
        self.delivered = 0
        prompt = self.prompts.pop(0) if self.prompts else 0
        tools = ToolScan()
        tools.feed(raw)
        tier = response.get("service_tier")
        reading = Reading(usage=response.get("usage") if isinstance(response.get("usage"), dict)
                          else None, tool_calls=tools.fee_keys(),
                          service_tier=tier.lower()[:32] if isinstance(tier, str) else None)
        usage = answer_usage("responses", reading, self.table)
        if reading.usage is None:
            usage = Usage(input=prompt, estimated=True, flags=("usage_missing",))
        return [Metered(usage, _text(response.get("model")) or self.model, rid)]

    def unfinished(self) -> list[Metered]:
        """Responses that never reported usage: the prompt as sized at create and at
        least the text delivered, flagged `cut_short`, once each."""
        out = []
        for rid in sorted(self.in_progress):
            prompt = self.prompts.pop(0) if self.prompts else 0
            out.append(Metered(Usage(input=prompt, output=self.delivered, estimated=True,
                                     flags=("cut_short",)), self.model, rid))
            self.delivered = 0
        self.in_progress.clear()
        return out

    @property
    def busy(self) -> bool:
        return bool(self.in_progress)
