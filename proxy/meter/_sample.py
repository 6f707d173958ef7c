"""The meter of a plain (non-streamed) JSON answer: a sample is enough.

Only the head and the tail of the body are kept — enough to find `model`
near the start and `usage` (and the applied service tier) near the end —
never the whole of a large answer. Hosted-tool items of a Responses answer
are counted over the whole body as it passes. An answer that mints a
Realtime client secret is small and read whole, to note its secret.
"""

from __future__ import annotations

import orjson

from faregate.pricing import ToolScan, find_json_str, find_service_tier, find_usage

from ..caller import minted_secret
from ._facts import RequestFacts
from ._reading import HoldLast, Reading

HEAD_BYTES = 64 * 1024
TAIL_BYTES = 256 * 1024


MAX_ID = 128


def _object_id(head: bytes) -> str | None:
    """The answer's top-level `id` (the first key of every OpenAI object), bounded."""
    found = find_json_str(head, "id", 512)
    return found[:MAX_ID] if found else None


class BodySample:
    """First `HEAD_BYTES` and last `TAIL_BYTES` of a response body."""

    __slots__ = ("head", "_tail", "size", "tools")

    def __init__(self, tools: ToolScan | None = None) -> None:
        self.head = bytearray()
        self._tail = bytearray()
        self.size = 0
        self.tools = tools  # hosted-tool items are counted over the whole body

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.tools is not None:
            self.tools.feed(chunk)
        room = HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += chunk[:room]
        self._tail += chunk
        if len(self._tail) > 2 * TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]

    @property
    def tail(self) -> bytes:
        return bytes(self._tail[-TAIL_BYTES:])


def find_status(sample: BodySample) -> str | None:
    """The top-level `status` of a sampled object answer (a response: it comes before
    the output items, whose own statuses follow)."""
    head = bytes(sample.head)
    if b'"status"' not in head:
        return None
    found = find_json_str(head, "status", HEAD_BYTES)
    return found[:32] if found else None


class JsonMeter(HoldLast):
    """Samples a JSON answer on its way; the last chunk waits for the charge."""

    __slots__ = ("sample", "kind", "facts")
    read_on = True

    def __init__(self, kind: str, facts: RequestFacts) -> None:
        super().__init__()
        self.kind = kind
        self.facts = facts
        self.sample = BodySample(ToolScan() if kind == "responses" else None)

    def feed(self, chunk: bytes) -> bytes:
        self.sample.add(chunk)
        return super().feed(chunk)

    def reading(self, complete: bool = True) -> Reading:
        sample = self.sample
        if not complete:
            return Reading()  # a torn body's tail is not its usage
        if self.kind == "client_secret":
            return self._secret()
        tail = sample.tail
        reading = Reading(usage=find_usage(tail), service_tier=find_service_tier(tail))
        if sample.tools is not None:
            reading.tool_calls = sample.tools.fee_keys(self.facts.tools)
        head = bytes(sample.head)
        if b'"model"' in head:
            reading.model = find_json_str(head, "model", HEAD_BYTES)
        reading.response_id = _object_id(head)
        return reading

    def _secret(self) -> Reading:
        """A client secret answer: the secret it minted, and the session's model."""
        sample = self.sample
        reading = Reading()
        if sample.size > len(sample.head):
            return reading
        try:
            body = orjson.loads(bytes(sample.head))
        except orjson.JSONDecodeError:
            return reading
        if isinstance(body, dict):
            reading.minted = minted_secret(body)
            if reading.minted is not None and isinstance(body.get("session"), dict):
                reading.model = find_json_str(bytes(sample.head), "model", HEAD_BYTES)
        return reading
