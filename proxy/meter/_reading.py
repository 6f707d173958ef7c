"""The one meter protocol, and what meters report.

Every response shape has a meter: a small sans-IO state machine fed the
bytes of an answer as they arrive. `feed(chunk)` returns the bytes that may
go to the client now; `close()` returns what the meter held back (sent only
after the charge is in the ledger journal, so no client holds a complete
answer whose charge a crash could still lose — a stream's terminal event
included: `ended` says it has arrived, so billing need not wait for the
upstream to close the body; `close()` may then be called again at the end); `reading()` is what the
answer said about its own cost. `finish()`/`abort()` end a meter whose
answer had to be read whole (batch objects) or broke off.

Meters know nothing of sockets: the edges are thin loops over this
protocol, and every shape is tested with tables of real payloads.
Realtime/Live frames are metered into `Metered` items, one per charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faregate.pricing import Usage


@dataclass(slots=True)
class Reading:
    """What an answer said about its own cost, as far as it was seen."""

    usage: dict[str, Any] | None = None  # the provider's report, as found
    model: str | None = None  # model named in the answer
    service_tier: str | None = None  # the tier the upstream says it applied
    tool_calls: tuple[tuple[str, int], ...] = ()  # hosted-tool fee keys and counts
    deltas: int = 0  # streamed content events seen (for estimates)
    delivered: int = 0  # raw bytes of streamed text: an upper bound of its tokens
    minted: tuple[str, Any] | None = None  # (secret, expires_at) of a minted client secret
    response_id: str | None = None  # the answer's own object id (chatcmpl-…, resp_…)
    call_id: str | None = None  # a WebRTC/SIP call the answer started (rtc_…)


@dataclass(frozen=True, slots=True)
class Metered:
    """One thing to charge: a Realtime response, a transcription, a Live increment,
    or a line of a batch output file."""

    usage: Usage
    model: str | None
    response_id: str | None = None
    kind: str = "response"  # response | transcription | live | delegated | batch
    record_id: str | None = None  # a deterministic ledger id (batch lines)
    request_id: str | None = None
    fallback: Usage | None = None  # the meter's own estimate, if the report cannot be true


class ResponseMeter:
    """A meter that reads nothing: bytes pass through at once. The base of all meters."""

    __slots__ = ()
    #: The meter may change the body's length (so Content-Length cannot be kept).
    rewrites = False
    #: The answer was made before it was sent (a JSON answer): when the client leaves
    #: mid-answer, it is read on to its end, so its real usage is charged.
    read_on = False
    #: The answer's last event is in (and held back): the edge may bill now, then send
    #: `close()`'s bytes, without waiting for the upstream to end the body.
    ended = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume upstream bytes; return the bytes to forward now."""
        return chunk

    def close(self) -> bytes:
        """The body ended: the bytes held back, to send once the call is billed."""
        return b""

    def reading(self, complete: bool = True) -> Reading | None:
        """What the answer reported (None: this meter reads no usage); `complete` is
        False when the body was cut short."""
        return None

    async def finish(self) -> None:
        """After billing, before the held-back bytes go out (bookkeeping that waits)."""

    def abort(self) -> None:
        """The answer broke off before its end."""


class HoldLast(ResponseMeter):
    """Reads nothing, but keeps each chunk until the next one arrives, so the last
    bytes of a recorded call go out only after its charge is journalled."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        out, self._held = self._held, chunk
        return out

    def close(self) -> bytes:
        out, self._held = self._held, b""
        return out
