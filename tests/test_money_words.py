"""Money for people, exactly for machines: what a budget refusal says, and how
amounts read in messages (issue "An operator's first day", items 1 and 15).

Each test here failed before its fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import openai
import pytest
import websockets

from faregate.proxy.quota import BudgetLimit, budget_refusal, budget_cut
from faregate.storage import human_usd

from test_dashboard import browser  # noqa: F401  (fixture)
from test_session_limits import AUTH, fake, limited, url  # noqa: F401

MINI = {"input": "0.15", "output": "0.60"}
HELLO = [{"role": "user", "content": "one two three"}]


def cfg(tenant: dict) -> dict:
    return {"pricing": {"models": {"gpt-4o-mini": MINI}},
            "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"}],
            "tenants": {"acme": tenant}}


async def test_a_call_whose_own_reservation_does_not_fit_is_told_what_to_set(
        make_gateway, upstream):
    """It said "is used up ($0.000000000 spent or reserved)" with nothing spent: the
    call's own default output tokens (the model's longest) were what did not fit."""
    gw = await make_gateway(cfg({"daily_usd": "0.001"}))
    client = gw.client("sk-acme", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    err = info.value
    assert err.status_code == 429 and err.code == "budget_exceeded"
    assert err.type == "insufficient_quota" and not upstream.requests
    message = err.body["message"]
    assert "used up" not in message, message
    found = re.fullmatch(
        r"This call could cost up to \$0\.00\d{4} \((\d+) input \+ 16,384 output tokens of "
        r"gpt-4o-mini\); \$0\.001 of the daily budget of \$0\.001 for tenant acme remains "
        r"— set max_completion_tokens to ([\d,]+) or less to fit\. "
        r"It resets at the start of the next UTC day\.", message)
    assert found, message
    fits = int(found[2].replace(",", ""))
    assert 1_000 < fits < 16_384
    # what it says to set is what fits: the same call with that cap is served
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                         max_completion_tokens=fits)
    assert len(upstream.requests) == 1


async def test_the_refusal_names_the_field_the_call_used(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": "0.001"}))
    client = gw.client("sk-acme", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                             max_tokens=100_000)
    assert "— set max_tokens to " in info.value.body["message"]
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-4o-mini", input="one two three")
    assert "— set max_output_tokens to " in info.value.body["message"]


async def test_an_input_that_alone_does_not_fit_is_told_so(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": "0.000001"}))
    client = gw.client("sk-acme", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "word " * 400}])
    message = info.value.body["message"]
    assert re.search(r"; \$0\.000001 of the daily budget of \$0\.000001 for tenant acme "
                     r"remains — its input alone costs about \$0\.000\d{4}: shorten it\. "
                     r"It resets at the start of the next UTC day\.$", message), message


def test_a_spent_budget_still_says_used_up():
    limit = BudgetLimit("tenant:acme", "month", 5_000_000_000)
    refusal = budget_refusal(limit, 5_012_345_678)
    assert refusal.message == ("The monthly budget of $5.00 for tenant acme is used up "
                               "($5.01 spent or reserved). It resets at the start of the "
                               "next UTC month.")
    assert (refusal.status, refusal.type, refusal.code) == (
        429, "insufficient_quota", "budget_exceeded")
    assert budget_cut(refusal).message == refusal.message


def test_calls_in_flight_and_several_answers_are_counted_in_what_fits():
    from faregate.proxy.quota import Ask, Sizing

    limit = BudgetLimit("user:acme/alice", "day", 10_000_000)  # $0.01
    # 100 input tokens ($0.001) + 2 answers x 1,000 output tokens ($0.009 each): $0.019
    sizing = Sizing(100, 2_000, "gpt-4o", "max_tokens", choices=2,
                    input_cost=lambda: (1_000_000, 1_000_000))
    refusal = budget_refusal(limit, 4_000_000, Ask(19_000_000, sizing=sizing), 4_000_000,
                             2_500_000)
    # $0.004 free: $0.003 buys 333 output tokens at $0.000009, 166 per answer (one short)
    assert refusal.message == (
        "This call could cost up to $0.019 (100 input + 2,000 output tokens of gpt-4o); "
        "$0.004 of the daily budget of $0.01 for user acme/alice remains ($0.0025 more is "
        "held by calls in flight) — set max_tokens to 166 or less to fit. It resets at "
        "the start of the next UTC day.")


async def test_a_realtime_session_the_budget_cannot_start_says_what_its_first_response_costs(
        limited):
    gw = await limited({"daily_usd": "0.00001"})
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        async with websockets.connect(url(gw), additional_headers=AUTH):
            pass
    body = json.loads(info.value.response.body)
    message = body["error"]["message"]
    assert info.value.response.status_code == 429, body
    assert message.startswith("This session's first response could cost up to $0.0"), message
    assert "; $0.00001 of the daily budget of $0.00001 for tenant acme remains." in message


@pytest.mark.parametrize("nanos,shown", [
    (538_956_333, "$0.5390"), (123_400, "$0.0001234"), (123_456, "$0.0001235"),
    (1_000_000, "$0.001"), (12_345_000_000, "$12.35"), (999_949_999, "$0.9999"),
    (99_995_000, "$0.1000"),
])
def test_money_for_people(nanos, shown):
    assert human_usd(nanos) == shown


def test_an_alert_below_a_dollar_shows_its_digits_not_zero_cents():
    from datetime import datetime, timezone
    from decimal import Decimal

    from faregate.proxy.alerts import Alert, headline

    alert = Alert(id="tenant:acme|day|2026-11-23|0.8", scope="tenant:acme", period="day",
                  period_start="2026-11-23", threshold=Decimal("0.8"), level="warning",
                  limit_usd=Decimal("0.005"), spent_usd=Decimal("0.004123456"),
                  used_ratio=Decimal("0.8246912"), projected_usd=Decimal("0.0061"),
                  top_models=(("gpt-4o-mini", Decimal("0.004123456")),),
                  at=datetime(2026, 11, 23, 14, 5, 6, tzinfo=timezone.utc))
    assert headline(alert) == (
        ":warning: faregate budget 80% — tenant acme, day 2026-11-23: $0.004123 of $0.005 "
        "spent (82.5%), projected $0.0061 at period end; top: gpt-4o-mini $0.004123")


def test_the_report_table_reads_for_people_and_exactly_with_exact():
    from faregate.storage import TOKEN_COLUMNS, UsageReport, UsageRow, render_report

    row = UsageRow(key="acme", requests=2, tokens=dict.fromkeys(TOKEN_COLUMNS, 0), reasoning_tokens=0, seconds=0,
                   characters=0, images=0, cost_nanos=538_956_333, unpriced=0, estimated=0,
                   savings_nanos=12_345_000_000)
    report = UsageReport("tenant", [row])
    table = render_report(report, "tenant", "table")
    assert "$0.5390" in table and "$12.35" in table and "0.538956333" not in table
    exact = render_report(report, "tenant", "table", exact=True)
    assert "0.538956333" in exact and "12.345000" in exact


READ_MONEY = """(() => {
  const e = (id) => document.getElementById(id);
  const cell = document.querySelector('#by-model tr[data-model] [data-cost]');
  return { month: e('total-month-cost').textContent, monthExact: e('total-month-cost').title,
           saved: e('total-month-saved').textContent, savedExact: e('total-month-saved').title,
           model: cell.textContent, modelExact: cell.title, modelCost: cell.dataset.cost };
})()"""


async def test_the_dashboard_shows_money_for_people_and_exact_on_hover(
        make_gateway, upstream, monkeypatch, browser):
    """The headlines showed 9 decimals ("$0.538956333")."""
    from aiohttp import web

    from test_dashboard import TOKEN, api, sign_in

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 0}})

    upstream.add_route("POST", "/v1/chat/completions", answer)
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    # 1,000 input tokens at $538.956333 per million: $0.538956333 exactly
    gw = await make_gateway({"pricing": {"models": {"gpt-4o-mini": {
        "input": "538.956333", "output": "1"}}}})
    await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(1)
    month = await api(gw, "/admin/usage?period=month")
    assert month["total_cost_usd"] == "0.538956333"  # the API stays exact

    await sign_in(browser, gw, TOKEN)
    await browser.wait_for("document.body.dataset.loaded === 'true'")
    page = await browser.evaluate(READ_MONEY)
    assert page == {"month": "$0.5390", "monthExact": "$0.538956333",
                    "saved": "cache saved $0.00", "savedExact": "cache saved $0.000000",
                    "model": "$0.5390", "modelExact": "$0.538956333",
                    "modelCost": "0.538956333"}


DASHBOARD = (Path(__file__).resolve().parent.parent / "proxy" / "admin" / "static"
             / "dashboard.html").read_text()
JS_CASES = [0, 1, 1_500, 123_400, 123_456, 538_956_333, 539_000_000, 99_995_000,
            999_949_999, 999_950_000, 1_234_567_000, 12_345_000_000, 123_456_789_000_000,
            -2_500_000_000, -538_956_333, 5, 10, 55, 995, 9_995, 100_000_000]


async def test_the_dashboard_and_the_cli_format_money_alike(browser):
    """One rule on both sides: the page's BigInt formatting (its own source, run in
    Chromium) gives what `human_usd` gives."""
    from faregate.storage import format_usd

    start = DASHBOARD.index("  const exact = ")
    end = DASHBOARD.index("  // An element's money")
    exact = [format_usd(n) for n in JS_CASES]
    got = await browser.evaluate(
        f"(() => {{ {DASHBOARD[start:end]}; return {json.dumps(exact)}.map(usd); }})()")
    assert got == [human_usd(n) for n in JS_CASES]
