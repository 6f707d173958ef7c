"""The security model (RELIABILITY.md): each test is an attack and the promise it must not break.

Admin-token basics (off without a token, 401s, never from a URL) are in
test_admin.py; keys-mode basics (unknown key never forwarded) in test_identity.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import openai
import pytest
import websockets
from aiohttp import web

from test_identity import HELLO, TEAM_KEY, sha

OTHER_KEY = "fg-team-billing-0002"
REAL_KEY = "sk-real-upstream-SECRET-4242"
ADMIN = "admin-token-xyz"


@pytest.fixture
async def keys_gw(make_gateway, monkeypatch):
    monkeypatch.setenv("FG_SEC_UPSTREAM", REAL_KEY)
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", ADMIN)
    return await make_gateway({
        "server": {"upstream_api_key_env": "FG_SEC_UPSTREAM"},
        "identity": {"mode": "keys", "allow_header_identity": True},
        "keys": [{"sha256": sha(TEAM_KEY), "tenant": "search"},
                 {"sha256": sha(OTHER_KEY), "tenant": "billing"}],
    })


async def admin_get(gw, path: str, token: str | None = ADMIN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + path, headers=headers) as r:
            return r.status, await r.text()


async def raw_exchange(gw, data: bytes, read_s: float = 2.0) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), read_s):
            out += chunk
    except asyncio.TimeoutError:
        pass
    writer.close()
    return out


async def test_a_tenant_key_is_not_an_admin_token(keys_gw):
    """Attack: a tenant presents its own faregate key to the admin API.
    Promise: admin is operator-only; 401 on every admin endpoint and the dashboard data."""
    for path in ("/admin/usage", "/admin/usage/logs", "/admin/budgets", "/admin/sessions",
                 "/admin/alerts"):
        for key in (TEAM_KEY, OTHER_KEY, REAL_KEY):
            status, _ = await admin_get(keys_gw, path, key)
            assert status == 401, (path, key)


async def test_tenant_headers_cannot_move_spend_to_another_tenant(keys_gw):
    """Attack: in keys mode, tenant `search` sends `x-faregate-tenant: billing`.
    Promise: the key decides the tenant; billing's usage stays empty."""
    client = keys_gw.client(TEAM_KEY)
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                         extra_headers={"x-faregate-tenant": "billing"})
    [row] = await keys_gw.ledger_rows(1)
    assert row.tenant == "search"
    status, text = await admin_get(keys_gw, "/admin/usage?group_by=tenant")
    tenants = [r["tenant"] for r in json.loads(text)["rows"]]
    assert status == 200 and tenants == ["search"]


async def test_the_upstream_key_never_leaks(keys_gw, upstream, caplog):
    """Attack: look for the real upstream key (or a caller's key, or the admin token)
    anywhere a caller or an operator can see.
    Promise: not in responses, errors, logs, metrics, admin API or ledger rows."""
    caplog.set_level(logging.DEBUG)
    client = keys_gw.client(TEAM_KEY)
    seen: list[str] = []
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                 messages=HELLO)
    seen += [raw.text, json.dumps(dict(raw.headers))]
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                  stream=True)
    async for event in stream:
        seen.append(event.model_dump_json())
    for status in (401, 500):
        upstream.fail_next.append((status, {"error": {"message": "upstream says no",
                                                      "type": "server_error"}}))
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        seen += [info.value.response.text, json.dumps(dict(info.value.response.headers))]
    async with aiohttp.ClientSession() as s:  # a 413 faregate produces itself
        async with s.post(keys_gw.url + "/v1/chat/completions", data=b"x" * 30_000_000,
                          headers={"Authorization": f"Bearer {TEAM_KEY}"}) as r:
            seen.append(await r.text())
    assert upstream.requests[0].api_key == REAL_KEY  # it is used, upstream only
    for path in ("/admin/usage/logs?limit=100", "/admin/usage", "/admin/sessions"):
        seen.append((await admin_get(keys_gw, path))[1])
    seen.append(await keys_gw.metrics_text())
    seen += [repr(r) for r in await keys_gw.ledger_rows(4)]
    seen += [r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records]
    leaks = [s for s in seen if REAL_KEY in s or TEAM_KEY in s or ADMIN in s]
    assert leaks == []


