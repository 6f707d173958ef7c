"""What a person meets first: the words and numbers faregate shows are clear and true.

Each test here failed before its fix (issue "An operator's first day").
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from decimal import Decimal

import aiohttp
import openai
import pytest

from faregate.proxy._logging import JsonFormatter
from faregate.storage import human_usd, plain_decimal

from test_realtime import fake, rt_gateway, until  # noqa: F401  (fixtures)

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.mark.parametrize("nanos,shown", [
    (0, "$0.00"), (1_500, "$0.0000015"), (538_956_333, "$0.5390"), (539_000_000, "$0.539"),
    (999_950_000, "$1.00"),
    (1_234_567_000, "$1.23"), (123_456_789_000_000, "$123,456.79"), (-2_500_000_000, "-$2.50"),
])
def test_money_for_people_is_cents_or_four_significant_digits(nanos, shown):
    assert human_usd(nanos) == shown


async def test_live_seconds_are_plain_numbers_everywhere(rt_gateway, fake, monkeypatch):
    """40 billed seconds printed as "4E+1" in the admin API and reports."""
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", "admin-secret")
    fake.live_seconds_step = 20
    gw = await rt_gateway()
    async with gw.client().live.connect() as conn:
        await conn.send({"type": "session.start", "session": {"model": "gpt-live-1"}})
        await until(conn, "session.started")
        for _ in range(2):
            await conn.send({"type": "session.input_audio.append",
                             "audio": base64.b64encode(b"\0" * 960).decode()})
            await until(conn, "session.usage.updated")
        await conn.send({"type": "session.close"})
        await until(conn, "session.closed")
    await gw.ledger_rows(2)
    async with aiohttp.ClientSession(headers=ADMIN) as s:
        async with s.get(gw.url + "/admin/sessions") as r:
            [session] = (await r.json())["data"]
        async with s.get(gw.url + "/admin/usage?group_by=model") as r:
            [row] = (await r.json())["rows"]
        async with s.get(gw.url + "/admin/usage?group_by=model&format=csv") as r:
            csv_text = await r.text()
        async with s.get(gw.url + "/admin/usage/logs") as r:
            logs = (await r.json())["data"]
    assert session["seconds"] == "40" and row["seconds"] == "40"
    assert sorted(c["seconds"] for c in logs) == ["20", "20"]
    assert ",40," in csv_text and "E+" not in csv_text
    assert plain_decimal(Decimal("4E+1")) == "40"


async def test_outside_v1_is_an_openai_shaped_404_that_says_where_the_api_is(gateway):
    """A base URL without /v1 got aiohttp's plain-text '404: Not Found'."""
    client = openai.AsyncOpenAI(base_url=gateway.url, api_key="sk-test", max_retries=0)
    try:
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[
                {"role": "user", "content": "hi"}])
    finally:
        await client.close()
    assert "/v1" in err.value.message and err.value.code == "unknown_url"
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.url + "/") as r:
            body = await r.json()
    assert r.status == 404 and body["error"]["type"] == "invalid_request_error"


async def test_keys_mode_without_a_key_says_none_was_given(make_gateway, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")
    gw = await make_gateway({"identity": {"mode": "keys"}, "keys": [
        {"sha256": hashlib.sha256(b"fg-acme").hexdigest(), "tenant": "acme"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"}) as r:
            missing = await r.json()
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"},
                          headers={"Authorization": "Bearer fg-wrong"}) as r:
            wrong = await r.json()
    assert r.status == 401
    assert missing["error"]["message"].startswith("You didn't provide an API key")
    assert wrong["error"]["message"].startswith("Incorrect API key provided")


def test_a_log_field_never_replaces_the_lines_own_level():
    """The 100 % alert's `level: exceeded` replaced the log line's own level."""
    record = logging.LogRecord("faregate.alerts", logging.ERROR, __file__, 1,
                               "budget threshold reached", None, None)
    record.level = "exceeded"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "error" and line["extra_level"] == "exceeded"


async def test_a_spent_budget_alert_logs_at_error(make_gateway, caplog):
    gw = await make_gateway({"tenants": {"acme": {"daily_usd": "0.000001",
                                                   "on_exceed": "alert_only"}},
                             "identity": {"allow_header_identity": True}})
    client = gw.client(default_headers={"x-faregate-tenant": "acme"})
    with caplog.at_level(logging.WARNING, logger="faregate.alerts"):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    levels = {r.alert_level: r.levelname for r in caplog.records if hasattr(r, "alert_level")}
    assert levels.get("exceeded") == "ERROR"


async def test_calls_the_upstream_refused_are_not_reported_as_unpriced(gateway, monkeypatch):
    """A 400 the upstream gave (here: no model) was listed as an UNPRICED row, asking
    for a price."""
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", "admin-secret")
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway.url + "/v1/chat/completions", data=b'{"messages": []}',
                          headers={"content-type": "application/json",
                                   "authorization": "Bearer sk-test"}) as r:
            assert r.status == 400
        await gateway.ledger_rows(1)
        async with s.get(gateway.url + "/admin/usage?group_by=model", headers=ADMIN) as r:
            rows = (await r.json())["rows"]
    assert rows and all(row["unpriced"] == 0 for row in rows)
    from faregate.storage import render_report
    report = await gateway.state.ledger.usage(None, None, "model")
    assert "UNPRICED" not in render_report(report, "model", "table")


async def test_shutdown_says_it_is_waiting_for_open_sessions(rt_gateway, fake, caplog):
    """SIGTERM with one idle Realtime session waited 32 s without a word."""
    gw = await rt_gateway()
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        with caplog.at_level(logging.WARNING, logger="faregate.relay"):
            await gw.runner.shutdown()
    said = [r.getMessage() for r in caplog.records if r.name == "faregate.relay"]
    assert "shutting down: waiting for open sessions to end" in said
    assert any(m.startswith("closing the sessions still open") for m in said)


@pytest.mark.parametrize("limit", ["0.0039", "0.0045", "0.006"])
async def test_a_budget_cut_right_after_a_response_sends_its_error_event(limit, tmp_path):
    """The cut closed 1008 without the error event when the next response.create came at
    once (reported 3 of 3 times; not reproduced here on the old or the new code — this
    holds the promise at three budget levels, with the client asking again at once)."""
    import websockets
    from test_session_limits import AUTH, FakeSessions, gateway_config, parse_settings, \
        start_gateway, url
    from test_session_limits import RT
    async with FakeSessions() as fake_rt:
        data = gateway_config(fake_rt.url, tmp_path, {
            "pricing": {"models": {"gpt-realtime": RT}},
            "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"}],
            "tenants": {"acme": {"daily_usd": limit}}})
        gw = await start_gateway(parse_settings(data))
        try:
            events = []
            async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
                await ws.recv()
                ask = json.dumps({"type": "response.create", "response": {"max_output_tokens": 70}})
                await ws.send(ask)
                try:
                    while True:
                        events.append(json.loads(await ws.recv()))
                        if events[-1]["type"] == "response.done":
                            await ws.send(ask)
                except websockets.ConnectionClosed:
                    pass
        finally:
            await gw.stop()
    assert ws.close_code == 1008
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "budget_exceeded"
