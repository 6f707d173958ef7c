"""Realtime sessions faregate starts but cannot meter: recorded with their creator.

A WebRTC/SIP call created through faregate (`POST /v1/realtime/calls`, or a
SIP call's `…/accept`) and an ephemeral key minted through it (`POST
/v1/realtime/client_secrets`) open sessions whose media flows between the
browser and the upstream. Each is recorded as a session of its creator
(tenant, user, key, model, project) and as a `created` event; the call's or
mint's admission is held (`UnseenHolds`) for as long as such a session could
run. When a session through faregate uses it — the sideband socket
`/v1/realtime?call_id=…`, or a WebSocket opened with the minted key — a
`seen` event is recorded and the hold is released: that session is metered
as usual. What stays unseen is attributed from the provider's bill by
reconciliation (`_attribute`).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable

from faregate.storage import DelegatedEvent, SessionRecord

from .._ids import new_session_id
from .._runtime import Runtime
from ..caller import Caller, SecretBook, secret_ref
from ..meter import DEFAULT_REALTIME_MODEL, Flow, unseen_session_seconds
from ..quota import Policy, UnseenHolds

log = logging.getLogger("faregate.provider")

_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def unseen_seconds(policy: Policy) -> int:
    return unseen_session_seconds(policy.max_session_seconds)


class Delegations:
    """The edges' hooks for calls and keys whose sessions pass faregate by."""

    def __init__(self, runtime: Callable[[], Runtime], secrets: SecretBook,
                 holds: UnseenHolds, record: Callable[[Any], None]) -> None:
        self.runtime = runtime
        self.secrets = secrets
        self.holds = holds
        self._record = record

    def after_call(self, flow: Flow) -> None:
        """A REST call answered: a minted key or a created call is noted, held, recorded."""
        reading = flow.reading
        if flow.caller is None or not 200 <= flow.status < 300:
            return
        if reading.minted is not None:
            self._minted(flow, flow.caller, *reading.minted)
        elif reading.call_id is not None and _CALL_ID.fullmatch(reading.call_id):
            self._call(flow, flow.caller, reading.call_id)

    def _minted(self, flow: Flow, caller: Caller, secret: str, expires_at: Any) -> None:
        policy = self.runtime().policy(caller)
        now = time.time()
        latest = now + policy.client_secret_ttl_s
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            expires_at = latest
        model = flow.model or DEFAULT_REALTIME_MODEL
        expires = self.secrets.note(secret, caller, min(float(expires_at), latest), model)
        ref = secret_ref(secret)
        self._hold(flow, ref, expires - now + unseen_seconds(policy))
        self._created(flow, caller, ref, "secret", model,
                      datetime.fromtimestamp(expires, timezone.utc))

    def _call(self, flow: Flow, caller: Caller, call_id: str) -> None:
        policy = self.runtime().policy(caller)
        model = flow.model or DEFAULT_REALTIME_MODEL
        session_id = self._created(flow, caller, call_id, "call", model, None)
        if flow.secret_ref is not None:  # the minted key started this call: its hold moves
            moved = self.holds.take(flow.secret_ref)
            if moved is not None:
                self.holds.keep(call_id, moved, unseen_seconds(policy))
            self._record(self._event(flow.secret_ref, "seen", "secret", session_id, caller,
                                     model))
        self._hold(flow, call_id, unseen_seconds(policy))

    def _hold(self, flow: Flow, ref: str, seconds: float) -> None:
        """The call's admission outlives the call: kept under `ref` (a moved hold wins)."""
        if flow.admission is not None and ref not in self.holds:
            self.holds.keep(ref, flow.admission, seconds)
            flow.admission = None

    def _event(self, ref: str, event: str, kind: str, session_id: str, caller: Caller,
               model: str, expires: datetime | None = None) -> DelegatedEvent:
        tenant = self.runtime().settings.tenants.get(caller.tenant)
        return DelegatedEvent(
            ref=ref, event=event, kind=kind, session_id=session_id, tenant=caller.tenant,
            model=model, user=caller.user, key_id=caller.key_id,
            project=tenant.openai_project if tenant is not None else None, expires_at=expires)

    def _created(self, flow: Flow, caller: Caller, ref: str, kind: str, model: str,
                 expires: datetime | None) -> str:
        """One session row for the creator, and the `created` event; returns the session id."""
        now = datetime.now(timezone.utc)
        assert flow.endpoint is not None
        session = SessionRecord(
            id=new_session_id(), tenant=caller.tenant, model=model[:128],
            endpoint=flow.endpoint.path, started_at=now, ended_at=now, end_reason="delegated",
            upstream_session_id=ref if kind == "call" else None, user=caller.user,
            key_id=caller.key_id, flags=("media_unseen",), tags=dict(flow.tags))
        self._record(session)
        self._record(self._event(ref, "created", kind, session.id, caller, model, expires))
        log.info("realtime session created past faregate", extra={
            "kind": kind, "session_id": session.id, "tenant": caller.tenant, "model": model,
            "request_id": flow.request_id})
        return session.id

    def seen(self, token: str | None, call_id: str | None, session_id: str,
             caller: Caller, model: str | None) -> None:
        """A WebSocket session through faregate uses a minted key or attaches to a call
        (the sideband): it is metered, so the hold ends and the sighting is recorded."""
        refs = []
        if token and self.secrets.minted(token) is not None:
            refs.append((secret_ref(token), "secret"))
        if call_id and _CALL_ID.fullmatch(call_id):
            refs.append((call_id, "call"))
        for ref, kind in refs:
            self.holds.release(ref)
            self._record(self._event(ref, "seen", kind, session_id, caller,
                                     model or DEFAULT_REALTIME_MODEL))
