"""Every `/v1` route the official SDK can call is metered, admitted as billable, or free.

The routes come from the installed `openai` SDK itself (tests/sdk_routes.py
calls every resource method once and records the request), so a new SDK
release with a new endpoint is covered without editing this file. Each
route is checked three ways: its class follows the documented rules (a free
POST is on the list README documents, and that list is exactly the code's);
the calls known to spend money are never free; and, end to end against the
fake upstream with the caller's budget spent, every route that is not free
is refused by faregate before the upstream sees it, while every free one is
forwarded.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from faregate.proxy.meter import FREE_POSTS, classify, session_endpoint
from sdk_routes import WEBSOCKETS, Route, sdk_routes

README = Path(__file__).resolve().parent.parent / "README.md"
#: SDK calls that run a model or hold a paid resource: never free.
SPENDS = {
    "chat.completions.create", "completions.create", "responses.create", "responses.compact",
    "embeddings.create", "audio.speech.create", "audio.transcriptions.create",
    "audio.translations.create", "images.generate", "images.edit", "images.create_variation",
    "batches.create", "fine_tuning.jobs.create", "fine_tuning.jobs.resume",
    "fine_tuning.alpha.graders.run", "containers.create", "containers.files.create",
    "vector_stores.create", "vector_stores.files.create", "vector_stores.file_batches.create",
    "vector_stores.search", "realtime.calls.create", "realtime.calls.accept",
    "evals.runs.create", "beta.threads.runs.create", "beta.threads.create_and_run",
    "beta.threads.runs.submit_tool_outputs", "videos.create", "videos.remix",
    "beta.agents.sessions.create", "beta.agents.sessions.events.create", "live.create",
    "beta.chatkit.sessions.create", "conversations.items.create",
}
#: Metered endpoints that cost nothing themselves (so a spent budget does not refuse them).
ZERO_COST = {"/v1/moderations"}
#: Mints of ephemeral Realtime keys cost nothing themselves, but the session a key opens
#: passes faregate by: a caller with a USD limit may not mint unless allowed (403).
MINTS = {"/v1/realtime/client_secrets", "/v1/realtime/sessions",
         "/v1/realtime/transcription_sessions", "/v1/realtime/translations/client_secrets"}


def verdict(route: Route) -> str:
    endpoint = classify(route.method, route.path())
    if endpoint is None:
        return "free"
    return "metered" if endpoint.metered else "billable"


def documented_free_posts() -> set[str]:
    text = README.read_text()
    block = text[text.index("<!-- free-posts -->"):text.index("<!-- /free-posts -->")]
    return set(re.findall(r"`POST (/v1/[^`]+)`", block))


def template_regex(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "[^/]+", template)


ROUTES = sdk_routes()


def test_the_sdk_has_routes_to_check():
    assert len(ROUTES) > 150
    assert {(r.method, r.template) for r in ROUTES} >= {
        ("POST", "/v1/chat/completions"), ("POST", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/containers"), ("POST", "/v1/vector_stores"), ("POST", "/v1/uploads"),
        ("POST", "/v1/realtime/calls"), ("GET", "/v1/responses/{response_id}")}


def test_the_free_post_list_is_the_one_readme_documents():
    documented = {template_regex(t) for t in documented_free_posts()}
    code = set()
    for pattern in FREE_POSTS:  # expand the alternations the code writes compactly
        if "(?:" in pattern:
            head, alts = pattern.split("(?:")
            code |= {head + alt for alt in alts.rstrip(")").split("|")}
        else:
            code.add(pattern)
    assert documented == code


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.template}" for r in ROUTES])
def test_every_route_has_a_documented_class(route):
    v = verdict(route)
    if v == "free" and route.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
        assert any(re.fullmatch(template_regex(t), route.path())
                   for t in documented_free_posts()), f"undocumented free call {route}"
    if route.call in SPENDS:
        assert v in ("metered", "billable"), route


def test_every_sdk_websocket_is_metered():
    for path in WEBSOCKETS:
        assert session_endpoint(path.replace("{session_id}", "sess_1")) is not None, path


async def test_with_the_budget_spent_only_free_routes_reach_the_upstream(make_gateway,
                                                                        upstream):
    gw = await make_gateway({"identity": {"allow_header_identity": True},
                             "tenants": {"acme": {"monthly_usd": "1"}}})
    gw.state.quota.book.counter("tenant:acme", "month", datetime.now(timezone.utc)).spent = 10**9
    wrong = []
    async with aiohttp.ClientSession() as http:
        for route in ROUTES:
            seen = len(upstream.requests)
            body = b"{}" if route.method in ("POST", "PUT", "PATCH") else None
            async with http.request(route.method, URL(gw.url + route.path(), encoded=True),
                                    data=body, headers={
                                        "Authorization": "Bearer sk-x",
                                        "Content-Type": "application/json",
                                        "x-faregate-tenant": "acme"}) as answer:
                status = answer.status
                code = (await answer.json(content_type=None) or {}).get("error", {}).get(
                    "code") if answer.content_type == "application/json" else None
            reached = len(upstream.requests) > seen
            v = verdict(route)
            zero = classify(route.method, route.path()) is not None and \
                classify(route.method, route.path()).path in ZERO_COST
            mint = classify(route.method, route.path()) is not None and \
                classify(route.method, route.path()).path in MINTS
            if v == "free" or zero:
                ok = reached
            elif mint:
                ok = not reached and status == 403 and code == "client_secrets_not_allowed"
            else:
                ok = not reached and status == 429 and code == "budget_exceeded"
            if not ok:
                wrong.append((route.method, route.template, v, status, code, reached))
    assert wrong == []
