"""One Realtime/Live session in flight: its meter, its charges, its totals.

The relay owns the sockets; a `Session` owns the money. Each client frame is
read once by the meter and handed to the session's quota; each server frame
is metered, and what it meters is billed at once (a crash loses no finished
response). With cost events on (tier/tenant `session_cost_events`, or the
connection's `faregate_cost_events=1`), each charge also queues one
`faregate.session.cost` event for the client. The totals become one
session row when the session ends. `Sessions` lists the active ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import orjson

from faregate.pricing import INPUT_CLASSES, Usage
from faregate.storage import SessionRecord, format_usd

from .._capture import CLIENT_TEXT, SERVER_TEXT, Capture
from .._ids import new_event_id, new_session_id
from .._metrics import Metrics
from .._runtime import Runtime
from ..caller import Caller, KeyScrubber, call_scrubber
from ..meter import Account, Biller, Metered, SessionMeter
from ..quota import Admission, Cut, SessionQuota, tightest

log = logging.getLogger("faregate.session")

#: Server events after which the next server-started response is sized again.
SESSION_FACTS = frozenset({"session.created", "session.updated"})


class Sessions:
    """The active sessions of this process, by id."""

    def __init__(self) -> None:
        self._by_id: dict[str, "Session"] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator["Session"]:
        return iter(list(self._by_id.values()))

    def get(self, session_id: str) -> "Session | None":
        return self._by_id.get(session_id)

    def add(self, session: "Session") -> None:
        self._by_id[session.id] = session

    def remove(self, session: "Session") -> bool:
        return self._by_id.pop(session.id, None) is not None

    def active(self, tenant: str) -> int:
        """This process's open sessions of `tenant` (a view: the quota's slots limit them)."""
        return sum(1 for s in self._by_id.values() if s.caller.tenant == tenant)

    def by_tenant(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._by_id.values():
            out[s.caller.tenant] = out.get(s.caller.tenant, 0) + 1
        return out


@dataclass(frozen=True)
class SessionServices:
    """What every session uses: set once per app."""

    runtime: Callable[[], Runtime]
    biller: Biller
    metrics: Metrics
    sessions: Sessions
    record: Callable[[SessionRecord], None]
    capture: Capture | None


@dataclass(eq=False)
class Session:
    services: SessionServices
    caller: Caller
    endpoint: str
    meter: SessionMeter
    squota: SessionQuota
    id: str = field(default_factory=new_session_id)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started_mono: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    cost_nanos: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    end_reason: str | None = None
    client_gone: bool = False
    shutting_down: bool = False
    tasks: tuple[asyncio.Task, ...] = ()
    client_ws: Any = None  # the client's socket, closed by faregate on shutdown
    cut: Cut | None = None  # why faregate is ending the session, once decided
    cut_event: asyncio.Event = field(default_factory=asyncio.Event)
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    capturing: bool = False  # the tenant opted in to conversation capture
    cost_events: bool = False  # send `faregate.session.cost` after each charge
    notices: list[str] = field(default_factory=list)  # faregate's events, sent after the frame
    scrubber: KeyScrubber | None = None  # the upstream key's fragments, out of error events
    replies: list[str] = field(default_factory=list)  # faregate's own events for the client
    ticket: Any = None  # the concurrency slots the session holds (released when it ends)
    _seq: int = 0
    _billed: bool = False  # its first charge, the one request it counts as, is written

    @classmethod
    def start(cls, services: SessionServices, caller: Caller, endpoint: str,
              squota: SessionQuota, model: str | None, tags: dict[str, str] | None = None,
              meter: Any = None) -> "Session":
        """A session on `endpoint`; `meter` (and `squota`) may be another protocol's
        (a Responses WebSocket), else a Realtime/Live `SessionMeter`."""
        kind = "live" if endpoint.startswith("/v1/live") else "realtime"
        capturing = services.capture is not None and services.runtime().captures(caller.tenant)
        session = cls(services, caller, endpoint, meter or SessionMeter(kind, model=model),
                      squota, tags=dict(tags or {}), capturing=capturing,
                      scrubber=call_scrubber(caller.upstream_authorization))
        squota.on_hold = session._reserved
        services.sessions.add(session)
        services.metrics.sessions_active.labels(caller.tenant).inc()
        return session

    @property
    def model(self) -> str:
        return self.meter.model or "unknown"

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_mono

    def _capture(self, direction: str, kind: str | None, frame: str | bytes) -> None:
        """Hand a text frame to conversation capture if this tenant opted in."""
        capture = self.services.capture
        if capture is None or not isinstance(frame, str) or kind is None:
            return
        if kind in (SERVER_TEXT if direction == "server" else CLIENT_TEXT):
            capture.frame(self.id, direction, kind, frame,
                          self.scrubber.bytes if self.scrubber else None)

    async def client_frame(self, frame: str | bytes) -> str | bytes | None:
        """A client frame: the frame to forward (perhaps rewritten), or None."""
        event = self.meter.client_frame(frame)
        if event.refused is not None:
            await self._refuse_frame(event.refused)
            return None
        if self.capturing:
            self._capture("client", event.type, frame)
        if self.cut is not None:
            return None  # the session is ending: nothing new goes upstream
        verdict = await self.squota.client_event(event.type, event.obj, frame, self.meter,
                                                 event.inline)
        if verdict.cut is not None:
            self.request_cut(verdict.cut)
        if verdict.reply is not None:
            self.replies.append(verdict.reply)
        return verdict.frame

    def take_replies(self) -> list[str]:
        """Events faregate itself sends the client (refusals that keep the session)."""
        out, self.replies = self.replies, []
        return out

    async def _refuse_frame(self, why: str) -> None:
        """A frame meant as JSON that faregate cannot read is not forwarded: the client
        gets an error event instead (the session goes on)."""
        self.services.metrics.usage_problems.labels(self.endpoint, "frame_unreadable").inc()
        ws = self.client_ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(orjson.dumps({
                "type": "error", "event_id": new_event_id(),
                "error": {"type": "invalid_request_error", "code": "invalid_event",
                          "message": f"faregate cannot read this event: {why}.",
                          "param": None, "event_id": None}}).decode())
        except (ConnectionResetError, RuntimeError):
            pass

    async def server_frame(self, frame: str | bytes) -> tuple[str | bytes, list[str]]:
        """Meter and bill one server frame. Returns the frame for the client (an `error`
        event scrubbed of the upstream key's fragments) and faregate's own frames for
        the upstream (a lowered output cap, a cancel)."""
        calls = self.meter.tool_calls
        charges = self.meter.server_frame(frame)
        if self.capturing:
            self._capture("server", self.meter.last_type, frame)
        upstream: list[str] = []
        if self.meter.started is not None and self.meter.kind == "realtime":
            upstream, cut = await self.squota.response_started(self.meter.started, self.meter)
            if cut is not None:
                self.request_cut(cut)
        for metered in charges:
            self.charge(metered)
        if self.cut is None and (charges or self.meter.last_type in SESSION_FACTS):
            frames, cut = await self.squota.next_turn(self.meter)
            upstream += frames
            if cut is not None:
                self.request_cut(cut)
        if self.meter.tool_calls != calls:
            self.services.metrics.tool_calls.labels(self.caller.tenant).inc(
                self.meter.tool_calls - calls)
        if self.meter.last_type == "error" and self.scrubber:
            frame = (self.scrubber.text(frame) if isinstance(frame, str)
                     else self.scrubber.bytes(frame))
        return frame, upstream

    def _account(self) -> Account:
        return Account(self.caller, self.endpoint, self.id, self.tags, session_id=self.id)

    def _reserved(self, hold: Admission) -> None:
        """A response was reserved (asked by the client or started by the server): its
        start marker, so a crash before its charge still counts it."""
        self.services.biller.start_response(self._account(), hold,
                                            self.squota.model or self.meter.model)

    def _response_id(self, metered: Metered) -> str:
        """Unique within the session: the upstream's id, or a sequence for what has none."""
        if metered.kind == "live":
            self._seq += 1
            return f"live:{self._seq}"
        if metered.kind in ("transcription", "delegated"):
            return f"{metered.kind}:{metered.response_id or self._next()}"
        return metered.response_id or f"response:{self._next()}"

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def charge(self, metered: Metered) -> None:
        """Bill one metered usage and add it to the session's totals."""
        metered = Metered(metered.usage, metered.model or self.model,
                          self._response_id(metered), metered.kind, fallback=metered.fallback)
        response = metered.kind == "response"
        hold = self.squota.take_hold(metered.response_id) if response else None
        row = self.services.biller.bill(metered, self._account(), policy=self.squota.policy,
                                        hold=hold, opens_session=not self._billed)
        self._billed = True
        self.usage = self.usage + metered.usage
        self.cost_nanos += row.cost_nanos
        for k, v in row.breakdown.items():
            self.breakdown[k] = self.breakdown.get(k, 0) + v
        if self.cost_events:
            self.notices.append(self._cost_event(metered.response_id, row.cost_nanos))
        input_nanos = sum(row.breakdown.get(c, 0) for c in INPUT_CLASSES)
        cut = self.squota.after_charge(metered.usage, input_nanos, hold,
                                       response and not self.meter.out_of_band)
        if cut is not None:
            self.request_cut(cut)

    def _cost_event(self, response_id: str | None, cost_nanos: int) -> str:
        """What this charge cost, the session so far, and the tightest budget's rest."""
        quota, policy = self.squota.quota, self.squota.policy
        found = tightest(quota.budget_counters(policy, datetime.now(timezone.utc)))
        return orjson.dumps({
            "type": "faregate.session.cost", "event_id": new_event_id(),
            "response_id": response_id, "cost_usd": format_usd(cost_nanos),
            "session_cost_usd": format_usd(self.cost_nanos),
            "remaining_usd": None if found is None else format_usd(max(0, found[1])),
        }).decode()

    def request_cut(self, cut: Cut) -> None:
        """Ask the relay to end the session (error event, then close 1008)."""
        if self.cut is None:
            self.cut = cut
            self.services.metrics.quota_rejections.labels(self.caller.tenant, cut.reason).inc()
            self.cut_event.set()

    def charge_unfinished(self) -> None:
        """Responses that never reported usage: charge an estimate, once each."""
        for metered in self.meter.unfinished():
            self.charge(metered)

    def finish(self, reason: str) -> SessionRecord:
        """The session ended: write its row, update gauges. Idempotent."""
        services = self.services
        if not services.sessions.remove(self):
            return self.record(reason)
        if self.meter.busy:
            self.charge_unfinished()
        for hold in self.squota.holds:  # reserved, never answered: nothing to charge
            services.biller.unmark(hold)
        self.squota.release_all()
        if self.ticket is not None:
            self.ticket.release()
        services.metrics.sessions_active.labels(self.caller.tenant).dec()
        services.metrics.session_duration.labels(self.model_label()).observe(self.elapsed_s())
        row = self.record(reason)
        services.record(row)
        log.info(
            "session ended",
            extra={
                "session_id": self.id, "tenant": self.caller.tenant, "model": self.model,
                "end_reason": reason, "responses": self.meter.responses,
                "duration_s": round(self.elapsed_s(), 3), "cost_nanos": self.cost_nanos,
            },
        )
        return row

    def model_label(self) -> str:
        prices = self.services.runtime().prices
        entry = prices.entry(self.model, None) if self.meter.model else None
        return entry.family if entry is not None else "unpriced"

    def record(self, reason: str) -> SessionRecord:
        ended = self.started_at.fromtimestamp(
            self.started_at.timestamp() + self.elapsed_s(), timezone.utc
        )
        return SessionRecord(
            id=self.id,
            tenant=self.caller.tenant,
            model=self.model[:128],
            endpoint=self.endpoint,
            started_at=self.started_at,
            ended_at=ended,
            end_reason=reason,
            upstream_session_id=self.meter.upstream_session_id,
            user=self.caller.user,
            key_id=self.caller.key_id,
            responses=self.meter.responses,
            tokens=self.usage.tokens(),
            seconds=self.usage.seconds,
            cost_nanos=self.cost_nanos,
            breakdown=dict(self.breakdown),
            estimated=self.usage.estimated,
            flags=self.usage.flags,
            tags=dict(self.tags),
            tool_calls=self.meter.tool_calls,
        )

