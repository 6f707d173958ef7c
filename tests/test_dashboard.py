"""The dashboard in a real browser: headless Chromium renders what the admin API says.

faregate serves the page; usage is made through the official SDK (REST calls
and Realtime sessions, one of them still open); Chromium, driven over the
DevTools protocol (tests/browser.py), signs in with the admin token and the
test compares the numbers on the rendered page with the API's. A screenshot
is saved to artifacts/dashboard.png.
"""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from browser import Browser, find_chromium
from fake_sessions import FakeSessions
from faregate.storage import format_usd, human_usd
from test_realtime import sessions_of, text_turn

TOKEN = "dash-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
HELLO = [{"role": "user", "content": "one two three four"}]
# A caller-chosen tenant name that would run script if the page used it as markup.
HOSTILE = '<img src=x onerror="window.pwned=1">'


@pytest.fixture
async def browser():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    b = await Browser.launch(binary)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def realtime_upstream(upstream):
    """The fake upstream also answers Realtime upgrades (with tests/fake_sessions.py)."""
    sessions = FakeSessions()
    upstream.add_route("GET", "/v1/realtime", sessions.realtime)
    return upstream


async def api(gw, path: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + path, headers=AUTH) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def sign_in(browser, gw, token: str) -> None:
    await browser.navigate(gw.url + "/dashboard")
    await browser.wait_for("document.getElementById('token')")
    await browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login-form').requestSubmit(); true")


def for_people(usd: str) -> str:
    """What the page shows for the API's exact `usd` (the figure for people)."""
    return human_usd(int(Decimal(usd).scaleb(9)))


def rows_total(report: dict) -> str:
    return format_usd(int(sum(Decimal(r["cost_usd"]) for r in report["rows"]) * 10**9))


READ_PAGE = """(() => {
  const t = (id) => document.getElementById(id).textContent;
  const rows = (sel) => [...document.querySelectorAll(sel)];
  return {
    month: t('total-month-cost'), today: t('total-today-cost'), week: t('total-week-cost'),
    monthRequests: t('total-month-requests'), monthTokens: t('total-month-tokens'),
    active: t('active-sessions-count'),
    models: Object.fromEntries(rows('#by-model tr[data-model]')
      .map((tr) => [tr.dataset.model, tr.querySelector('[data-cost]').dataset.cost])),
    modelText: rows('#by-model tr[data-model]').map((tr) => tr.cells[0].textContent),
    endpoints: Object.fromEntries(rows('#by-endpoint tr[data-endpoint]')
      .map((tr) => [tr.dataset.endpoint, tr.querySelector('[data-cost]').dataset.cost])),
    tenants: rows('#top-tenants tr[data-tenant]').map((tr) => tr.dataset.tenant),
    budgets: Object.fromEntries(rows('#budgets [data-scope]')
      .map((d) => [d.dataset.scope + '|' + d.dataset.period, d.dataset.status])),
    fills: Object.fromEntries(rows('#budgets [data-scope]')
      .map((d) => [d.dataset.status, getComputedStyle(d.querySelector('.fill')).backgroundColor])),
    projected: rows('#budgets [data-projected]').map((d) => d.dataset.projected),
    alerts: rows('#alerts tr[data-alert]').length,
    bars: rows('#trend rect[data-day]').length,
    dayCosts: Object.fromEntries(rows('#trend rect[data-day]')
      .filter((r) => Number(r.dataset.cost) > 0).map((r) => [r.dataset.day, r.dataset.cost])),
    ticks: rows('#trend text[data-tick]').map((e) => e.textContent),
    live: rows('#active-sessions tr[data-session]').map((tr) => ({
      id: tr.dataset.session, who: tr.cells[0].textContent,
      cost: tr.querySelector('[data-cost]').dataset.cost })),
    ended: rows('#recent-sessions tr[data-session]').map((tr) => ({
      id: tr.dataset.session, cost: tr.querySelector('[data-cost]').dataset.cost })),
    injected: document.querySelectorAll('#app img').length + (window.pwned ? 1 : 0),
    url: location.href,
    stored: sessionStorage.getItem('faregate.admin-token'),
  };
})()"""


