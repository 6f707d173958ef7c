"""Realtime and Live sessions through faregate, with the official SDK.

Each test asserts what a user sees: the session behaves as direct, every
`response.done` and every Live usage increase is charged exactly once, and
the session row has the right totals.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from decimal import Decimal

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import gateway_config, start_gateway
from fake_sessions import AUDIO_DELTAS, REPLY, FakeSessions
from faregate.proxy import parse_settings

M = Decimal(1_000_000)
RT_PRICES = {"input": "4", "cached_input": "0.4", "output": "16", "audio_input": "32",
             "cached_audio_input": "0.4", "audio_output": "64"}
REPLY_WORDS = len(REPLY.split())


@pytest.fixture
async def fake():
    async with FakeSessions() as f:
        yield f


@pytest.fixture
async def rt_gateway(fake, tmp_path):
    gateways = []

    async def make(extra: dict | None = None):
        config = gateway_config(fake.url, tmp_path, {
            "pricing": {"models": {"gpt-realtime": RT_PRICES}}, **(extra or {})},
            db=f"rt-{len(gateways)}.db")
        config["server"]["cancel_grace_s"] = 2.0
        config["server"]["shutdown_grace_s"] = 0.5
        gw = await start_gateway(parse_settings(config))
        gateways.append(gw)
        return gw

    yield make
    for gw in gateways:
        await gw.stop()


def ws_url(gw, path: str = "/v1/realtime?model=gpt-realtime") -> str:
    return gw.url.replace("http://", "ws://") + path


async def until(conn, event_type: str, seen: list | None = None):
    async for event in conn:
        if seen is not None:
            seen.append(event.type)
        if event.type == event_type:
            return event
    raise AssertionError(f"connection ended before {event_type}")


async def text_turn(conn, text: str):
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await until(conn, "response.done")


async def live_session(gw, updates: int):
    """A Live session of `updates` audio appends, each answered by a usage update;
    returns the `session.closed` event."""
    async with gw.client().live.connect() as conn:
        await conn.send({"type": "session.start", "session": {"model": "gpt-live-1"}})
        await until(conn, "session.started")
        for _ in range(updates):
            await conn.send({"type": "session.input_audio.append",
                             "audio": base64.b64encode(b"\0" * 960).decode()})
            await until(conn, "session.usage.updated")
        await conn.send({"type": "session.close"})
        return await until(conn, "session.closed")


async def sessions_of(gw, n: int = 1, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await gw.state.ledger.flush()
        rows = await gw.state.ledger.sessions(limit=1000)
        if len(rows) >= n or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.02)


async def test_text_turn_charged_exactly_and_session_recorded(rt_gateway, fake):
    gw = await rt_gateway()
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        done = await text_turn(conn, "hello there friend")
    assert done.response.usage.input_tokens == 13
    assert fake.sessions[0].key == "sk-test-client"

    [session] = await sessions_of(gw)
    [charge] = await gw.ledger_rows(1)
    expected = (13 * Decimal(4) + REPLY_WORDS * Decimal(16)) / M
    assert Decimal(charge.cost_nanos).scaleb(-9) == expected
    assert (charge.session_id, charge.response_id) == (session.id, done.response.id)
    assert charge.endpoint == "/v1/realtime" and charge.model == "gpt-realtime"
    assert session.responses == 1 and session.end_reason == "client_closed"
    assert session.cost_nanos == charge.cost_nanos
    assert session.tokens["input"] == 13 and session.tokens["output"] == REPLY_WORDS
    assert session.upstream_session_id.startswith("sess_")
    assert session.ended_at > session.started_at
    text = await gw.metrics_text()
    assert 'faregate_realtime_sessions_active{tenant="default"} 0.0' in text
    assert 'faregate_realtime_session_duration_seconds_count{model="gpt-realtime"} 1.0' in text


async def test_audio_turns_with_cached_tokens(rt_gateway):
    gw = await rt_gateway()
    second_of_audio = base64.b64encode(b"\0" * 48_000).decode()
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        await conn.input_audio_buffer.append(audio=second_of_audio)
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        deltas: list = []
        first = await until(conn, "response.done", deltas)
        assert deltas.count("response.output_audio.delta") == AUDIO_DELTAS
        await conn.response.create()
        second = await until(conn, "response.done")
    u1, u2 = first.response.usage, second.response.usage
    assert u1.input_token_details.audio_tokens == 10
    assert u2.input_token_details.cached_tokens == 5 + 5  # half of text 10, half of audio 10

    rows = {r.response_id: r for r in await gw.ledger_rows(2)}
    out_audio = AUDIO_DELTAS * 20
    out_text = REPLY_WORDS * Decimal(16)  # the transcript of the spoken reply
    cost1 = (10 * Decimal(4) + 10 * Decimal(32) + out_audio * Decimal(64) + out_text) / M
    cost2 = (5 * Decimal(4) + 5 * Decimal("0.4") + 5 * Decimal(32) + 5 * Decimal("0.4")
             + out_audio * Decimal(64) + out_text) / M
    assert Decimal(rows[first.response.id].cost_nanos).scaleb(-9) == cost1
    assert Decimal(rows[second.response.id].cost_nanos).scaleb(-9) == cost2
    [session] = await sessions_of(gw)
    assert session.responses == 2
    assert Decimal(session.cost_nanos).scaleb(-9) == cost1 + cost2
    assert session.tokens["cached_audio_input"] == 5 and session.tokens["audio_output"] == 2 * out_audio


async def test_browser_subprotocol_auth_and_keys_mode_swap(rt_gateway, fake, monkeypatch):
    monkeypatch.setenv("FG_RT_UPSTREAM", "sk-real-upstream")
    gw = await rt_gateway({
        "server": {"upstream_api_key_env": "FG_RT_UPSTREAM"},
        "identity": {"mode": "keys"},
        "keys": [{"sha256": hashlib.sha256(b"fg-browser").hexdigest(), "tenant": "acme"}],
    })
    async with websockets.connect(
        ws_url(gw), subprotocols=["realtime", "openai-insecure-api-key.fg-browser"]
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert '"session.created"' in await ws.recv()
    seen = fake.sessions[-1]
    assert seen.key == "sk-real-upstream" and "fg-browser" not in str(seen.headers)
    assert "authorization" not in seen.headers  # the browser form stays the browser form

    async with gw.client("fg-browser").realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
    assert fake.sessions[-1].headers["authorization"] == "Bearer sk-real-upstream"

    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            ws_url(gw), subprotocols=["realtime", "openai-insecure-api-key.fg-nobody"]):
            pass
    assert info.value.response.status_code == 401
    assert len(fake.sessions) == 2


async def test_upstream_refusal_is_relayed_as_is(rt_gateway, fake):
    gw = await rt_gateway()
    body = {"error": {"message": "model not found", "type": "invalid_request_error",
                      "param": None, "code": "model_not_found"}}
    fake.refuse_next = (404, body)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(ws_url(gw), additional_headers={
                "Authorization": "Bearer sk-x"}):
            pass
    assert info.value.response.status_code == 404
    import json
    assert json.loads(info.value.response.body) == body


async def test_upstream_unreachable_is_502_on_the_upgrade(tmp_path):
    gw = await start_gateway(parse_settings(gateway_config("http://127.0.0.1:9", tmp_path)))
    try:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(gw), additional_headers={
                    "Authorization": "Bearer sk-x"}):
                pass
        assert info.value.response.status_code == 502
        assert b"upstream_unavailable" in info.value.response.body
    finally:
        await gw.stop()


async def test_upstream_close_code_and_reason_reach_the_client(rt_gateway, fake):
    gw = await rt_gateway()
    fake.close_after_response = (4000, "session expired")
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-x"}) as ws:
        await ws.send('{"type":"response.create"}')
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4000, "session expired")
    [session] = await sessions_of(gw)
    assert session.end_reason == "upstream_closed" and session.responses == 1


async def test_client_disconnect_mid_response_still_records_usage(rt_gateway, fake):
    gw = await rt_gateway()
    fake.delta_delay_s = 0.3
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-x"}) as ws:
        await ws.send('{"type":"response.create"}')
        while '"response.output_audio.delta"' not in await ws.recv():
            pass
    # The client is gone; faregate cancels upstream and waits for response.done.
    [session] = await sessions_of(gw)
    assert fake.sessions[0].cancelled == 1
    assert session.end_reason == "client_closed" and session.responses == 1
    [charge] = await gw.ledger_rows(1)
    assert not charge.estimated and charge.cost_nanos > 0
    assert charge.tokens["audio_output"] in (20, 40)  # deltas before the cancel landed


async def test_missing_usage_is_estimated_and_flagged(rt_gateway, fake):
    gw = await rt_gateway()
    fake.omit_usage = True
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        await conn.response.create()
        await until(conn, "response.done")
    [charge] = await gw.ledger_rows(1)
    assert charge.estimated and "usage_missing" in charge.flags
    assert charge.tokens["audio_output"] > 0 and charge.cost_nanos > 0


async def test_live_cumulative_usage_charged_once(rt_gateway, fake):
    gw = await rt_gateway()
    closed = await live_session(gw, 3)
    assert closed.usage.seconds == 4.5
    [session] = await sessions_of(gw)
    assert session.endpoint == "/v1/live/sessions" and session.model == "gpt-live-1"
    assert session.seconds == Decimal("4.5")  # not 1.5 + 3 + 4.5 + 4.5
    assert Decimal(session.cost_nanos).scaleb(-9) == Decimal("4.5") / 60 * Decimal("0.05")
    rows = await gw.ledger_rows(3)
    assert sorted(r.seconds for r in rows) == [Decimal("1.5")] * 3
    assert 'faregate_billed_seconds_total{model="gpt-live-1",tenant="default"} 4.5' in (
        await gw.metrics_text())


async def test_ephemeral_key_session_attributed_to_minting_tenant(rt_gateway, fake):
    gw = await rt_gateway({"keys": [
        {"sha256": hashlib.sha256(b"sk-acme-backend").hexdigest(), "tenant": "acme"}]})
    secret = await gw.client("sk-acme-backend").realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"})
    assert secret.value.startswith("ek_")
    async with websockets.connect(
        ws_url(gw), subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"]
    ) as ws:
        await ws.recv()
    sessions = await sessions_of(gw, 2)  # the mint's row (media unseen) and the socket's
    [session] = [s for s in sessions if s.endpoint == "/v1/realtime"]
    assert session.tenant == "acme"
    assert fake.sessions[-1].key == secret.value


async def test_200_concurrent_sessions_have_their_own_totals(rt_gateway):
    gw = await rt_gateway()

    async def one(i: int) -> str:
        async with websockets.connect(ws_url(gw), additional_headers={
                "Authorization": "Bearer sk-x"}, max_size=None) as ws:
            await ws.recv()  # session.created
            await ws.send('{"type":"session.update","session":{"output_modalities":["text"]}}')
            words = " ".join(["w"] * (i % 17))
            await ws.send('{"type":"conversation.item.create","item":{"type":"message",'
                          f'"role":"user","content":[{{"type":"input_text","text":"{words}"}}]}}}}')
            await ws.send('{"type":"response.create"}')
            while '"response.done"' not in await ws.recv():
                pass
            return words

    sent = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)
    sessions = await sessions_of(gw, 200, timeout=15)
    assert len(sessions) == 200
    expected = sorted((10 + len(w.split())) * 4 + REPLY_WORDS * 16 for w in sent)
    got = sorted(s.cost_nanos // 1000 for s in sessions)  # micro-USD: (tokens x $/1M)
    assert got == expected
    assert all(s.responses == 1 for s in sessions)


async def test_shutdown_closes_open_sessions_with_a_reason(rt_gateway):
    gw = await rt_gateway()
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-x"}) as ws:
        await ws.recv()
        await gw.runner.cleanup()  # SIGTERM path: shutdown, drain, close
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1001, "faregate is shutting down")
    from faregate.storage import Ledger

    ledger = await Ledger.open(gw.state.runtime.settings.storage.url)
    try:
        [session] = await ledger.sessions()
    finally:
        await ledger.close()
    assert session.end_reason == "shutdown"


async def test_plain_http_get_on_realtime_path_is_forwarded(rt_gateway):
    gw = await rt_gateway()
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/v1/realtime", headers={"Authorization": "Bearer x"}) as r:
            assert r.status in (400, 404, 405)  # the upstream's answer, not a crash


async def test_client_close_code_reaches_upstream_and_binary_frames_keep_order(rt_gateway, fake):
    gw = await rt_gateway()
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-x"}) as ws:
        await ws.recv()  # session.created
        frames = [bytes([i]) * (i + 1) for i in range(50)]
        for f in frames:
            await ws.send(f)
        echoed = [await ws.recv() for _ in frames]
        assert echoed == [f[::-1] for f in frames]
        await ws.close(4001, "user hung up")
    for _ in range(100):
        if fake.sessions[0].close_code is not None:
            break
        await asyncio.sleep(0.02)
    assert fake.sessions[0].close_code == 4001


async def test_oversized_frame_closes_with_1009(rt_gateway, fake):
    gw = await rt_gateway({"server": {"max_ws_frame_bytes": 1024}})
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-x"}, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * 4096)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009
    [session] = await sessions_of(gw)
    assert session.end_reason in ("client_closed", "error")


async def test_sessions_cut_off_by_a_crash_are_rebuilt_at_start(tmp_path, fake):
    from datetime import datetime, timedelta, timezone

    from faregate.storage import Ledger, LedgerRecord

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    ledger = await Ledger.open(url)
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    for i in range(3):  # three responses charged, then the process died: no session row
        ledger.record(LedgerRecord(
            tenant="acme", model="gpt-realtime", endpoint="/v1/realtime", status=200,
            cost_nanos=1000 * (i + 1), ts=t0 + timedelta(seconds=10 * i),
            tokens={"input": 10, "audio_output": 20}, session_id="fgs_dead",
            response_id=f"resp_{i}"))
    await ledger.close()
    config = gateway_config(fake.url, tmp_path)
    config["storage"]["url"] = url
    gw = await start_gateway(parse_settings(config))
    try:
        [session] = await gw.state.ledger.sessions()
    finally:
        await gw.stop()
    assert (session.id, session.tenant, session.end_reason) == ("fgs_dead", "acme", "interrupted")
    assert session.responses == 3 and session.cost_nanos == 6000
    assert session.tokens["audio_output"] == 60
    assert session.ended_at - session.started_at == timedelta(seconds=20)
