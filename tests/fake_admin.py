"""A fake OpenAI organization Admin API (tests only), started in-process like the
fake upstream.

Speaks enough of `/v1/organization/...` for the official SDK's admin client:
  GET  /costs                         daily buckets from `costs`, grouped by the
                                      `group_by` asked for, `limit` buckets per page
                                      with `next_page` cursors
  GET  /projects, /projects/{id}/api_keys   cursor pages (`after`, `has_more`)
  GET/POST /projects/{id}/spend_limit       hard limits, every update recorded
Knobs: `fail_next` — statuses answered before the next successful answers
(429 and 5xx with a tiny `retry-after-ms`, so the SDK's retries are fast);
`requests` — every request seen (path, query, authorization).
Amounts are written into the JSON as exact decimal text, as a float would print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

ADMIN_KEY = "sk-admin-test-key"


def nanos(usd: str) -> int:
    """Exact USD text -> nano-USD (an amount finer than a nano-dollar is a test bug)."""
    value = Decimal(usd).scaleb(9)
    assert value == value.to_integral_value(), usd
    return int(value)


@pytest.fixture
async def admin(monkeypatch):
    """A running `FakeAdmin`, with `$OPENAI_ADMIN_KEY` set to its key."""
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    async with FakeAdmin() as fake:
        yield fake


@dataclass(frozen=True)
class Cost:
    day: date
    usd: Decimal
    project_id: str = "proj_default"
    line_item: str = "gpt-4o-mini-2024-07-18, input"
    api_key_id: str = "key_default"


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    authorization: str | None
    body: Any = None


def _epoch(d: date) -> int:
    return int(datetime.combine(d, time.min, timezone.utc).timestamp())


def _day(ts: int) -> date:
    return datetime.fromtimestamp(ts, timezone.utc).date()


@dataclass
class FakeAdmin:
    costs: list[Cost] = field(default_factory=list)
    projects: list[str] = field(default_factory=lambda: ["proj_default"])
    #: project -> [(key id, redacted value)]
    api_keys: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # project -> cents
    limit_updates: list[tuple[str, int]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    _server: TestServer | None = None

    async def __aenter__(self) -> "FakeAdmin":
        app = web.Application()
        app.router.add_route("*", "/v1/organization/{tail:.*}", self._dispatch)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.close()

    def calls(self, suffix: str) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    # -- dispatch ---------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Seen(request.method, request.path, list(request.query.items()),
                                  request.headers.get("authorization"), body))
        if request.headers.get("authorization") != f"Bearer {ADMIN_KEY}":
            return self._error(401, "invalid_api_key", "Invalid admin key.")
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response(
                {"error": {"message": "try again", "type": "server_error", "code": None}},
                status=status, headers={"retry-after-ms": "5"})
        tail = request.match_info["tail"].strip("/")
        parts = tail.split("/")
        if tail == "costs":
            return self._costs(request)
        if tail == "projects":
            return self._page([{"id": p, "object": "organization.project", "name": p,
                                "created_at": 0, "status": "active"} for p in self.projects],
                              request)
        if len(parts) == 3 and parts[0] == "projects" and parts[2] == "api_keys":
            keys = self.api_keys.get(parts[1], [])
            return self._page([self._key(kid, red) for kid, red in keys], request)
        if len(parts) == 3 and parts[0] == "projects" and parts[2] == "spend_limit":
            return self._spend_limit(request, parts[1], body)
        return self._error(404, "not_found", f"no route {tail}")

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                            "param": None, "code": code}}, status=status)

    @staticmethod
    def _key(kid: str, redacted: str) -> dict:
        return {"id": kid, "object": "organization.project.api_key", "name": kid,
                "created_at": 0, "redacted_value": redacted, "owner_project_access": "active",
                "owner": {"type": "service_account", "service_account": {
                    "id": "svc", "name": "svc", "created_at": 0, "role": "member"}}}

    @staticmethod
    def _page(items: list[dict], request: web.Request) -> web.Response:
        after = request.query.get("after")
        limit = int(request.query.get("limit", "20"))
        start = next((i + 1 for i, it in enumerate(items) if it["id"] == after), 0)
        page = items[start:start + limit]
        return web.json_response({
            "object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(items)})

    def _spend_limit(self, request: web.Request, project: str, body: Any) -> web.Response:
        if request.method == "POST":
            cents = int(body["threshold_amount"])
            self.limits[project] = cents
            self.limit_updates.append((project, cents))
        elif project not in self.limits:
            return self._error(404, "not_found", "This project has no spend limit.")
        return web.json_response({
            "object": "project.spend_limit", "currency": "USD", "interval": "month",
            "threshold_amount": self.limits[project],
            "enforcement": {"status": "inactive"}})

    # -- costs ----------------------------------------------------------------------

    def _costs(self, request: web.Request) -> web.Response:
        q = request.query
        start, end = int(q["start_time"]), int(q.get("end_time", 2**40))
        group_by = q.getall("group_by[]", []) or q.getall("group_by", [])
        limit = int(q.get("limit", "7"))
        offset = int(q.get("page", "0") or 0)
        all_days = list(_days(_day(start), _day(end - 1)))
        page_days = all_days[offset:offset + limit]
        buckets = [self._bucket(d, group_by) for d in page_days]
        more = offset + limit < len(all_days)
        text = ('{"object": "page", "data": [' + ", ".join(buckets) + '], "has_more": '
                + ("true" if more else "false") + ', "next_page": '
                + (json.dumps(str(offset + limit)) if more else "null") + "}")
        return web.Response(text=text, content_type="application/json")

    def _bucket(self, day: date, group_by: list[str]) -> str:
        sums: dict[tuple, Decimal] = {}
        for c in self.costs:
            if c.day != day:
                continue
            key = tuple(getattr(c, g) for g in group_by)
            sums[key] = sums.get(key, Decimal(0)) + c.usd
        results = []
        for key, usd in sorted(sums.items()):
            fields = {g: None for g in ("project_id", "line_item", "api_key_id")}
            fields.update(dict(zip(group_by, key)))
            head = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in fields.items())
            results.append('{"object": "organization.costs.result", "amount": {"value": '
                           f'{usd}, "currency": "usd"}}, {head}, "quantity": null}}')
        return (f'{{"object": "bucket", "start_time": {_epoch(day)}, "end_time": '
                f'{_epoch(day) + 86400}, "results": [{", ".join(results)}]}}')


def _days(first: date, last: date):
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)