async def test_dashboard_shows_what_the_api_says(
        make_gateway, realtime_upstream, monkeypatch, browser):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    gw = await make_gateway({
        "identity": {"allow_header_identity": True},
        "tenants": {"acme": {"monthly_usd": "0.000050", "on_exceed": "alert_only"},
                    "globex": {"daily_usd": 5}},
    })
    client = gw.client()
    for tenant, user, model in (("acme", "alice", "gpt-4o-mini"), ("acme", "bob", "gpt-4o"),
                                ("globex", "carol", "gpt-4o-mini"), ("acme", "alice", "gpt-4o")):
        await client.chat.completions.create(
            model=model, messages=HELLO,
            extra_headers={"x-faregate-tenant": tenant, "x-faregate-user": user})
    await client.embeddings.create(model="text-embedding-3-small", input="a b c")
    async with client.realtime.connect(model="gpt-realtime", extra_headers={
            "x-faregate-tenant": "globex", "x-faregate-user": "dave"}) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await text_turn(conn, "a session that has ended")
    await sessions_of(gw, 1)

    async with client.realtime.connect(model="gpt-realtime", extra_headers={
            "x-faregate-tenant": HOSTILE, "x-faregate-user": "eve"}) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await text_turn(conn, "a session still open while the page loads")
        await gw.ledger_rows(7)

        month = await api(gw, "/admin/usage?period=month")
        today = await api(gw, "/admin/usage?period=today")
        week = await api(gw, "/admin/usage?period=week")
        models = await api(gw, "/admin/usage?period=month&group_by=model")
        endpoints = await api(gw, "/admin/usage?period=month&group_by=endpoint")
        tenants = await api(gw, "/admin/usage?period=month&group_by=tenant&top=10")
        days = await api(gw, "/admin/usage?period=month&group_by=day")
        budgets = await api(gw, "/admin/budgets")
        alerts = await api(gw, "/admin/alerts?limit=20")
        live = await api(gw, "/admin/sessions?active=true")
        ended = await api(gw, "/admin/sessions?active=false&limit=20")
        assert rows_total(models) == month["total_cost_usd"]
        assert live["active_count"] == 1 and len(ended["data"]) == 1

        await sign_in(browser, gw, TOKEN)
        await browser.wait_for("document.body.dataset.loaded === 'true'")
        page = await browser.evaluate(READ_PAGE)
        size = await browser.screenshot(ARTIFACTS / "dashboard.png")

    assert page["month"] == for_people(month["total_cost_usd"])
    assert page["today"] == for_people(today["total_cost_usd"])
    assert page["week"] == for_people(week["total_cost_usd"])
    assert page["monthRequests"] == f"{month['total_requests']} requests"
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in month["rows"])
    assert page["monthTokens"] == f"{tokens:,} tokens"
    assert page["models"] == {r["model"]: r["cost_usd"] for r in models["rows"]}
    assert page["modelText"] == [r["model"] for r in models["rows"]]  # costliest first
    assert page["endpoints"] == {r["endpoint"]: r["cost_usd"] for r in endpoints["rows"]}
    assert "/v1/realtime" in page["endpoints"]
    assert page["tenants"] == [r["tenant"] for r in tenants["rows"]] and HOSTILE in page["tenants"]
    assert page["dayCosts"] == {r["day"]: r["cost_usd"] for r in days["rows"]}
    assert page["bars"] >= 28 and page["ticks"][0] == "$0.00"

    assert page["budgets"] == {f"{b['scope']}|{b['period']}": b["status"]
                               for b in budgets["budgets"]}
    assert page["budgets"]["tenant:acme|month"] == "exceeded"
    assert page["budgets"]["tenant:globex|day"] == "ok"
    assert page["fills"] == {"exceeded": "rgb(201, 48, 44)", "ok": "rgb(46, 157, 91)"}
    # The projection moves with the clock (spend / share of the period gone): near, not equal.
    for shown, expected in zip(sorted(map(Decimal, page["projected"])),
                               sorted(Decimal(b["projected_period_end_usd"])
                                      for b in budgets["budgets"]), strict=True):
        assert abs(shown - expected) <= expected / 100
    assert page["alerts"] == len(alerts["data"]) > 0

    [open_session] = live["data"]
    assert page["active"] == "1"
    assert page["live"] == [{"id": open_session["id"], "who": HOSTILE + " / eve",
                             "cost": open_session["cost_usd"]}]
    assert page["ended"] == [{"id": s["id"], "cost": s["cost_usd"]} for s in ended["data"]]
    assert page["injected"] == 0  # the hostile name was shown as text, not run

    assert TOKEN not in page["url"] and page["stored"] == TOKEN
    assert size > 10_000  # a rendered page, not a blank one


async def test_wrong_token_shows_the_form_again_and_no_data(make_gateway, monkeypatch, browser):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    gw = await make_gateway()
    await sign_in(browser, gw, "not-the-token")
    await browser.wait_for("document.getElementById('login-error').textContent !== ''")
    state = await browser.evaluate("""({
      app: document.getElementById('app').classList.contains('hidden'),
      login: !document.getElementById('login').classList.contains('hidden'),
      loaded: document.body.dataset.loaded || null,
      month: document.getElementById('total-month-cost').textContent,
      stored: sessionStorage.getItem('faregate.admin-token'),
      error: document.getElementById('login-error').textContent })""")
    assert state == {"app": True, "login": True, "loaded": None, "month": "–", "stored": None,
                     "error": "That token was not accepted."}


