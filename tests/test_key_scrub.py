"""No fragment of the upstream key leaves faregate: not to a tenant, a log line or capture.

An upstream that refuses faregate's key names it the way OpenAI does —
prefix, stars, last four (`sk-rea*****4242`) — or, from a broken proxy in
front of it, whole. In keys mode that is the operator's key; every such form
is replaced by `[upstream key]` in REST error bodies, Realtime error events
and refused upgrades, log lines and the capture store.
"""

from __future__ import annotations

import base64
import json
import logging

import aiohttp
import openai
import pytest
import websockets
from aiohttp import web

from fake_sessions import FakeSessions
from faregate.proxy.caller import REPLACEMENT, KeyScrubber
from test_identity import sha
from test_serve import start_serve, stop

REAL = "sk-real-upstream-SECRET-4242"
TEAM = "fg-team-search-0001"
MASKED = f"{REAL[:3]}*****{REAL[-4:]}"


def fragments(text: str) -> list[str]:
    """Every form of REAL in `text`: whole, its masked form, its distinctive parts."""
    return [f for f in (REAL, MASKED, REAL[:8], "SECRET", f"*{REAL[-4:]}") if f in text]


SHAPES = [
    (f"Incorrect API key provided: {MASKED}.", f"Incorrect API key provided: {REPLACEMENT}."),
    (f"Incorrect API key provided: {REAL[:8]}{'*' * 40}{REAL[-4:]}", None),
    (f"key {REAL} here", f"key {REPLACEMENT} here"),
    (f'{{"message": "sk-proj-{"*" * 60}{REAL[-4:]}"}}', None),
    (f"ellipsis {REAL[:6]}...{REAL[-4:]}", None),
    (f"unicode ellipsis {REAL[:6]}\u2026{REAL[-4:]}", None),
    ("nothing here 4242 and 2*4242", "nothing here 4242 and 2*4242"),  # not a key's mask
]


@pytest.mark.parametrize("text,expected", SHAPES, ids=range(len(SHAPES)))
def test_every_form_of_the_key_is_replaced(text, expected):
    out = KeyScrubber([REAL]).text(text)
    assert fragments(out) == [] or out == text
    if expected is not None:
        assert out == expected
    assert KeyScrubber([REAL]).bytes(text.encode()) == out.encode()


@pytest.fixture
async def keys_gw(make_gateway, monkeypatch, tmp_path):
    monkeypatch.setenv("FG_SCRUB_UPSTREAM", REAL)
    monkeypatch.setenv("FAREGATE_CAPTURE_KEY", base64.b64encode(bytes(range(32))).decode())
    return await make_gateway({
        "server": {"upstream_api_key_env": "FG_SCRUB_UPSTREAM"},
        "identity": {"mode": "keys"},
        "keys": [{"sha256": sha(TEAM), "tenant": "search"}],
        "tenants": {"search": {"capture": True}},
        "capture": {"directory": str(tmp_path / "capture")},
    })


async def test_rest_error_bodies_metered_or_not(keys_gw, upstream, caplog):
    caplog.set_level(logging.INFO)
    upstream.valid_keys = {"sk-some-other-key-9999"}  # the fake masks the key it refuses
    client = keys_gw.client(TEAM)
    seen = []
    for call in (client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "hi"}]), client.models.list(),
            client.embeddings.create(model="text-embedding-3-small", input="a")):
        with pytest.raises(openai.AuthenticationError) as info:
            await call
        seen.append(info.value.response.text)
    upstream.valid_keys = None
    upstream.fail_next.append((500, {"error": {"message": f"proxy saw Bearer {REAL}",
                                               "type": "server_error"}}))
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="gpt-4o-mini",
                                             messages=[{"role": "user", "content": "hi"}])
    seen.append(info.value.response.text)
    assert upstream.requests[0].api_key == REAL  # the fake did see (and mask) the real key
    assert all(REPLACEMENT in text for text in seen), seen
    assert [f for text in seen for f in fragments(text)] == []
    logged = [r for r in caplog.records if r.getMessage() == "upstream refused the call"]
    assert logged and all(REPLACEMENT in r.upstream_message for r in logged)
    assert [r for r in caplog.records if fragments(r.getMessage() + json.dumps(
        r.__dict__, default=str))] == []
    keys_gw.state.capture.flush()
    captured = keys_gw.state.capture.read("rest-search")
    assert len(captured) == 4 and all(REPLACEMENT in c["response"] for c in captured)
    assert fragments(json.dumps(captured)) == []


async def test_realtime_error_events_and_refused_upgrades(keys_gw, upstream):
    sessions = FakeSessions()
    sessions.refuse_next = (401, {"error": {"message": f"Incorrect API key provided: {MASKED}",
                                            "type": "invalid_request_error"}})
    upstream.add_route("GET", "/v1/realtime", sessions.realtime)
    url = keys_gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    auth = {"Authorization": f"Bearer {TEAM}"}
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=auth):
            pass
    body = info.value.response.body.decode()
    assert info.value.response.status_code == 401 and REPLACEMENT in body
    assert fragments(body) == []

    async def telling(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "session.created", "session": {"id": "s"}}))
        await ws.send_str(json.dumps({"type": "error", "event_id": "e1", "error": {
            "type": "invalid_request_error", "code": "invalid_api_key",
            "message": f"Incorrect API key provided: {MASKED}. Key {REAL} revoked."}}))
        await ws.close()
        return ws

    upstream.add_route("GET", "/v1/realtime", telling)
    async with websockets.connect(url, additional_headers=auth) as ws:
        frames = [await ws.recv(), await ws.recv()]
    error = json.loads(frames[1])
    assert error["type"] == "error" and REPLACEMENT in error["error"]["message"]
    assert fragments(frames[1]) == []


async def test_no_log_line_of_faregate_serve_holds_a_fragment(tmp_path, upstream):
    """The real server's JSON log lines on stderr, with the upstream refusing the key."""
    config = tmp_path / "faregate.toml"
    config.write_text(
        f'[server]\nupstream = "{upstream.url}"\nupstream_api_key_env = "FG_SCRUB_UPSTREAM"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "l.db"}"\njournal_dir = "{tmp_path / "j"}"\n'
        f'[identity]\nmode = "keys"\n[[keys]]\nsha256 = "{sha(TEAM)}"\ntenant = "search"\n')
    upstream.valid_keys = set()
    proc, url = await start_serve(tmp_path, "--config", str(config),
                                  env={"FG_SCRUB_UPSTREAM": REAL, "FAREGATE_LOG_LEVEL": "INFO"})
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/v1/chat/completions", "/v1/models"):
                async with http.request("POST" if "chat" in path else "GET", url + path,
                                        json={"model": "gpt-4o-mini", "messages": []},
                                        headers={"Authorization": f"Bearer {TEAM}"}) as r:
                    assert r.status == 401 and fragments(await r.text()) == []
    finally:
        assert await stop(proc) == 0
    log = (await proc.stderr.read()).decode()
    assert '"upstream refused the call"' in log and REPLACEMENT in log
    assert fragments(log) == []
