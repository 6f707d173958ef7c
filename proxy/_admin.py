"""The admin API (DESIGN §4) and the dashboard page.

Operator-only: every route needs `Authorization: Bearer <admin token>`
(compared in constant time); with no token configured the whole surface
answers 404, so an unconfigured faregate exposes nothing. Reads go to the
ledger (usage, charges, ended sessions, alerts) and to this process's
memory (active sessions, budget counters). Money is a decimal string.
Query parameters are untrusted: each is checked and a bad one is a 400
naming it, in the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
from datetime import date, datetime, time, timedelta, timezone
from importlib import resources
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from faregate.pricing import INPUT_CLASSES, OUTPUT_CLASSES
from faregate.storage import (
    PERIODS,
    AlertRecord,
    LedgerRecord,
    SessionRecord,
    format_usd,
    group_tag,
    period_bounds,
    render_report,
    report_dict,
)

from ._budget_view import budget_views, ledger_spend
from ._errors import openai_error
from ._state import State

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_LIMIT = 1000
_ID = re.compile(r"^[0-9a-f]{32}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_:.-]{1,128}$")
_NO_STORE = {"cache-control": "no-store"}
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class BadParam(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def admin_refusal(request: web.Request, state: State) -> web.Response | None:
    """None if the request carries the admin token; else the refusal to send."""
    env = state.runtime.settings.server.admin_token_env
    token = os.environ.get(env)
    if not token:
        return openai_error(404, "invalid_request_error", "admin_disabled",
                            f"The admin API is off: set ${env} to enable it.")
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               token.encode("utf-8", "surrogateescape")):
        return openai_error(401, "invalid_request_error", "invalid_admin_token",
                            "A valid admin bearer token is required.",
                            headers={"www-authenticate": 'Bearer realm="faregate-admin"'})
    return None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status,
                        content_type="application/json", headers=_NO_STORE)


# -- query parameters ---------------------------------------------------------

def _text(request: web.Request, name: str, max_len: int = 256) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise BadParam(name, f"{name} must be at most {max_len} printable characters")
    return value


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(request, name) or default
    if value not in choices:
        raise BadParam(name, f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _limit(request: web.Request, default: int) -> int:
    raw = _text(request, "limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParam("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _instant(request: web.Request, name: str, end_of_day: bool = False) -> datetime | None:
    """A date (`2026-11-01`) or an ISO-8601 instant; naive means UTC."""
    raw = _text(request, name, 64)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            start = datetime.combine(date.fromisoformat(raw), time.min, timezone.utc)
            return start + timedelta(days=1) if end_of_day else start
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(name, f"{name} must be a date like 2026-11-01 or an ISO-8601 time") \
            from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _range(request: web.Request, now: datetime) -> tuple[str | None, datetime | None,
                                                         datetime | None]:
    """(period or None, start, end): `from`/`to` (inclusive days) win over `period`."""
    start, end = _instant(request, "from"), _instant(request, "to", end_of_day=True)
    if start is not None or end is not None:
        if start is not None and end is not None and start >= end:
            raise BadParam("from", "from must be before to")
        return None, start, end
    period = _choice(request, "period", PERIODS, "month")
    start, end = period_bounds(period, now)
    return period, start, end


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat() if ts is not None else None


# -- renderings ---------------------------------------------------------------

def _usd_map(nanos: dict[str, int]) -> dict[str, str]:
    return {k: format_usd(v) for k, v in nanos.items()}


def charge_dict(r: LedgerRecord) -> dict[str, Any]:
    return {
        "id": r.id, "ts": _iso(r.ts), "tenant": r.tenant, "user": r.user, "key_id": r.key_id,
        "model": r.model, "endpoint": r.endpoint, "request_id": r.request_id,
        "status": r.status, "tokens": dict(r.tokens), "reasoning_tokens": r.reasoning_tokens,
        "seconds": str(r.seconds.normalize()) if r.seconds else "0",
        "characters": r.characters, "images": r.images, "cost_usd": format_usd(r.cost_nanos),
        "breakdown": _usd_map(r.breakdown), "savings_usd": format_usd(r.savings_nanos),
        "billed_usd": format_usd(r.billed), "price_version": r.price_version,
        "priced": r.priced, "estimated": r.estimated, "latency_ms": r.latency_ms,
        "flags": list(r.flags), "session_id": r.session_id, "response_id": r.response_id,
        "tags": dict(r.tags),
    }


def session_dict(s: SessionRecord, active: bool = False) -> dict[str, Any]:
    return {
        "id": s.id, "upstream_session_id": s.upstream_session_id, "tenant": s.tenant,
        "user": s.user, "model": s.model, "endpoint": s.endpoint,
        "started_at": _iso(s.started_at), "ended_at": None if active else _iso(s.ended_at),
        "duration_s": str(s.duration_s), "responses": s.responses,
        "input_tokens": sum(s.tokens.get(c, 0) for c in INPUT_CLASSES),
        "output_tokens": sum(s.tokens.get(c, 0) for c in OUTPUT_CLASSES),
        "tokens": dict(s.tokens), "seconds": str(s.seconds.normalize()) if s.seconds else "0",
        "cost_usd": format_usd(s.cost_nanos), "breakdown": _usd_map(s.breakdown),
        "end_reason": None if active else s.end_reason, "active": active,
        "estimated": s.estimated, "flags": list(s.flags), "tags": dict(s.tags),
        "tool_calls": s.tool_calls,
    }


def alert_dict(a: AlertRecord) -> dict[str, Any]:
    return {
        "id": a.id, "scope": a.scope, "period": a.period, "period_start": a.period_start,
        "threshold": a.threshold, "level": a.level, "limit_usd": format_usd(a.limit_nanos),
        "spent_usd": format_usd(a.spent_nanos), "projected_usd": format_usd(a.projected_nanos),
        "at": _iso(a.at),
    }


# -- routes -------------------------------------------------------------------

class Admin:
    """The admin routes over one running faregate's state."""

    def __init__(self, state: State, reload: Callable[[], Awaitable[tuple[bool, str]]],
                 clock: Callable[[], datetime] | None = None):
        self.state = state
        self._reload = reload
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._page: bytes | None = None

    def add_routes(self, app: web.Application) -> None:
        g = self._guarded
        app.router.add_get("/admin/usage", g(self.usage))
        app.router.add_get("/admin/usage/logs", g(self.logs))
        app.router.add_get("/admin/sessions", g(self.sessions))
        app.router.add_get("/admin/sessions/{id}", g(self.session))
        app.router.add_get("/admin/sessions/{id}/transcript", g(self.transcript))
        app.router.add_get("/admin/budgets", g(self.budgets))
        app.router.add_get("/admin/alerts", g(self.alerts))
        app.router.add_post("/admin/reload", g(self.reload))
        app.router.add_get("/dashboard", self.dashboard)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = admin_refusal(request, self.state)
            if refused is not None:
                return refused
            if self.state.ledger is None:
                return openai_error(503, "api_error", "not_ready", "faregate is starting.")
            try:
                return await handler(request)
            except BadParam as exc:
                return openai_error(400, "invalid_request_error", "invalid_parameter",
                                    str(exc), param=exc.param)
        return guarded

    async def usage(self, request: web.Request) -> web.Response:
        now = self.clock()
        period, start, end = _range(request, now)
        group_by = _text(request, "group_by", 64) or "tenant"
        try:
            group_tag(group_by)
        except ValueError as exc:
            raise BadParam("group_by", str(exc)) from None
        fmt = _choice(request, "format", ("json", "csv"), "json")
        tenant = _text(request, "tenant")
        top_raw = _text(request, "top")
        if top_raw is not None and (not top_raw.isdigit() or not 1 <= int(top_raw) <= 10_000):
            raise BadParam("top", "top must be an integer from 1 to 10000")
        top = int(top_raw) if top_raw else None
        report = await self.state.ledger.usage(start, end, group_by, tenant=tenant)
        if fmt == "csv":
            name = f"faregate-usage-{group_by}-{period or 'range'}.csv"
            return web.Response(
                text=render_report(report, group_by, "csv", top) + "\n",
                content_type="text/csv", charset="utf-8",
                headers={**_NO_STORE, "content-disposition": f'attachment; filename="{name}"'},
            )
        body = report_dict(report, top)
        body.update({"period": period, "from": _iso(start), "to": _iso(end), "tenant": tenant})
        return _json(body)

    async def logs(self, request: web.Request) -> web.Response:
        limit = _limit(request, 100)
        before = _text(request, "before", 64)
        if before is not None and not _ID.match(before):
            raise BadParam("before", "before must be a charge id from an earlier page")
        rows = await self.state.ledger.logs(
            tenant=_text(request, "tenant"), user=_text(request, "user"),
            model=_text(request, "model"), limit=limit + 1, before=before,
        )
        page = rows[:limit]
        return _json({
            "data": [charge_dict(r) for r in page],
            "has_more": len(rows) > limit,
            "next_before": page[-1].id if len(rows) > limit else None,
        })

    def _active(self, tenant: str | None) -> list[dict[str, Any]]:
        live = [s for s in self.state.sessions.values()
                if tenant is None or s.caller.tenant == tenant]
        live.sort(key=lambda s: s.started_at, reverse=True)
        return [session_dict(s.record("active"), active=True) for s in live]

    async def sessions(self, request: web.Request) -> web.Response:
        tenant = _text(request, "tenant")
        active = _choice(request, "active", ("true", "false", "any"), "any")
        limit = _limit(request, 50)
        before = _text(request, "before", 128)
        if before is not None and not _SESSION_ID.match(before):
            raise BadParam("before", "before must be a session id from an earlier page")
        active_now = self._active(tenant)
        # Active sessions (bounded by the concurrency limits) come first, on page one.
        data = active_now if active != "false" and before is None else []
        ended: list[SessionRecord] = []
        if active != "true":
            ended = await self.state.ledger.sessions(tenant=tenant, limit=limit + 1,
                                                     before=before)
        has_more = len(ended) > limit
        data = data + [session_dict(s) for s in ended[:limit]]
        return _json({
            "data": data,
            "active_count": len(active_now),
            "has_more": has_more,
            "next_before": ended[limit - 1].id if has_more else None,
        })

    async def session(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if not _SESSION_ID.match(sid):
            raise BadParam("id", "not a session id")
        live = self.state.sessions.get(sid)
        if live is not None:
            return _json(session_dict(live.record("active"), active=True))
        found = await self.state.ledger.session(sid)
        if found is None:
            return openai_error(404, "invalid_request_error", "session_not_found",
                                f"No session {sid!r} in the ledger.", param="id")
        return _json(session_dict(found))

    async def transcript(self, request: web.Request) -> web.Response:
        """A captured session's text, decrypted (capture is opt-in per tenant)."""
        sid = request.match_info["id"]
        if not _SESSION_ID.match(sid):
            raise BadParam("id", "not a session id")
        capture = self.state.capture
        events = await asyncio.to_thread(capture.read, sid) if capture is not None else []
        if not events:
            return openai_error(404, "invalid_request_error", "transcript_not_found",
                                f"No captured transcript for session {sid!r} (capture is "
                                "off unless the tenant opted in).", param="id")
        return _json({"id": sid, "events": events})

    async def budgets(self, request: web.Request) -> web.Response:
        now = self.clock()
        shared = None
        ledger = self.state.ledger
        if ledger.shared:  # other replicas spend too: count what the database knows
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            shared = ledger_spend(await ledger.spend_since(day.replace(day=1), day))
        rt = self.state.runtime
        views = budget_views(rt.settings, rt.prices, self.state.quota.book, now, shared)
        tenant = _text(request, "tenant")
        return _json({
            "now": _iso(now),
            "budgets": [v.as_dict() for v in views if tenant is None or v.tenant == tenant],
        })

    async def alerts(self, request: web.Request) -> web.Response:
        since = _instant(request, "since")
        rows = await self.state.ledger.alerts(since=since, limit=_limit(request, 100))
        return _json({"data": [alert_dict(a) for a in rows]})

    async def reload(self, _: web.Request) -> web.Response:
        applied, message = await self._reload()
        return _json({"applied": applied, "message": message}, 200 if applied else 400)

    async def dashboard(self, request: web.Request) -> web.Response:
        """The page itself holds no data; everything it shows needs the token."""
        env = self.state.runtime.settings.server.admin_token_env
        if not os.environ.get(env):
            return openai_error(404, "invalid_request_error", "admin_disabled",
                                f"The dashboard is off: set ${env} to enable it.")
        if self._page is None:
            self._page = (resources.files("faregate.proxy") / "static" / "dashboard.html"
                          ).read_bytes()
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers=_PAGE_HEADERS)
