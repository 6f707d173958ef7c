"""One Realtime/Live session in flight: its meter, its charges, its totals.

The relay owns the sockets; a `Session` owns the money. Each metered usage
is priced and handed to the ledger at once (a crash loses no finished
response), and the totals become one session row when the session ends.
Active sessions are listed in `State.sessions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from faregate.pricing import INPUT_CLASSES, TOKEN_CLASSES, Usage, price
from faregate.storage import SessionRecord, new_id

from ._identity import Caller
from ._meter import charge_record, count_charge
from ._capture import CLIENT_TEXT, SERVER_TEXT
from ._session_meter import Metered, SessionMeter, frame_type
from ._session_quota import Cut, SessionQuota
from ._state import State

log = logging.getLogger("faregate.session")

_CUT_REASONS = {"budget_exceeded": "budget", "session_time_limit": "session_time",
                "model_not_allowed": "model", "tool_call_limit": "tool_calls"}


@dataclass(eq=False)
class Session:
    state: State
    caller: Caller
    endpoint: str
    meter: SessionMeter
    id: str = field(default_factory=lambda: "fgs_" + new_id()[:24])
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started_mono: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    cost_nanos: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    charges: int = 0
    end_reason: str | None = None
    client_gone: bool = False
    shutting_down: bool = False
    tasks: tuple[asyncio.Task, ...] = ()
    client_ws: Any = None  # the client's socket, closed by faregate on shutdown
    squota: SessionQuota | None = None  # budget enforcement, set by the relay
    cut: Cut | None = None  # why faregate is ending the session, once decided
    cut_event: asyncio.Event = field(default_factory=asyncio.Event)
    tags: dict[str, str] = field(default_factory=dict)  # caller's attribution tags
    capturing: bool = False  # the tenant opted in to conversation capture
    _live_seq: int = 0

    @classmethod
    def start(cls, state: State, caller: Caller, endpoint: str, model: str | None,
              tags: dict[str, str] | None = None) -> "Session":
        kind = "live" if endpoint.startswith("/v1/live") else "realtime"
        session = cls(state, caller, endpoint, SessionMeter(kind, model=model),
                      tags=dict(tags or {}), capturing=state.capturing(caller.tenant))
        state.sessions[session.id] = session
        state.metrics.sessions_active.labels(caller.tenant).inc()
        return session

    @property
    def model(self) -> str:
        return self.meter.model or "unknown"

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_mono

    def capture(self, direction: str, frame: str | bytes) -> None:
        """Hand a text frame to conversation capture if this tenant opted in."""
        if not self.capturing or not isinstance(frame, str):
            return
        t = frame_type(frame)
        if t in (SERVER_TEXT if direction == "server" else CLIENT_TEXT):
            self.state.capture.frame(self.id, direction, t, frame)

    def server_frame(self, frame: str | bytes) -> None:
        if self.capturing:
            self.capture("server", frame)
        calls = self.meter.tool_calls
        for metered in self.meter.server_frame(frame):
            self.charge(metered)
        if self.meter.tool_calls != calls:
            self.state.metrics.tool_calls.labels(self.caller.tenant).inc(
                self.meter.tool_calls - calls)

    def charge(self, metered: Metered) -> None:
        """Price one metered usage, record it, add it to the session totals."""
        state = self.state
        at = datetime.now(timezone.utc)
        model = metered.model or self.model
        charge = price(metered.usage, model, at, state.runtime.prices)
        response_id = metered.response_id
        if metered.kind == "live":
            self._live_seq += 1
            response_id = f"live:{self._live_seq}"
        elif metered.kind in ("transcription", "delegated"):
            response_id = f"{metered.kind}:{response_id or self._next_anon()}"
        elif response_id is None:
            response_id = f"response:{self._next_anon()}"
        u = charge.usage
        row = charge_record(
            charge, self.caller, model=model, endpoint=self.endpoint, status=200, at=at,
            request_id=self.id, session_id=self.id, response_id=response_id,
            markup=state.runtime.markup(self.caller.tenant), tags=self.tags,
        )
        state.record(row)
        breakdown = row.breakdown
        self.usage = self.usage + u
        self.cost_nanos += charge.cost_nanos
        for k, v in breakdown.items():
            self.breakdown[k] = self.breakdown.get(k, 0) + v
        self.charges += 1
        count_charge(state.metrics, self.caller.tenant, charge, self.endpoint)
        if self.squota is not None:
            inputs = sum(getattr(u, c) for c in INPUT_CLASSES)
            input_nanos = sum(breakdown.get(c, 0) for c in INPUT_CLASSES)
            cut = self.squota.settle(charge.cost_nanos, u.total_tokens,
                                     inputs if metered.kind == "response" else None,
                                     input_nanos)
            if state.alerting is not None:
                state.alerting.note_model(self.squota.policy, at, charge.family or model,
                                          charge.cost_nanos)
            if cut is not None:
                self.request_cut(cut)

    def request_cut(self, cut: Cut) -> None:
        """Ask the relay to end the session (error event, then close 1008)."""
        if self.cut is None:
            self.cut = cut
            self.state.metrics.quota_rejections.labels(
                self.caller.tenant, _CUT_REASONS.get(cut.code, "budget")).inc()
            self.cut_event.set()

    def _next_anon(self) -> int:
        self._live_seq += 1
        return self._live_seq

    def charge_unfinished(self) -> None:
        """Responses that never reported usage: charge an estimate, once each."""
        for rid in sorted(self.meter.in_progress):
            estimate = self.meter._estimate()
            estimate = Usage(**{**{k: getattr(estimate, k) for k in TOKEN_CLASSES},
                                "estimated": True, "flags": ("cut_short",)})
            self.meter.in_progress.discard(rid)
            self.meter.audio_in_bytes = self.meter.audio_out_bytes = 0
            self.charge(Metered(estimate, self.model, rid))

    def finish(self, reason: str) -> SessionRecord:
        """The session ended: write its row, update gauges. Idempotent."""
        state = self.state
        if state.sessions.pop(self.id, None) is None:
            return self.record(reason)
        if self.meter.busy:
            self.charge_unfinished()
        if self.squota is not None:
            self.squota.release_all()
        state.metrics.sessions_active.labels(self.caller.tenant).dec()
        state.metrics.session_duration.labels(self.model_label()).observe(self.elapsed_s())
        row = self.record(reason)
        if state.ledger is not None:
            state.ledger.record_session(row)
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
        entry = self.state.runtime.prices.entry(self.model, None) if self.meter.model else None
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

    def snapshot(self) -> dict:
        """Live view for the admin API / dashboard."""
        return {
            "id": self.id,
            "tenant": self.caller.tenant,
            "user": self.caller.user,
            "model": self.model,
            "endpoint": self.endpoint,
            "started_at": self.started_at.isoformat(),
            "duration_s": f"{self.elapsed_s():.3f}",
            "responses": self.meter.responses,
            "cost_nanos": self.cost_nanos,
            "active": True,
        }