async def test_refresh_keeps_the_last_data_on_failure_and_sign_out_forgets(
        make_gateway, monkeypatch, browser):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    gw = await make_gateway()
    await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(1)
    month = await api(gw, "/admin/usage?period=month")
    # Record the page's refresh period, then run its timer every 200 ms to keep this quick.
    await browser.add_init_script("""
      window.__periods = [];
      const setInterval_ = window.setInterval;
      window.setInterval = (fn, ms, ...rest) => {
        window.__periods.push(ms); return setInterval_(fn, Math.min(ms, 200), ...rest); };""")
    await sign_in(browser, gw, TOKEN)
    await browser.wait_for("document.body.dataset.loaded === 'true'")
    assert await browser.evaluate("window.__periods") == [10_000]
    updated = await browser.evaluate("document.getElementById('updated').textContent")
    assert updated.startswith("updated ") and updated.endswith(" UTC")

    await browser.evaluate("window.__fetch = window.fetch;"
                           "window.fetch = () => Promise.reject(new TypeError('network down')); true")
    await browser.wait_for("!document.getElementById('banner').classList.contains('hidden')")
    kept = await browser.evaluate("""({
      banner: document.getElementById('banner').textContent,
      month: document.getElementById('total-month-cost').textContent,
      stored: sessionStorage.getItem('faregate.admin-token') })""")
    assert kept == {"banner": "Refresh failed (network down); showing the last data.",
                    "month": for_people(month["total_cost_usd"]), "stored": TOKEN}

    await browser.evaluate("window.fetch = window.__fetch; true")
    await browser.wait_for("document.getElementById('banner').classList.contains('hidden')")

    await browser.evaluate("document.getElementById('signout').click(); true")
    gone = await browser.evaluate("""({
      login: !document.getElementById('login').classList.contains('hidden'),
      error: document.getElementById('login-error').textContent,
      month: document.getElementById('total-month-cost').textContent,
      models: document.querySelectorAll('#by-model tr[data-model]').length,
      loaded: document.body.dataset.loaded || null,
      stored: sessionStorage.getItem('faregate.admin-token') })""")
    assert gone == {"login": True, "error": "Signed out.", "month": "–", "models": 0,
                    "loaded": None, "stored": None}


READ_QUOTAS = """(() => {
  const out = {};
  for (const tr of document.querySelectorAll('#quotas tr[data-quota-tenant]'))
    out[tr.dataset.quotaTenant] = { allowed: tr.dataset.allowed === 'true', limits: [] };
  for (const tr of document.querySelectorAll('#quotas tr[data-quota-limit]')) {
    const v = (f) => tr.querySelector('[data-' + f + ']').dataset[f];
    out[tr.dataset.quotaLimit].limits.push({
      kind: tr.dataset.kind, scope: tr.dataset.scope, period: tr.dataset.period || null,
      used: v('used'), reserved: v('reserved'), remaining: v('remaining'), limit: v('limit'),
      status: v('status'), text: tr.cells[4].textContent });
  }
  return out;
})()"""


async def test_dashboard_shows_each_tenants_own_quota(make_gateway, monkeypatch, browser):
    """Per tenant, the page shows what that tenant's key reads from /v1/faregate/quota."""
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")
    keys = [{"sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": t}
            for k, t in (("sk-acme", "acme"), ("sk-globex", "globex"))]
    gw = await make_gateway({
        "identity": {"mode": "keys"}, "keys": keys,
        "tenants": {"acme": {"daily_usd": "0.00004", "max_requests_per_day": 50,
                             "default_max_output_tokens": 20},
                    "globex": {"monthly_usd": "2", "rpm": 6, "max_concurrent_sessions": 3}}})
    acme, globex = gw.client("sk-acme"), gw.client("sk-globex")
    for client in (acme, acme, globex):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(3)
    own = {t: await c.get("/faregate/quota", cast_to=object)
           for t, c in (("acme", acme), ("globex", globex))}
    admin = await api(gw, "/admin/quotas")
    assert [r["tenant"] for r in admin["tenants"]] == ["acme", "globex"]

    await sign_in(browser, gw, TOKEN)
    await browser.wait_for("document.body.dataset.loaded === 'true'")
    page = await browser.evaluate(READ_QUOTAS)

    assert set(page) == {"acme", "globex"}
    assert own["acme"]["allowed"] is False and own["globex"]["allowed"] is True
    for tenant, report in own.items():
        assert page[tenant]["allowed"] == report["allowed"]
        assert [(x["kind"], x["scope"], x["period"]) for x in page[tenant]["limits"]] == [
            (x["kind"], x["scope"], x["period"]) for x in report["limits"]]
        for shown, x in zip(page[tenant]["limits"], report["limits"]):
            fields = ("limit",) if x["kind"] in ("rpm", "tpm") else (
                "used", "reserved", "remaining", "limit", "status")
            assert {f: shown[f] for f in fields} == {f: str(x[f]) for f in fields}, shown
    [day] = [x for x in page["acme"]["limits"] if x["kind"] == "usd"]
    assert day["text"] == for_people(day["remaining"]) and day["status"] == own["acme"]["limits"][0][
        "status"]
