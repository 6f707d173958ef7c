"""Sans-IO meter for Server-Sent Event streams (chat and Responses).

`SseMeter.feed(chunk)` takes bytes as they arrive from the upstream and
returns the bytes to send to the client *now*: every complete event is
passed on at once, only a partial trailing event waits for its end — and
the stream's terminal event (chat's `[DONE]`, Responses'
`response.completed`/`incomplete`/`failed`), which waits in `close()` until
the call is billed, so no client holds a finished stream whose charge a
crash could lose (`ended` tells the edge it may bill now). On the way it
notes the usage report (chat's final usage chunk, the terminal Responses
event), the served model, and counts content deltas for an estimate if the
stream is cut short.

When faregate itself asked the upstream for `include_usage`, the extra
usage-only chunk (and the `"usage":null` fields that come with it) is
removed so the client sees exactly the stream it asked for.
"""

from __future__ import annotations

from typing import Any

import orjson

from faregate.pricing import ToolScan, find_json_str, find_service_tier, find_usage

from ._facts import RequestFacts
from ._reading import Reading, ResponseMeter

#: A single event larger than this is passed through uninspected.
MAX_EVENT_BYTES = 16 * 1024 * 1024

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_USAGE_OBJ = (b'"usage":{', b'"usage": {')
_NULL_USAGE = (b',"usage":null', b', "usage": null')


def _next_boundary(buf: bytes | bytearray, start: int) -> int:
    """Index just past the first event separator at or after `start`, or -1."""
    best = -1
    for sep in _SEPARATORS:
        i = buf.find(sep, start)
        if i != -1 and (best == -1 or i + len(sep) < best):
            best = i + len(sep)
    return best


#: Where a streamed chat delta carries text the client receives (one of each per event).
_CHAT_TEXT = (b'"content":"', b'"refusal":"', b'"arguments":"', b'"reasoning_content":"')
_RESPONSES_TEXT = (b'"delta":"',)


def _text_bytes(event: bytes, markers: tuple[bytes, ...]) -> int:
    """Raw bytes of the JSON strings after `markers`: an upper bound of the tokens they
    hold (every token is at least one byte; escapes only lengthen the raw form)."""
    total = 0
    for marker in markers:
        start = event.find(marker)
        if start < 0:
            continue
        start += len(marker)
        end = event.find(b'"', start)
        while end > 0 and event[end - 1] == 0x5C:  # an escaped quote (or an escaped "\\")
            run = len(event[start:end]) - len(event[start:end].rstrip(b"\\"))
            if run % 2 == 0:
                break
            end = event.find(b'"', end + 1)
        if end > start:
            total += end - start
    return total


def _data_payload(event: bytes) -> bytes:
    """The concatenated `data:` lines of one event."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" "))
    return b"\n".join(parts)


class SseMeter(ResponseMeter):
    """Passes each complete event on at once, noting usage, model, tier and deltas."""

    rewrites = True  # the usage chunk faregate asked for is removed again

    def __init__(self, kind: str, *, strip_usage: bool = False,
                 facts: RequestFacts | None = None):
        self.kind = kind
        self.facts = facts or RequestFacts()
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None  # the streamed object's id
        self.service_tier: str | None = None  # the tier the upstream applied
        self.tools = ToolScan() if kind == "responses" else None
        self.deltas = 0
        self.delivered = 0  # raw bytes of the streamed text: >= the output tokens it holds
        self.events = 0
        self.done = False  # saw [DONE] or a terminal Responses event
        self._pending = bytearray()
        self._held = bytearray()  # the terminal event and whatever follows it
        self._passthrough = False  # inside an oversized event

    @property
    def ended(self) -> bool:
        return self.done

    def feed(self, chunk: bytes) -> bytes:
        """Consume upstream bytes; return the bytes to forward now."""
        if self._passthrough:
            end = _next_boundary(chunk, 0)
            if end == -1:
                return self._out(chunk)
            self._passthrough = False
            return self._out(chunk[:end]) + self.feed(chunk[end:])
        if self._pending:
            self._pending += chunk
            buf: bytes | bytearray = self._pending
        else:
            buf = chunk  # the usual chunk, whole events: no copy into the buffer
        lf_only = b"\r" not in buf  # then "\n\n" is the only separator that can match
        out: list[bytes] = []
        start = 0
        while True:
            if lf_only:
                end = buf.find(b"\n\n", start)
                end = -1 if end == -1 else end + 2
            else:
                end = _next_boundary(buf, start)
            if end == -1:
                break
            event = self._event(bytes(buf[start:end]))
            if self.done:
                self._held += event  # the terminal event waits for the charge
            else:
                out.append(event)
            start = end
        if buf is self._pending:
            del self._pending[:start]
        elif start < len(buf):
            self._pending += buf[start:]
        if len(self._pending) > MAX_EVENT_BYTES:
            out.append(self._out(bytes(self._pending)))
            self._pending.clear()
            self._passthrough = True
        return out[0] if len(out) == 1 else b"".join(out)

    def _out(self, data: bytes) -> bytes:
        """Bytes passed uninspected: after the terminal event they are held with it."""
        if self.done:
            self._held += data
            return b""
        return data

    def close(self) -> bytes:
        """The held terminal event, and whatever partial event is left (unchanged)."""
        rest = bytes(self._pending)
        self._pending.clear()
        if rest:
            rest = self._event(rest)
        out = bytes(self._held) + rest
        self._held.clear()
        return out

    def reading(self, complete: bool = True) -> Reading:
        """What the stream reported so far (all of it, even when cut short)."""
        tools = self.tools.fee_keys(self.facts.tools) if self.tools is not None else ()
        return Reading(usage=self.usage, model=self.model, service_tier=self.service_tier,
                       tool_calls=tools, deltas=self.deltas, response_id=self.response_id,
                       delivered=self.delivered)

    def _event(self, event: bytes) -> bytes:
        self.events += 1
        if self.model is None and b'"model"' in event:
            self.model = find_json_str(event, "model")
        if self.response_id is None and b'"id"' in event:
            found = find_json_str(event, "id", 1024)
            self.response_id = found[:128] if found else None
        if self.kind == "responses":
            return self._responses_event(event)
        return self._chat_event(event)

    def _chat_event(self, event: bytes) -> bytes:
        if b"[DONE]" in event and _data_payload(event).strip() == b"[DONE]":
            self.done = True
            return event
        if _USAGE_OBJ[0] in event or _USAGE_OBJ[1] in event:
            payload = _data_payload(event)
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                tier = obj.get("service_tier")
                if isinstance(tier, str) and tier:
                    self.service_tier = tier.lower()[:32]
                if self.strip_usage and not obj.get("choices"):
                    return b""
        if b'"delta"' in event:
            self.deltas += 1
            self.delivered += _text_bytes(event, _CHAT_TEXT)
        if self.strip_usage:
            for null in _NULL_USAGE:
                if null in event:
                    event = event.replace(null, b"")
        return event

    def _responses_event(self, event: bytes) -> bytes:
        if b".delta" in event and b'"delta"' in event:
            self.deltas += 1
            self.delivered += _text_bytes(event, _RESPONSES_TEXT)
            return event
        for terminal in (b'"response.completed"', b'"response.incomplete"', b'"response.failed"'):
            if terminal in event:
                self.done = True
                payload = _data_payload(event)
                usage = find_usage(payload)
                if usage is not None:
                    self.usage = usage
                self.service_tier = find_service_tier(payload)
                if self.tools is not None:  # the final response lists every output item
                    self.tools.feed(payload)
                break
        return event
