"""Fault suite: an upstream, a client or the machine misbehaves; faregate keeps its promises.

Every test names the fault and checks the same invariants: faregate does not
crash (a normal call afterwards still works), it loses and duplicates no
charge (exactly one ledger row per forwarded call), it never charges a
negative amount, the reservation held for the call is released, and memory
stays bounded. The database disappearing is in test_durability.py; oversized
bodies and frames in test_rest.py / test_realtime.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone

import aiohttp
import openai
import pytest
from aiohttp import web

from test_budgets import cfg

HELLO = [{"role": "user", "content": "one two three"}]


def chunk(i: int) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": f"word{i} "}}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def reserved(gw) -> int:
    """Money still held for calls in flight, summed over every budget counter."""
    now = datetime.now(timezone.utc)
    return sum(c.reserved for period in ("day", "month")
               if (c := gw.state.quota.book.peek("tenant:acme", period, now)) is not None)


async def still_serves(gw, client) -> None:
    """A normal call (on an endpoint no test here breaks) still goes through."""
    reply = await client.embeddings.create(model="text-embedding-3-small", input="still up")
    assert reply.data[0].embedding


@pytest.fixture
async def acme(make_gateway):
    """A gateway with a budgeted tenant (so reservations exist) and its SDK client."""
    async def make(server: dict | None = None):
        extra = cfg({"daily_usd": "100"})
        if server:
            extra["server"] = server
        gw = await make_gateway(extra)
        return gw, gw.client("sk-acme")
    return make


async def test_upstream_resets_mid_json(acme, upstream):
    """Fault: the upstream sends half a JSON body and drops the connection.
    Invariant: the client sees an error, one estimated charge, reservation released."""
    async def half_json(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [')
        request.transport.close()
        return resp

    gw, client = await acme()
    upstream.add_route("POST", "/v1/chat/completions", half_json)
    with pytest.raises((openai.APIConnectionError, openai.APIError)):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "cut_short" in row.flags and row.cost_nanos >= 0
    assert reserved(gw) == 0
    await still_serves(gw, client)
    assert len(await gw.ledger_rows(2)) == 2


async def test_upstream_resets_mid_sse(acme, upstream):
    """Fault: the upstream streams three deltas then drops the connection.
    Invariant: one estimated charge priced from what was streamed; nothing held."""
    async def cut_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(chunk(i))
        request.transport.close()
        return resp

    gw, client = await acme()
    upstream.add_route("POST", "/v1/chat/completions", cut_stream)
    got = []
    with pytest.raises((openai.APIConnectionError, openai.APIError, aiohttp.ClientError)):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True)
        async for event in stream:
            got.append(event)
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "cut_short" in row.flags
    assert row.tokens["output"] == 3 and row.cost_nanos > 0  # one token per streamed delta
    assert reserved(gw) == 0


async def test_upstream_hangs_mid_body_is_cut_after_idle_timeout(acme, upstream):
    """Fault: headers and one chunk, then silence. Invariant: faregate gives up after
    [server] idle_timeout_s (not the client's patience), records the charge, frees the hold."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk(0))
        await asyncio.wait_for(release.wait(), 30)
        return resp

    gw, client = await acme({"idle_timeout_s": 0.3})
    upstream.add_route("POST", "/v1/chat/completions", stall)
    started = time.monotonic()
    with pytest.raises((openai.APIConnectionError, openai.APIError, aiohttp.ClientError)):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True)
        async for _ in stream:
            pass
    assert time.monotonic() - started < 5
    release.set()
    [row] = await gw.ledger_rows(1)
    assert "cut_short" in row.flags and reserved(gw) == 0


