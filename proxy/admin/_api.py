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
import os
import re
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from faregate.storage import Ledger, SessionRecord, group_tag, render_report, report_dict

from .._capture import Capture
from .._errors import openai_error, wrong_token
from .._runtime import Runtime
from ..provider import GROUPINGS, render_csv, summary_dict
from ..quota import Quota, quota_report
from ..realtime import Sessions
from . import _params as q
from ._budget_view import budget_views, callers, ledger_spend
from ._params import BadParam
from ._render import alert_dict, charge_dict, session_dict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ID = re.compile(r"^[0-9a-f]{32}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_:.-]{1,128}$")
_NO_STORE = {"cache-control": "no-store"}
#: What `/admin/usage/logs` filters by (`request_id`: the `x-faregate-request-id` of a call).
_LOGS_PARAMS = ("tenant", "user", "model", "request_id", "limit", "before")
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


def admin_refusal(request: web.Request, env: str) -> web.Response | None:
    """None if the request carries the admin token (in `$env`); else the refusal."""
    token = os.environ.get(env)
    if not token:
        return openai_error(404, "invalid_request_error", "admin_disabled",
                            f"The admin API is off: set ${env} to enable it.")
    return wrong_token(request.headers, token, "admin")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status,
                        content_type="application/json", headers=_NO_STORE)


