"""The dashboard in a real browser: headless Chromium renders what the admin API says.

faregate serves the page; usage is made through the official SDK; Chromium
(driven over the DevTools protocol) signs in with the admin token and the
test compares the numbers on the rendered page with the API's. A screenshot
is saved to artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest

from browser import Browser, find_chromium

TOKEN = "dash-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
HELLO = [{"role": "user", "content": "one two three four"}]


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


async def api(gw, path: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + path, headers=AUTH) as r:
            assert r.status == 200
            return await r.json()


async def sign_in(browser, gw, token: str) -> None:
    await browser.navigate(gw.url + "/dashboard")
    await browser.wait_for("document.getElementById('token')")
    await browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login-form').requestSubmit(); true")


async def test_dashboard_shows_what_the_api_says(make_gateway, monkeypatch, browser):
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
    await gw.ledger_rows(5)

    month = await api(gw, "/admin/usage?period=month")
    today = await api(gw, "/admin/usage?period=today")
    models = await api(gw, "/admin/usage?period=month&group_by=model")
    budgets = await api(gw, "/admin/budgets")
    alerts = await api(gw, "/admin/alerts?limit=20")
    assert Decimal_total(models) == month["total_cost_usd"]

    await sign_in(browser, gw, TOKEN)
    await browser.wait_for("document.body.dataset.loaded === 'true'")
    text = await browser.evaluate("""(() => {
      const t = (id) => document.getElementById(id).textContent;
      return {
        month: t('total-month-cost'), today: t('total-today-cost'), week: t('total-week-cost'),
        active: t('active-sessions-count'),
        models: Object.fromEntries([...document.querySelectorAll('#by-model tr[data-model]')]
          .map((tr) => [tr.dataset.model, tr.querySelector('[data-cost]').dataset.cost])),
        modelText: [...document.querySelectorAll('#by-model tr[data-model]')]
          .map((tr) => tr.cells[0].textContent),
        budgets: Object.fromEntries([...document.querySelectorAll('#budgets [data-scope]')]
          .map((d) => [d.dataset.scope + '|' + d.dataset.period, d.dataset.status])),
        alerts: document.querySelectorAll('#alerts tr[data-alert]').length,
        bars: document.querySelectorAll('#trend rect[data-day]').length,
        url: location.href,
        stored: sessionStorage.getItem('faregate.admin-token'),
      };
    })()""")
    assert text["month"] == "$" + month["total_cost_usd"]
    assert text["today"] == "$" + today["total_cost_usd"]
    assert text["week"] == "$" + (await api(gw, "/admin/usage?period=week"))["total_cost_usd"]
    assert text["models"] == {r["model"]: r["cost_usd"] for r in models["rows"]}
    assert text["modelText"] == [r["model"] for r in models["rows"]]  # fullest first
    assert text["budgets"] == {f"{b['scope']}|{b['period']}": b["status"]
                               for b in budgets["budgets"]}
    assert text["budgets"]["tenant:acme|month"] == "exceeded"
    assert text["alerts"] == len(alerts["data"]) > 0
    assert text["active"] == "0" and text["bars"] >= 28
    assert TOKEN not in text["url"] and text["stored"] == TOKEN

    size = await browser.screenshot(ARTIFACTS / "dashboard.png")
    assert size > 10_000  # a rendered page, not a blank one


def Decimal_total(report: dict) -> str:
    from decimal import Decimal

    from faregate.storage import format_usd

    return format_usd(int(sum(Decimal(r["cost_usd"]) for r in report["rows"]) * 10**9))


async def test_wrong_token_shows_the_form_again_and_no_data(make_gateway, monkeypatch, browser):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    gw = await make_gateway()
    await sign_in(browser, gw, "not-the-token")
    await browser.wait_for("document.getElementById('login-error').textContent !== ''")
    state = await browser.evaluate("""({
      app: document.getElementById('app').classList.contains('hidden'),
      loaded: document.body.dataset.loaded || null,
      stored: sessionStorage.getItem('faregate.admin-token'),
      error: document.getElementById('login-error').textContent })""")
    assert state == {"app": True, "loaded": None, "stored": None,
                     "error": "That token was not accepted."}