def test_faregate_keys_are_held_only_as_digests(keys_gw):
    """Attack: read the process's key directory (a heap dump, a debugger).
    Promise: faregate keys are stored as SHA-256 digests, never as plaintext."""
    directory = keys_gw.state.runtime.directory
    dumped = repr(vars(directory) if hasattr(directory, "__dict__") else directory)
    for slot in getattr(type(directory), "__slots__", ()):
        dumped += repr(getattr(directory, slot, None))
    assert TEAM_KEY not in dumped and OTHER_KEY not in dumped
    assert sha(TEAM_KEY) in dumped


@pytest.fixture
async def evil():
    """A server faregate must never talk to."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}", hits
    await runner.cleanup()


TARGETS = [
    "GET http://{evil}/v1/models HTTP/1.1\r\nHost: {evil}",
    "GET /v1/models HTTP/1.1\r\nHost: {evil}",
    "GET //{evil}/v1/models HTTP/1.1\r\nHost: x",
    "GET /v1/../../{evil}/v1/models HTTP/1.1\r\nHost: x",
    "GET /v1/%2e%2e/%2e%2e/admin/usage HTTP/1.1\r\nHost: x",
    "GET /v1/files%2F..%2F..%2Fadmin HTTP/1.1\r\nHost: x",
    "GET /v1/\\\\{evil}\\v1 HTTP/1.1\r\nHost: x",
    "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: {evil}",
    "GET /v1/%0AHost:%20{evil} HTTP/1.1\r\nHost: x",
]


@pytest.mark.parametrize("target", TARGETS, ids=range(len(TARGETS)))
async def test_requests_only_ever_reach_the_configured_upstream(gateway, upstream, evil, target):
    """Attack: absolute-form targets, Host tricks, `..` and encoded slashes.
    Promise: nothing reaches another host; what is forwarded goes to the upstream."""
    address, hits = evil
    head = target.format(evil=address)
    reply = await raw_exchange(gateway, (head + "\r\nAuthorization: Bearer sk-x\r\n"
                                         "Connection: close\r\n\r\n").encode())
    assert reply.startswith(b"HTTP/1.")
    assert hits == []
    for rec in upstream.requests:  # the upstream only ever sees paths under /v1/
        assert rec.path.startswith("/v1/"), rec.path
    if any(bad in head.encode() for bad in (b"%2", b"..", b"\\", b"%0A")):
        assert b" 400 " in reply.split(b"\r\n", 1)[0] and upstream.requests == []


SMUGGLES = [
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
    b"Content-Length: 5\r\nContent-Length: 60\r\n\r\n{}\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
    b"Content-Length: 2\r\n folded: header\r\n\r\n{}",
]


@pytest.mark.parametrize("attempt", SMUGGLES, ids=["cl+te", "two-cl", "te-list", "obs-fold"])
async def test_request_smuggling_is_refused(gateway, upstream, attempt):
    """Attack: conflicting Content-Length / Transfer-Encoding, obs-folded headers.
    Promise: a 400 (or a closed connection); the upstream never sees a smuggled request."""
    reply = await raw_exchange(gateway, attempt)
    assert reply == b"" or b" 400 " in reply.split(b"\r\n", 1)[0], reply[:200]
    assert all(rec.path != "/v1/models" for rec in upstream.requests)
    assert len(upstream.requests) == 0


async def test_browser_origins_are_checked_when_configured(make_gateway, upstream):
    """Attack: a page on another site opens a Realtime session with a user's key.
    Promise: with [server] allowed_origins set, other Origins get 403; listed ones pass."""
    from fake_sessions import FakeSessions

    sessions = FakeSessions()
    upstream.add_route("GET", "/v1/realtime", sessions.realtime)
    gw = await make_gateway({"server": {"allowed_origins": ["https://app.example"]}})
    url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    auth = {"Authorization": "Bearer sk-x"}
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=auth,
                                      origin="https://evil.example"):
            pass
    assert info.value.response.status_code == 403
    assert b"origin_not_allowed" in info.value.response.body
    async with websockets.connect(url, additional_headers=auth,
                                  origin="https://app.example") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    async with websockets.connect(url, additional_headers=auth) as ws:  # not a browser
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_gzip_request_bodies_are_forwarded_as_what_they_now_are(gateway, upstream):
    """Attack/accident: a gzip-encoded body. aiohttp decompresses it for faregate, so the
    upstream must get the plain bytes without the stale Content-Encoding/Length."""
    import gzip

    body = gzip.compress(json.dumps({"model": "text-embedding-3-small", "input": "a b"}).encode())
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.post(gateway.url + "/v1/embeddings", data=body, headers={
                "Authorization": "Bearer sk-x", "Content-Type": "application/json",
                "Content-Encoding": "gzip"}) as r:
            assert r.status == 200, await r.text()
    [rec] = upstream.requests
    assert rec.json == {"model": "text-embedding-3-small", "input": "a b"}
    assert "content-encoding" not in {k.lower() for k in rec.headers}


UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.mark.parametrize("path, extra", [("/admin/usage", ""), ("/v1/models", ""),
                                         ("/v1/realtime?model=gpt-realtime", UPGRADE)])
async def test_undecodable_credentials_are_a_401_not_a_crash(keys_gw, path, extra):
    """Attack: a bearer token that is not UTF-8, on REST, admin and a Realtime upgrade.
    Promise: 401, never a 500."""
    reply = await raw_exchange(keys_gw, (f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}"
                                         "Connection: close\r\nAuthorization: Bearer ").encode()
                               + b"\xff\xfe\x80sk\r\n\r\n")
    assert b" 401 " in reply.split(b"\r\n", 1)[0], reply[:200]


async def test_chunked_upload_over_a_small_limit_is_never_forwarded(make_gateway, upstream):
    """Attack: a chunked upload (no Content-Length) over max_body_bytes, smaller than the
    first read. Promise: 413, and the upstream gets nothing."""
    gw = await make_gateway({"server": {"max_body_bytes": 4096}})
    boundary = "xyz"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\""
            "\r\nContent-Type: audio/wav\r\n\r\n").encode() + b"\0" * 16384 + \
        f"\r\n--{boundary}--\r\n".encode()
    chunked = f"{len(part):x}\r\n".encode() + part + b"\r\n0\r\n\r\n"
    reply = await raw_exchange(gw, (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunked)
    assert b" 413 " in reply.split(b"\r\n", 1)[0] or reply == b"", reply[:200]
    assert upstream.requests == []


async def test_the_key_subprotocol_is_never_echoed(tmp_path, monkeypatch, caplog):
    """Attack: in keys mode a browser logs in with the key subprotocol; faregate swaps in
    the real key, and a (misbehaving) upstream selects that subprotocol.
    Promise: the client never receives it and no log line holds the real key."""
    from conftest import gateway_config, start_gateway
    from faregate.proxy import parse_settings

    caplog.set_level(logging.DEBUG)

    async def choose_key(request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        ws = web.WebSocketResponse(protocols=[p for p in offered if "api-key" in p])
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "session.created", "session": {}}))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", choose_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("FG_SEC_UPSTREAM", REAL_KEY)
    gw = await start_gateway(parse_settings(gateway_config(f"http://127.0.0.1:{port}", tmp_path, {
        "server": {"upstream_api_key_env": "FG_SEC_UPSTREAM"},
        "identity": {"mode": "keys"}, "keys": [{"sha256": sha(TEAM_KEY), "tenant": "search"}]})))
    try:
        url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, subprotocols=[
                "realtime", f"openai-insecure-api-key.{TEAM_KEY}"]) as ws:
            assert ws.subprotocol in (None, "realtime")
            assert json.loads(await ws.recv())["type"] == "session.created"
    finally:
        await gw.stop()
        await runner.cleanup()
    assert [r for r in caplog.records if REAL_KEY in r.getMessage()] == []