BAD_USAGE = [
    # counts that cannot be true: charged at the reservation (tests/test_implausible.py)
    ({"prompt_tokens": -5, "completion_tokens": 3}, "usage_implausible"),
    ({"prompt_tokens": 10**15, "completion_tokens": 1}, "usage_implausible"),
    ({"prompt_tokens": "many", "completion_tokens": 2}, "usage_implausible"),
    ({"prompt_tokens": 4, "prompt_tokens_details": [1, 2]}, "usage_implausible"),
    ({"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 9}}, "usage_malformed"),
    ("usage", "usage_missing"),  # not an object: estimated from the body, flagged
    (None, "usage_missing"),
]


@pytest.mark.parametrize("usage,flag", BAD_USAGE, ids=[str(u)[:30] for u, _ in BAD_USAGE])
async def test_absurd_usage_is_flagged_and_counted_never_a_crash(acme, upstream, usage, flag):
    """Fault: the upstream reports negative, huge, mistyped or no usage.
    Invariant: the client gets the body untouched, the charge is ≥ 0 and flagged,
    and faregate_usage_problems_total counts it."""
    async def odd(request: web.Request) -> web.Response:
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini", "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}]})

    gw, client = await acme()
    upstream.add_route("POST", "/v1/chat/completions", odd)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO)
    assert json.loads(raw.text)["usage"] == usage
    [row] = await gw.ledger_rows(1)
    assert flag in row.flags and row.cost_nanos >= 0
    assert row.cost_nanos <= 10**15 * 600  # clamped: at most MAX_COUNT tokens at the output rate
    metrics = await gw.metrics_text()
    assert f'faregate_usage_problems_total{{endpoint="/v1/chat/completions",problem="{flag}"}}' \
        in metrics
    assert reserved(gw) == 0


async def test_client_walking_away_stops_the_upstream_read_promptly(acme, upstream):
    """Fault: the client closes mid-stream while the upstream would stream for a minute.
    Invariant: faregate drops the upstream within its cancel grace, records an estimate."""
    stopped = asyncio.get_running_loop().create_future()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(600):
                await resp.write(chunk(i))
                await asyncio.sleep(0.1)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            if not stopped.done():
                stopped.set_result(time.monotonic())
        return resp

    gw, client = await acme({"cancel_grace_s": 0.5})
    upstream.add_route("POST", "/v1/chat/completions", endless)
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    async for _ in stream:
        break
    left = time.monotonic()
    await stream.close()
    ended = await asyncio.wait_for(stopped, 10)
    assert ended - left < 3
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "cut_short" in row.flags and reserved(gw) == 0


async def test_slow_reading_client_keeps_faregate_memory_bounded(acme, upstream):
    """Fault: the upstream sends 64 MiB as fast as it can; the client does not read.
    Invariant: back-pressure reaches the upstream: it cannot push more than the socket
    buffers hold (faregate never buffers the body)."""
    written = [0]
    total = 64 * 1024 * 1024

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.content_length = total
        await resp.prepare(request)
        block = b"x" * 65536
        try:
            while written[0] < total:
                await resp.write(block)
                written[0] += len(block)
        except ConnectionError:
            pass
        return resp

    gw, _ = await acme()
    upstream.add_route("GET", "/v1/files/big/content", flood)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v1/files/big/content HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer sk-acme\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(1.5)  # the client reads nothing
    assert written[0] < total // 4, f"{written[0]} bytes pushed with nobody reading"
    writer.close()


