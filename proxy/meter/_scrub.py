"""The meter of an error answer: the upstream key's fragments replaced before it goes out.

An upstream error body may name the key it refused (OpenAI masks it as
`sk-abc…****…wxyz`). `ScrubMeter` holds the body (error answers are small;
past `HOLD_BYTES` it streams on, keeping an overlap in which a fragment
could still be completing) and hands it out with every form of the call's
upstream key replaced (`caller.KeyScrubber`). Like `HoldLast`, the end waits
until the call is billed. `message` is the answer's `error.message`, already
scrubbed, for the log line an operator reads.
"""

from __future__ import annotations

import orjson

from ..caller import MAX_FRAGMENT, KeyScrubber
from ._reading import ResponseMeter

#: Bytes of an error answer held whole before it streams on.
HOLD_BYTES = 256 * 1024
#: The error message kept for the log, at most.
MESSAGE_CHARS = 300


class ScrubMeter(ResponseMeter):
    """Holds an error answer and hands it out with the upstream key's fragments replaced."""

    __slots__ = ("scrubber", "_held", "_streamed", "message")
    rewrites = True  # a replacement changes the body's length

    def __init__(self, scrubber: KeyScrubber) -> None:
        self.scrubber = scrubber
        self._held = b""
        self._streamed = False
        self.message: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        self._held += chunk
        if len(self._held) <= HOLD_BYTES:
            return b""
        self._streamed = True  # too large to hold: out, but for a tail a fragment may end in
        clean = self.scrubber.bytes(self._held)
        out, self._held = clean[:-MAX_FRAGMENT], clean[-MAX_FRAGMENT:]
        return out

    def close(self) -> bytes:
        out, self._held = self.scrubber.bytes(self._held), b""
        if not self._streamed and self.message is None:
            self.message = _message(out)
        return out


def _message(body: bytes) -> str | None:
    """`error.message` of an OpenAI-shaped error body, bounded; None if it is not one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = obj.get("error") if isinstance(obj, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message[:MESSAGE_CHARS] if isinstance(message, str) else None
