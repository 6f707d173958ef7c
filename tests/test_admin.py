"""The admin API: who spent what, on which model, and where each budget is heading.

Usage is made through faregate with the official SDK; every figure the API
returns is checked against the ledger rows those calls wrote.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import aiohttp
import pytest

from faregate.pricing import load_price_table
from faregate.proxy.alerts import projected
from faregate.proxy.quota import BudgetBook
from faregate.proxy.admin import budget_views, status_for
from faregate.proxy import parse_settings
from faregate.storage import format_usd

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
M = Decimal(1_000_000)

CONFIG = {
    "identity": {"allow_header_identity": True},
    "tenants": {
        "acme": {"monthly_usd": "1.00", "per_user_daily_usd": "0.50", "markup": "0.25"},
        "beta": {"daily_usd": "0.000010", "on_exceed": "alert_only"},
    },
}


@pytest.fixture
async def admin_gw(make_gateway, monkeypatch):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    return await make_gateway(CONFIG)


async def chat(gw, tenant: str, user: str | None = None, model: str = "gpt-4o-mini",
               words: int = 3, cache: bool = False):
    headers = {"x-faregate-tenant": tenant}
    if user:
        headers["x-faregate-user"] = user
    kw = {"user": "cache-hit"} if cache else {}
    return await gw.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": " ".join(["word"] * words)}],
        extra_headers=headers, **kw)


async def get(gw, path: str, headers=AUTH, status: int = 200):
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + path, headers=headers) as r:
            assert r.status == status, await r.text()
            if r.content_type == "application/json":
                return await r.json()
            return await r.text()


async def seed(gw) -> list:
    await chat(gw, "acme", "alice", words=5)
    await chat(gw, "acme", "alice", words=9, cache=True)
    await chat(gw, "acme", "bob", model="gpt-4o")
    await chat(gw, "beta", "alice")
    await gw.client().embeddings.create(model="text-embedding-3-small", input="a b c",
                                        extra_headers={"x-faregate-tenant": "beta"})
    return await gw.ledger_rows(5)


async def test_admin_is_off_without_a_token_and_guarded_with_one(make_gateway, monkeypatch):
    monkeypatch.delenv("FAREGATE_ADMIN_TOKEN", raising=False)
    gw = await make_gateway()
    for path in ("/admin/usage", "/admin/budgets", "/dashboard"):
        body = await get(gw, path, status=404)
        assert body["error"]["code"] == "admin_disabled"

    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    for path in ("/admin/usage", "/admin/usage/logs", "/admin/sessions", "/admin/sessions/x",
                 "/admin/budgets", "/admin/alerts"):
        body = await get(gw, path, headers={}, status=401)
        assert body["error"]["code"] == "invalid_admin_token"
        await get(gw, path, headers={"Authorization": "Bearer wrong"}, status=401)
        await get(gw, path, headers={"Authorization": TOKEN}, status=401)  # no scheme
        await get(gw, path + f"?token={TOKEN}", headers={}, status=401)  # never in URLs
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/admin/usage") as r:
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await get(gw, "/admin/usage"))["rows"] == []


async def test_usage_groupings_match_the_ledger(admin_gw):
    gw = admin_gw
    rows = await seed(gw)
    by = defaultdict(lambda: defaultdict(int))
    for r in rows:
        for group, key in (("tenant", r.tenant), ("model", r.model), ("endpoint", r.endpoint),
                           ("day", r.ts.date().isoformat()), ("user", (r.tenant, r.user))):
            by[group][key] += r.cost_nanos

    for group in ("tenant", "model", "endpoint", "day"):
        body = await get(gw, f"/admin/usage?group_by={group}&period=month")
        assert body["group_by"] == group and body["period"] == "month"
        got = {row[group]: row["cost_usd"] for row in body["rows"]}
        assert got == {k: format_usd(v) for k, v in by[group].items()}, group
        assert body["total_cost_usd"] == format_usd(sum(r.cost_nanos for r in rows))
        assert body["total_requests"] == len(rows)

    users = await get(gw, "/admin/usage?group_by=user")
    got = {(row["tenant"], row["user"]): row["cost_usd"] for row in users["rows"]}
    assert got == {k: format_usd(v) for k, v in by["user"].items()}
    assert ("acme", "alice") in got and ("beta", "alice") in got  # same name, two tenants

    acme = await get(gw, "/admin/usage?group_by=model&tenant=acme")
    assert {row["model"] for row in acme["rows"]} == {r.model for r in rows if r.tenant == "acme"}
    assert len(acme["rows"]) == 2  # the served snapshots of gpt-4o-mini and gpt-4o
    top = await get(gw, "/admin/usage?group_by=model&top=1")
    assert len(top["rows"]) == 1 and top["total_cost_usd"] == body["total_cost_usd"]
    assert top["rows"][0]["cost_usd"] == max(
        (row["cost_usd"] for row in (await get(gw, "/admin/usage?group_by=model"))["rows"]),
        key=Decimal)

    today = datetime.now(timezone.utc).date().isoformat()
    ranged = await get(gw, f"/admin/usage?from={today}&to={today}")
    assert ranged["period"] is None and ranged["total_cost_usd"] == body["total_cost_usd"]
    empty = await get(gw, "/admin/usage?from=2001-01-01&to=2001-01-31")
    assert empty["rows"] == [] and empty["total_cost_usd"] == "0.000000"


async def test_usage_csv_and_savings_and_margin(admin_gw):
    gw = admin_gw
    rows = await seed(gw)
    cached = [r for r in rows if r.tokens["cached_input"]]
    assert len(cached) == 1
    # gpt-4o-mini: input $0.15/1M, cached input $0.075/1M -> each cached token saves $0.075/1M.
    assert Decimal(cached[0].savings_nanos).scaleb(-9) == (
        cached[0].tokens["cached_input"] * Decimal("0.075") / M)
    acme = [r for r in rows if r.tenant == "acme"]
    for r in acme:  # markup 0.25: billed = cost x 1.25, fixed at charge time
        assert r.billed_nanos == int(Decimal(r.cost_nanos) * Decimal("1.25"))
    assert all(r.billed_nanos is None for r in rows if r.tenant == "beta")

    body = await get(gw, "/admin/usage?group_by=tenant")
    t = {row["tenant"]: row for row in body["rows"]}
    acme_cost = sum(r.cost_nanos for r in acme)
    assert t["acme"]["savings_usd"] == format_usd(cached[0].savings_nanos)
    assert t["acme"]["billed_usd"] == format_usd(sum(r.billed_nanos for r in acme))
    assert t["acme"]["margin_usd"] == format_usd(sum(r.billed_nanos for r in acme) - acme_cost)
    assert t["beta"]["margin_usd"] == "0.000000"
    assert t["beta"]["billed_usd"] == t["beta"]["cost_usd"]
    assert body["total_savings_usd"] == format_usd(cached[0].savings_nanos)

    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/admin/usage?group_by=user&format=csv", headers=AUTH) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            assert "attachment" in r.headers["content-disposition"]
            table = list(csv.DictReader(io.StringIO(await r.text())))
    assert {(x["tenant"], x["user"]) for x in table} == {
        ("acme", "alice"), ("acme", "bob"), ("beta", "alice"), ("beta", "")}
    assert sum(Decimal(x["cost_usd"]) for x in table) == Decimal(body["total_cost_usd"])
    assert {"savings_usd", "billed_usd", "margin_usd"} <= set(table[0])


@pytest.mark.parametrize("query, param", [
    ("period=year", "period"), ("group_by=color", "group_by"), ("format=xml", "format"),
    ("from=yesterday", "from"), ("from=2026-02-01&to=2026-01-01", "from"), ("top=0", "top"),
    ("top=abc", "top"), ("tenant=" + "x" * 300, "tenant"),
])
async def test_usage_rejects_bad_parameters_by_name(admin_gw, query, param):
    body = await get(admin_gw, "/admin/usage?" + query, status=400)
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


async def test_logs_page_with_a_cursor_and_filter(admin_gw):
    gw = admin_gw
    rows = await seed(gw)
    seen, before = [], ""
    for _ in range(5):
        page = await get(gw, f"/admin/usage/logs?limit=2{before}")
        seen += page["data"]
        if not page["has_more"]:
            break
        before = f"&before={page['next_before']}"
    assert [c["id"] for c in seen] == [r.id for r in rows]  # newest first, no gaps or repeats
    first = seen[0]
    assert first["cost_usd"] == format_usd(rows[0].cost_nanos)
    assert set(first["breakdown"]) <= {"input", "cached_input", "output"}
    beta = await get(gw, "/admin/usage/logs?tenant=beta&model=text-embedding-3-small")
    assert [c["endpoint"] for c in beta["data"]] == ["/v1/embeddings"]
    await get(gw, "/admin/usage/logs?before=../../etc", status=400)
    await get(gw, "/admin/usage/logs?limit=100000", status=400)


async def test_budgets_show_spend_projection_and_status(admin_gw):
    gw = admin_gw
    rows = await seed(gw)
    body = await get(gw, "/admin/budgets")
    now = datetime.fromisoformat(body["now"])
    views = {(b["scope"], b["period"]): b for b in body["budgets"]}
    acme = views[("tenant:acme", "month")]
    spent = sum(r.cost_nanos for r in rows if r.tenant == "acme")
    assert acme["limit_usd"] == "1.000000" and acme["spent_usd"] == format_usd(spent)
    assert acme["reserved_usd"] == "0.000000"
    assert acme["remaining_usd"] == format_usd(10**9 - spent)
    assert Decimal(acme["used_ratio"]) == (Decimal(spent) / 10**9).quantize(Decimal("0.0001"))
    assert acme["projected_period_end_usd"] == format_usd(projected(spent, "month", now))
    assert acme["status"] == "ok" and acme["period_start"] == now.strftime("%Y-%m")

    alice = views[("user:acme/alice", "day")]
    assert alice["user"] == "alice" and alice["limit_usd"] == "0.500000"
    assert alice["spent_usd"] == format_usd(
        sum(r.cost_nanos for r in rows if (r.tenant, r.user) == ("acme", "alice")))
    beta = views[("tenant:beta", "day")]  # $0.00001 a day (alert only): used up
    assert beta["status"] == "exceeded" and beta["remaining_usd"] == "0.000000"
    assert body["budgets"][0]["scope"] == "tenant:beta"  # fullest first
    only = await get(gw, "/admin/budgets?tenant=acme")
    assert {b["tenant"] for b in only["budgets"]} == {"acme"}

    alerts = await get(gw, "/admin/alerts")
    levels = {(a["scope"], a["level"]) for a in alerts["data"]}
    assert ("tenant:beta", "exceeded") in levels and ("tenant:beta", "warning") in levels
    assert (await get(gw, "/admin/alerts?since=2999-01-01"))["data"] == []


@pytest.mark.parametrize("spent, status", [
    (0, "ok"), (799_999, "ok"), (800_000, "warning"), (949_999, "warning"),
    (950_000, "critical"), (999_999, "critical"), (1_000_000, "exceeded"),
    (1_500_000, "exceeded"),
])
def test_status_follows_the_alert_thresholds(spent, status):
    thresholds = [Decimal("0.8"), Decimal("0.95"), Decimal("1.0")]
    assert status_for(spent, 1_000_000, thresholds) == status


def test_projection_on_a_fixed_clock():
    """Half of November gone with $4 of a $10 budget spent: heading for $8."""
    settings = parse_settings({"tenants": {"acme": {"monthly_usd": 10, "daily_usd": 2}}})
    book = BudgetBook()
    now = datetime(2026, 11, 16, 0, 0, tzinfo=timezone.utc)
    book.seed("tenant:acme", "month", "2026-11", 4 * 10**9, 0, 0)
    book.seed("tenant:acme", "day", "2026-11-16", 0, 0, 0)
    book.counter("tenant:acme", "month", now).reserved = 10**8
    month, day = sorted(budget_views(settings, load_price_table(), book, now), key=lambda v: v.period != "month")
    d = month.as_dict()
    assert (d["spent_usd"], d["reserved_usd"], d["remaining_usd"]) == (
        "4.000000", "0.100000", "5.900000")
    assert d["projected_period_end_usd"] == "8.000000" and d["used_ratio"] == "0.4000"
    assert d["status"] == "ok" and d["period_start"] == "2026-11"
    at_six = datetime(2026, 11, 16, 6, 0, tzinfo=timezone.utc)  # a quarter of the day
    book.seed("tenant:acme", "day", "2026-11-16", 5 * 10**8, 0, 0)
    [day] = [v for v in budget_views(settings, load_price_table(), book, at_six) if v.period == "day"]
    assert day.as_dict()["projected_period_end_usd"] == "2.000000"
    assert day.status == "ok"


async def test_sessions_active_then_ended_with_their_breakdown(tmp_path, monkeypatch):
    from conftest import gateway_config, start_gateway
    from fake_sessions import FakeSessions
    from test_realtime import RT_PRICES, text_turn

    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    async with FakeSessions() as fake:
        gw = await start_gateway(parse_settings(gateway_config(
            fake.url, tmp_path, {"pricing": {"models": {"gpt-realtime": RT_PRICES}}})))
        try:
            async with gw.client().realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(session={"type": "realtime",
                                                   "output_modalities": ["text"]})
                await text_turn(conn, "hello there friend")
                live = await get(gw, "/admin/sessions?active=true")
                assert live["active_count"] == 1
                [s] = live["data"]
                assert s["active"] and s["ended_at"] is None and s["end_reason"] is None
                assert s["responses"] == 1 and s["model"] == "gpt-realtime"
                one = await get(gw, f"/admin/sessions/{s['id']}")
                assert one["cost_usd"] == s["cost_usd"] and one["active"]
            sid = s["id"]
            for _ in range(100):
                await gw.state.ledger.flush()
                ended = await get(gw, "/admin/sessions?active=false")
                if ended["data"]:
                    break
            [e] = ended["data"]
            [charge] = await gw.ledger_rows(1)
            assert e["id"] == sid and e["end_reason"] == "client_closed" and not e["active"]
            assert e["cost_usd"] == format_usd(charge.cost_nanos)
            assert e["breakdown"] == {k: format_usd(v) for k, v in charge.breakdown.items()}
            assert e["input_tokens"] == charge.tokens["input"] and Decimal(e["duration_s"]) > 0
            assert (await get(gw, f"/admin/sessions/{sid}"))["end_reason"] == "client_closed"
            assert (await get(gw, "/admin/sessions?active=true"))["data"] == []
            missing = await get(gw, "/admin/sessions/fgs_nope", status=404)
            assert missing["error"]["code"] == "session_not_found"
            await get(gw, "/admin/sessions/%2e%2e%2fx", status=400)
        finally:
            await gw.stop()


async def test_logs_find_a_call_by_its_request_id_header(admin_gw):
    gw = admin_gw
    await seed(gw)
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "find me"}],
        extra_headers={"x-faregate-tenant": "acme"})
    rid = raw.headers["x-faregate-request-id"]
    assert rid.startswith("fg_")
    [row] = [r for r in await gw.ledger_rows(6) if r.request_id == rid]
    found = await get(gw, f"/admin/usage/logs?request_id={rid}")
    assert [c["id"] for c in found["data"]] == [row.id]  # the ledger row's request_id
    assert found["data"][0]["request_id"] == rid and found["has_more"] is False
    none = await get(gw, "/admin/usage/logs?request_id=fg_000000000000000000000000")
    assert none["data"] == []


@pytest.mark.parametrize("query, param", [
    ("tenat=acme", "tenat"), ("requestid=fg_1", "requestid"), ("limit=5&page=2", "page"),
])
async def test_logs_refuse_unknown_parameters(admin_gw, query, param):
    body = await get(admin_gw, "/admin/usage/logs?" + query, status=400)
    err = body["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error", "invalid_parameter", param)
    assert "request_id" in err["message"]  # says what the route takes