async def test_ten_times_the_rate_limit_in_one_burst_gives_clean_429s(make_gateway, upstream):
    """Fault: 100 concurrent calls against rpm = 10. Invariant: at most 10 pass, every other
    one is a 429 in the OpenAI shape with Retry-After; no 5xx; nothing refused is charged."""
    gw = await make_gateway(cfg({"rpm": 10}))
    client = gw.client("sk-acme", max_retries=0)

    async def one():
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            return 200, None
        except openai.APIStatusError as exc:
            return exc.status_code, exc

    results = await asyncio.gather(*(one() for _ in range(100)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 429} and 0 < codes.count(200) <= 10
    for code, exc in results:
        if code == 429:
            assert exc.body["type"] in ("requests", "rate_limit_exceeded", "insufficient_quota") \
                or exc.body.get("code")
            assert int(exc.response.headers["retry-after"]) >= 1
    rows = await gw.ledger_rows(codes.count(200))
    assert len(rows) == codes.count(200)  # refused calls were never forwarded nor charged
    assert len(upstream.requests) == codes.count(200)


FD_SERVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
from faregate.proxy.cli import main
sys.exit(main(["serve", "--config", sys.argv[1]]))
"""


async def test_file_descriptor_pressure_refuses_connections_but_survives(upstream, tmp_path):
    """Fault: faregate runs with 96 file descriptors and gets 300 connections at once.
    Invariant: the process stays up, and once the flood ends a normal call succeeds and
    is charged."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "f.toml"
    config.write_text(
        f'[server]\nupstream = "{upstream.url}"\nlisten = "127.0.0.1:{port}"\n'
        'shutdown_grace_s = 1.0\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "l.db"}"\njournal_dir = "{tmp_path / "j"}"\n')
    log = open(tmp_path / "stderr.log", "wb")  # a pipe nobody reads would block the server
    proc = subprocess.Popen([sys.executable, "-c", FD_SERVER, str(config)],
                            stdout=subprocess.DEVNULL, stderr=log,
                            env={**os.environ, "FAREGATE_LOG_LEVEL": "ERROR"})
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            assert soft >= 1024, "the test process itself needs descriptors for the flood"
            async def connect():
                try:
                    return (await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), 2))[1]
                except (OSError, asyncio.TimeoutError):
                    return None

            socks = [w for w in await asyncio.gather(*(connect() for _ in range(300))) if w]
            await asyncio.sleep(0.5)
            for w in socks:
                w.close()
            await asyncio.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
            client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=3)
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            assert reply.usage.total_tokens > 0
            await client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
    import sqlite3

    con = sqlite3.connect(tmp_path / "l.db")
    assert con.execute("SELECT COUNT(*) FROM charges").fetchone()[0] == 1
    con.close()


async def test_realtime_upstream_reset_mid_response(make_gateway, upstream):
    """Fault: the Realtime upstream drops the TCP connection during a response.
    Invariant: the client's socket is closed with an error code, the session row is
    written and the response in flight is charged once, as an estimate."""
    import websockets

    async def dies(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("realtime",))
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "session.created", "session": {
            "id": "sess_1", "object": "realtime.session", "model": "gpt-realtime"}}))
        async for msg in ws:
            if json.loads(msg.data).get("type") == "response.create":
                await ws.send_str(json.dumps({"type": "response.created", "response": {
                    "id": "resp_1", "object": "realtime.response", "status": "in_progress"}}))
                await ws.send_str(json.dumps({
                    "type": "response.output_text.delta", "response_id": "resp_1",
                    "item_id": "i", "output_index": 0, "content_index": 0, "delta": "partial"}))
                request.transport.close()
                break
        return ws

    upstream.add_route("GET", "/v1/realtime", dies)
    gw = await make_gateway({**cfg({"daily_usd": "100"}), "server": {"cancel_grace_s": 0.2}})
    url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-acme"}) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "response.create"}))
        with pytest.raises(websockets.ConnectionClosed) as info:
            for _ in range(10):
                await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is None or info.value.rcvd.code != 1000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await gw.state.ledger.flush()
        sessions = await gw.state.ledger.sessions()
        if sessions:
            break
        await asyncio.sleep(0.05)
    [session] = sessions
    charges = [r for r in await gw.ledger_rows(1) if r.session_id == session.id]
    assert len(charges) == 1 and charges[0].estimated and charges[0].cost_nanos >= 0
    assert reserved(gw) == 0
    await still_serves(gw, gw.client("sk-acme"))


async def test_upstream_that_never_accepts_the_connection_is_a_504(make_gateway, tmp_path):
    """Fault: the upstream's accept queue is full, so the TCP connect hangs.
    Invariant: faregate gives up after [server] connect_timeout_s with a 504 in the OpenAI
    shape; nothing is charged."""
    import socket

    from conftest import gateway_config, start_gateway
    from faregate.proxy import parse_settings

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue; later SYNs are dropped and connect hangs
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    await asyncio.sleep(0.2)
    config = gateway_config(f"http://127.0.0.1:{port}", tmp_path)
    config["server"]["connect_timeout_s"] = 0.5
    gw = await start_gateway(parse_settings(config))
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert (info.value.status_code, info.value.body["code"]) == (504, "upstream_timeout")
        assert time.monotonic() - started < 5
        rows = await gw.ledger_rows(1)
        assert all(r.cost_nanos == 0 for r in rows)
    finally:
        await gw.stop()
        for s in fillers:
            s.close()
        server.close()
