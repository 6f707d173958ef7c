"""Limits inside Realtime sessions: at the upgrade and mid-session."""

from __future__ import annotations

import asyncio
import hashlib
import json
from decimal import Decimal

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import gateway_config, start_gateway
from fake_sessions import FakeSessions
from test_realtime import sessions_of
from faregate.proxy import parse_settings

RT = {"input": "4", "cached_input": "0.4", "output": "16", "audio_input": "32",
      "cached_audio_input": "0.4", "audio_output": "64"}
AUTH = {"Authorization": "Bearer sk-acme"}


@pytest.fixture
async def fake():
    async with FakeSessions() as f:
        yield f


@pytest.fixture
async def limited(fake, tmp_path):
    started = []

    async def make(tenant: dict, **extra):
        data = gateway_config(fake.url, tmp_path, {
            "pricing": {"models": {"gpt-realtime": RT}},
            "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"}],
            "tenants": {"acme": tenant}, **extra}, db=f"l{len(started)}.db")
        data["server"]["cancel_grace_s"] = 2.0
        gw = await start_gateway(parse_settings(data))
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


def url(gw, model: str = "gpt-realtime") -> str:
    return gw.url.replace("http://", "ws://") + f"/v1/realtime?model={model}"


async def events_until_close(ws) -> list[dict]:
    out = []
    with pytest.raises(ConnectionClosed):
        while True:
            out.append(json.loads(await ws.recv()))
    return out


async def test_concurrency_cap_at_the_upgrade(limited):
    gw = await limited({"max_concurrent_sessions": 1})
    async with websockets.connect(url(gw), additional_headers=AUTH) as first:
        await first.recv()
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url(gw), additional_headers=AUTH):
                pass
        assert info.value.response.status_code == 429
        assert json.loads(info.value.response.body)["error"]["code"] == \
            "concurrent_sessions_exceeded"
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.response.headers["x-faregate-request-id"].startswith("fg_")
    await asyncio.sleep(0.1)
    async with websockets.connect(url(gw), additional_headers=AUTH) as again:
        await again.recv()  # the slot is free again


async def test_model_allowlist_at_upgrade_and_on_session_update(limited, fake):
    gw = await limited({"models": ["gpt-realtime"]})
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(gw, "gpt-4o-realtime-preview"), additional_headers=AUTH):
            pass
    assert info.value.response.status_code == 403
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update",
                                  "session": {"model": "gpt-4o-realtime-preview"}}))
        events = await events_until_close(ws)
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["code"] == "model_not_allowed"
        assert ws.close_code == 1008
    assert "session.update" not in fake.sessions[-1].types()  # never reached the upstream


async def test_session_time_limit(limited):
    gw = await limited({"max_session_seconds": 1})
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        events = await asyncio.wait_for(events_until_close(ws), 5)
        assert events[-1]["error"]["code"] == "session_time_limit"
        assert ws.close_code == 1008
    rows = await sessions_of(gw)
    assert rows[0].end_reason == "time_limit"


@pytest.mark.parametrize("extra, dearest", [
    ({}, 64),  # audio output at $64/M: ~140 tokens
    ({"image_output": "128"}, 128),  # image output dearer still: ~70 tokens
])
async def test_response_clamped_to_what_the_budget_can_pay(limited, fake, extra, dearest):
    # $0.01 pays for the 256-token input allowance at $4/M ($0.001024) and what the rest
    # buys at the dearest output class — not for the 100,000 asked.
    prices = {"models": {"gpt-realtime": {**RT, **extra}}}
    gw = await limited({"daily_usd": "0.01"}, pricing=prices)
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"max_output_tokens": 100000}}))
        while '"response.done"' not in await ws.recv():
            pass
    sent = [e for e in fake.sessions[0].events if e["type"] == "response.create"][0]
    clamped = sent["response"]["max_output_tokens"]
    assert 16 <= clamped < 100000
    assert (256 * 4 + clamped * dearest) / Decimal(1_000_000) <= Decimal("0.01")


async def test_mid_session_budget_cut_after_the_response_settles(limited, fake):
    # One audio response costs 60 audio tokens x $64/M + 5 x $16/M + 10 x $4/M = $0.00396;
    # its reservation is clamped to fit $0.0039, and the real charge then reaches the limit.
    gw = await limited({"daily_usd": "0.0039"})
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"max_output_tokens": 70}}))
        events = await events_until_close(ws)
    types = [e["type"] for e in events]
    assert "response.done" in types and types[-1] == "error"
    assert types.index("response.done") < len(types) - 1  # settled first, then cut
    assert events[-1]["error"]["code"] == "budget_exceeded"
    assert events[-1]["error"]["message"] == (  # in dollars for people (issue 24, item 15)
        "The daily budget of $0.0039 for tenant acme is used up ($0.00396 spent or "
        "reserved). It resets at the start of the next UTC day.")
    assert ws.close_code == 1008
    # A new session for the spent tenant is refused at the upgrade.
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(gw), additional_headers=AUTH):
            pass
    assert info.value.response.status_code == 429
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.response.headers["x-faregate-request-id"].startswith("fg_")


async def test_degrade_to_text_once_most_of_the_budget_is_used(limited, fake):
    gw = await limited({"daily_usd": "1", "degrade_to_text_at": "0.5"})
    now_spend = gw.state.quota  # pre-spend 60 % of the day's budget
    from datetime import datetime, timezone

    policy = gw.state.runtime.policy(gw.state.runtime.directory.identify(
        "sk-acme", {}, None))
    now_spend.spend(policy, int(Decimal("0.6") * 10**9), datetime.now(timezone.utc))
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "response.create"}))
        received = []
        while '"response.done"' not in (frame := await ws.recv()):
            received.append(json.loads(frame)["type"])
    sent = [e for e in fake.sessions[0].events if e["type"] == "response.create"][0]
    assert sent["response"]["output_modalities"] == ["text"]
    # The answer the client got is text only: no audio reached it.
    assert "response.output_text.delta" in received
    assert "response.output_audio.delta" not in received


async def test_tool_call_cap_refuses_the_next_response(limited, fake):
    fake.tool_calls_per_response = 1
    gw = await limited({"max_tool_calls_per_session": 2})
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()  # session.created
        for _ in range(2):  # each answer calls one function: 2 calls, the cap
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await ws.recv())["type"] != "response.done":
                pass
        await ws.send(json.dumps({"type": "response.create"}))
        events = await asyncio.wait_for(events_until_close(ws), 5)
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["code"] == "tool_call_limit"
        assert ws.close_code == 1008
    assert fake.sessions[-1].types().count("response.create") == 2  # the third never left
    rows = await sessions_of(gw)
    assert rows[0].end_reason == "tool_call_limit" and rows[0].tool_calls == 2
    text = gw.state.metrics.render().decode()
    assert 'faregate_tool_calls_total{tenant="acme"} 2.0' in text
    assert 'faregate_quota_rejections_total{reason="tool_calls",tenant="acme"} 1.0' in text


async def test_tool_calls_are_counted_without_a_cap(limited, fake):
    fake.tool_calls_per_response = 3
    gw = await limited({})
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        for _ in range(2):
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await ws.recv())["type"] != "response.done":
                pass
    rows = await sessions_of(gw)
    assert rows[0].tool_calls == 6 and rows[0].end_reason == "client_closed"