class Admin:
    """The admin routes over one running faregate."""

    #: (method, path, handler name); all but the dashboard page need the admin token.
    ROUTES = (
        ("GET", "/admin/usage", "usage"),
        ("GET", "/admin/usage/logs", "logs"),
        ("GET", "/admin/sessions", "sessions"),
        ("GET", "/admin/sessions/{id}", "session"),
        ("GET", "/admin/sessions/{id}/transcript", "transcript"),
        ("GET", "/admin/budgets", "budgets"),
        ("GET", "/admin/quotas", "quotas"),
        ("GET", "/admin/alerts", "alerts"),
        ("GET", "/admin/reconcile", "reconcile"),
        ("POST", "/admin/reload", "reload"),
        ("GET", "/dashboard", "dashboard"),
    )

    def __init__(self, runtime: Callable[[], Runtime], ledger: Ledger, sessions: Sessions,
                 quota: Quota, capture: Capture | None,
                 reload: Callable[[], Awaitable[tuple[bool, str]]],
                 clock: Callable[[], datetime] | None = None):
        self.runtime = runtime
        self.ledger = ledger
        self.live = sessions
        self.quota = quota
        self.book = quota.book
        self.capture = capture
        self._reload = reload
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._page: bytes | None = None
        self._handlers: dict[str, Handler] = {
            name: (getattr(self, name) if name == "dashboard"
                   else self._guarded(getattr(self, name)))
            for _, _, name in self.ROUTES}

    def handler(self, name: str) -> Handler:
        return self._handlers[name]

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = admin_refusal(request, self.runtime().settings.server.admin_token_env)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except BadParam as exc:
                return openai_error(400, "invalid_request_error", "invalid_parameter",
                                    str(exc), param=exc.param)
        return guarded

    async def usage(self, request: web.Request) -> web.Response:
        now = self.clock()
        period, start, end = q.period_range(request, now)
        group_by = q.text(request, "group_by", 64) or "tenant"
        try:
            group_tag(group_by)
        except ValueError as exc:
            raise BadParam("group_by", str(exc)) from None
        fmt = q.choice(request, "format", ("json", "csv"), "json")
        tenant = q.text(request, "tenant")
        top_raw = q.text(request, "top")
        if top_raw is not None and (not top_raw.isdigit() or not 1 <= int(top_raw) <= 10_000):
            raise BadParam("top", "top must be an integer from 1 to 10000")
        top = int(top_raw) if top_raw else None
        report = await self.ledger.usage(start, end, group_by, tenant=tenant)
        if fmt == "csv":
            name = f"faregate-usage-{group_by}-{period or 'range'}.csv"
            return web.Response(
                text=render_report(report, group_by, "csv", top) + "\n",
                content_type="text/csv", charset="utf-8",
                headers={**_NO_STORE, "content-disposition": f'attachment; filename="{name}"'},
            )
        body = report_dict(report, top)
        body.update({"period": period, "from": q.iso(start), "to": q.iso(end), "tenant": tenant})
        return _json(body)

    async def logs(self, request: web.Request) -> web.Response:
        q.only(request, _LOGS_PARAMS)
        limit = q.limit(request, 100)
        before = q.text(request, "before", 64)
        if before is not None and not _ID.match(before):
            raise BadParam("before", "before must be a charge id from an earlier page")
        rows = await self.ledger.logs(
            tenant=q.text(request, "tenant"), user=q.text(request, "user"),
            model=q.text(request, "model"), limit=limit + 1, before=before,
            request_id=q.text(request, "request_id", 128),
        )
        page = rows[:limit]
        return _json({
            "data": [charge_dict(r) for r in page],
            "has_more": len(rows) > limit,
            "next_before": page[-1].id if len(rows) > limit else None,
        })

    def _active(self, tenant: str | None) -> list[dict[str, Any]]:
        live = [s for s in self.live if tenant is None or s.caller.tenant == tenant]
        live.sort(key=lambda s: s.started_at, reverse=True)
        return [session_dict(s.record("active"), active=True) for s in live]

    async def sessions(self, request: web.Request) -> web.Response:
        tenant = q.text(request, "tenant")
        active = q.choice(request, "active", ("true", "false", "any"), "any")
        limit = q.limit(request, 50)
        before = q.text(request, "before", 128)
        if before is not None and not _SESSION_ID.match(before):
            raise BadParam("before", "before must be a session id from an earlier page")
        active_now = self._active(tenant)
        # Active sessions (bounded by the concurrency limits) come first, on page one.
        data = active_now if active != "false" and before is None else []
        ended: list[SessionRecord] = []
        if active != "true":
            ended = await self.ledger.sessions(tenant=tenant, limit=limit + 1,
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
        live = self.live.get(sid)
        if live is not None:
            return _json(session_dict(live.record("active"), active=True))
        found = await self.ledger.session(sid)
        if found is None:
            return openai_error(404, "invalid_request_error", "session_not_found",
                                f"No session {sid!r} in the ledger.", param="id")
        return _json(session_dict(found))

    async def transcript(self, request: web.Request) -> web.Response:
        """A captured session's text, decrypted (capture is opt-in per tenant)."""
        sid = request.match_info["id"]
        if not _SESSION_ID.match(sid):
            raise BadParam("id", "not a session id")
        capture = self.capture
        events = await asyncio.to_thread(capture.read, sid) if capture is not None else []
        if not events:
            return openai_error(404, "invalid_request_error", "transcript_not_found",
                                f"No captured transcript for session {sid!r} (capture is "
                                "off unless the tenant opted in).", param="id")
        return _json({"id": sid, "events": events})

    async def budgets(self, request: web.Request) -> web.Response:
        now = self.clock()
        shared = None
        ledger = self.ledger
        settings = self.runtime().settings
        if ledger.shared:  # other replicas spend too: count what the database knows
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            shared = ledger_spend(await ledger.spend_since(day.replace(day=1), day))
        views = budget_views(settings, self.runtime().prices, self.book, now, shared)
        tenant = q.text(request, "tenant")
        return _json({
            "now": q.iso(now),
            "budgets": [v.as_dict() for v in views if tenant is None or v.tenant == tenant],
        })

    async def quotas(self, request: web.Request) -> web.Response:
        """Per tenant, what `GET /v1/faregate/quota` answers that tenant's own key."""
        now = self.clock()
        rt = self.runtime()
        tenant = q.text(request, "tenant")
        reports = [
            quota_report(self.quota, rt.policy(c), rt.prices, now, rt.settings.alerts.thresholds,
                         self.live.active(c.tenant))
            for c in callers(rt.settings, self.book)
            if c.user is None and (tenant is None or c.tenant == tenant)]
        reports.sort(key=lambda r: r["tenant"])
        return _json({"now": q.iso(now), "tenants": reports})

    async def alerts(self, request: web.Request) -> web.Response:
        since = q.instant(request, "since")
        rows = await self.ledger.alerts(since=since, limit=q.limit(request, 100))
        return _json({"data": [alert_dict(a) for a in rows]})

    async def reconcile(self, request: web.Request) -> web.Response:
        """Stored reconciliation results (serve's daily job, `faregate reconcile`): the
        Admin API is never called from here."""
        by = q.choice(request, "by", GROUPINGS, "project")
        fmt = q.choice(request, "format", ("json", "csv"), "json")
        start, end = q.instant(request, "from"), q.instant(request, "to")
        if start is None and end is None:
            start = self.clock() - timedelta(days=30)
        first = start.date() if start is not None else None
        last = end.date() if end is not None else None
        if first is not None and last is not None and first > last:
            raise BadParam("from", "from must be on or before to")
        rows = await self.ledger.reconciliations(by, first, last)
        if fmt == "csv":
            return web.Response(text=render_csv(rows) + "\n", content_type="text/csv",
                                charset="utf-8", headers=_NO_STORE)
        body = summary_dict(rows, by, self.runtime().settings.provider.drift_tolerance)
        body["checked_at"] = q.iso(max((r.checked_at for r in rows), default=None))
        return _json(body)

    async def reload(self, _: web.Request) -> web.Response:
        applied, message = await self._reload()
        return _json({"applied": applied, "message": message}, 200 if applied else 400)

    async def dashboard(self, request: web.Request) -> web.Response:
        """The page itself holds no data; everything it shows needs the token."""
        env = self.runtime().settings.server.admin_token_env
        if not os.environ.get(env):
            return openai_error(404, "invalid_request_error", "admin_disabled",
                                f"The dashboard is off: set ${env} to enable it.")
        if self._page is None:
            self._page = (resources.files("faregate.proxy.admin") / "static" / "dashboard.html"
                          ).read_bytes()
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers=_PAGE_HEADERS)
