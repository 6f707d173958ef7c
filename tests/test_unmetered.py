"""Nothing unmetered: each way a hostile tenant got money past faregate, tried again.

A tenant with a small monthly budget (and, where it matters, an allowlist)
against the fake upstream, through the official SDK, raw HTTP requests sent
byte for byte (`curl --path-as-is` style) and raw WebSocket frames. Each test
names the bypass it closes; the answer is always "refused" (and the upstream
never sees the call) or "charged".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timezone
from decimal import Decimal

import openai
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from conftest import gateway_config, start_gateway
from fake_billable import FakeBillable
from fake_sessions import FakeSessions
from faregate.proxy import parse_settings
from faregate.proxy.quota import first_response
from faregate.proxy.quota._session import MIN_RESPONSE_TOKENS
from faregate.pricing import load_price_table

HELLO = [{"role": "user", "content": "one two three"}]
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": HELLO}).encode()


def key(name: str) -> dict:
    return {"sha256": hashlib.sha256(name.encode()).hexdigest()}


def cfg(**tenant) -> dict:
    return {"keys": [{**key("sk-acme"), "tenant": "acme"}, {**key("sk-free"), "tenant": "free"}],
            "tenants": {"acme": {"monthly_usd": "0.02", **tenant}}}


def exhaust(gw, tenant: str = "acme") -> None:
    """Spend the tenant's whole monthly budget (as if it had made paid calls)."""
    counter = gw.state.quota.book.counter(f"tenant:{tenant}", "month", datetime.now(timezone.utc))
    counter.spent = 20_000_000


def leave_one_response(gw, tenant: str = "acme") -> None:
    """Spend the budget but for the smallest response a session may start with (what its
    upgrade must afford)."""
    exhaust(gw, tenant)
    now = datetime.now(timezone.utc)
    smallest = first_response(load_price_table(), "gpt-realtime", now)[0]
    gw.state.quota.book.counter(f"tenant:{tenant}", "month", now).spent -= smallest


async def upstream_event(sessions: FakeSessions, kind: str) -> dict:
    """The first `kind` event the fake upstream received (waiting at most 5 s)."""
    for _ in range(500):
        found = [e for s in sessions.sessions for e in s.events if e.get("type") == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"the upstream never received {kind}")


async def raw(gw, method: str, target: str, body: bytes = b"", key: str = "sk-acme",
              headers: dict | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request sent exactly as written (no client normalises the target)."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = {"Host": "x", "Authorization": f"Bearer {key}", "Connection": "close",
            "Content-Type": "application/json", "Content-Length": str(len(body)),
            **(headers or {})}
    writer.write(f"{method} {target} HTTP/1.1\r\n".encode()
                 + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def code(body: bytes) -> str:
    text = body.decode(errors="replace")
    start = text.find("{")
    return json.loads(text[start:text.rfind("}") + 1])["error"]["code"]


# -- 1. one canonical path ------------------------------------------------------------

SPELLINGS = ["/v1/./chat/completions", "/v1/%2e/chat/completions", "/v1/%2E/chat/completions",
             "/v1//chat/completions", "/v1/chat/completions/", "/v1/chat/./completions",
             "/v1/%63hat/completions", "/v1/CHAT/Completions"]


@pytest.mark.parametrize("target", SPELLINGS)
async def test_spellings_of_a_paid_path_are_refused_after_the_budget(make_gateway, upstream,
                                                                     target):
    """Before: `/v1/./chat/completions` and the like skipped metering and budgets, and the
    upstream served them as chat completions (11 paid calls after the refusal)."""
    gw = await make_gateway(cfg())
    exhaust(gw)
    status, body = await raw(gw, "POST", target, CHAT)
    assert (status, code(body)) == (429, "budget_exceeded")
    assert upstream.requests == []


@pytest.mark.parametrize("target,other", [
    ("/v1/./responses", b'{"model": "gpt-4o-mini", "input": "hi"}'),
    ("/v1/%2e/images/generations", b'{"model": "gpt-image-1", "prompt": "a cat"}')])
async def test_other_paid_paths_too(make_gateway, upstream, target, other):
    gw = await make_gateway(cfg())
    exhaust(gw)
    status, body = await raw(gw, "POST", target, other)
    assert (status, code(body)) == (429, "budget_exceeded") and upstream.requests == []


async def test_the_canonical_path_is_what_goes_upstream_and_is_charged(make_gateway, upstream):
    gw = await make_gateway(cfg())
    status, _ = await raw(gw, "POST", "/v1/./chat//completions/", CHAT)
    assert status == 200
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"]
    [row] = await gw.ledger_rows(1)
    assert row.endpoint == "/v1/chat/completions" and row.cost_nanos > 0


async def test_an_allowlist_cannot_be_passed_by_spelling(make_gateway, upstream):
    """Before: an allowlisted tenant reached gpt-5-pro through `/v1/./chat/completions`."""
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    pro = json.dumps({"model": "gpt-5-pro", "messages": HELLO}).encode()
    for target in ("/v1/./chat/completions", "/v1/%2e/chat/completions"):
        status, body = await raw(gw, "POST", target, pro)
        assert (status, code(body)) == (403, "model_not_allowed")
    assert upstream.requests == []


@pytest.mark.parametrize("target", [
    "/v1/x/../chat/completions", "/v1/%2e%2e/v1/chat/completions", "/v1/chat%2fcompletions",
    "/v1/chat%2Fcompletions", "/v1/chat;x/completions", "/v1/chat/completions%00",
    "/v1/chat%5ccompletions", "/v1/%25%36%33hat/completions", "/v1/ch%C3%A4t/completions"])
async def test_paths_without_one_meaning_are_refused(make_gateway, upstream, target):
    gw = await make_gateway(cfg())
    status, body = await raw(gw, "POST", target, CHAT)
    assert (status, code(body)) == (400, "invalid_path")
    assert upstream.requests == []


async def test_method_override_headers_never_reach_the_upstream(make_gateway, upstream):
    gw = await make_gateway(cfg())
    status, _ = await raw(gw, "GET", "/v1/models", headers={"X-HTTP-Method-Override": "POST",
                                                            "X-Original-URL": "/v1/responses"})
    assert status == 200
    assert "x-http-method-override" not in upstream.last_request.headers
    assert "x-original-url" not in upstream.last_request.headers


# -- 2. money is default-deny ----------------------------------------------------------

@pytest.fixture
def objects(upstream):
    return FakeBillable(upstream)


async def billable_calls(client, webrtc: bool = True) -> list:
    calls = [
        lambda: client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18",
                                               training_file="file-abc"),
        lambda: client.containers.create(name="box"),
        lambda: client.vector_stores.create(name="docs"),
    ]
    if webrtc:  # metered: it reserves the session it opens (tests/test_provider*.py)
        calls.append(lambda: client.realtime.calls.create(sdp="v=0\r\n"))
    return calls


async def test_billable_endpoints_are_refused_while_the_budget_is_spent(make_gateway, objects,
                                                                        upstream):
    """Before: fine-tuning jobs, containers, vector stores, WebRTC calls were forwarded for
    an over-budget tenant and never recorded."""
    gw = await make_gateway(cfg())
    exhaust(gw)
    client = gw.client("sk-acme")
    for call in await billable_calls(client):
        with pytest.raises(openai.RateLimitError) as info:
            await call()
        assert info.value.body["code"] == "budget_exceeded"
    status, body = await raw(gw, "POST", "/v1/some/future/endpoint", b"{}")
    assert (status, code(body)) == (429, "budget_exceeded")
    assert objects.created == [] and upstream.requests == []
    assert [m.id async for m in await client.models.list()]  # free calls still work


async def test_billable_endpoints_get_an_unpriced_ledger_row(make_gateway, objects):
    gw = await make_gateway(cfg())
    client = gw.client("sk-acme")
    for call in await billable_calls(client, webrtc=False):
        await call()
    rows = await gw.ledger_rows(3)
    assert sorted(r.endpoint for r in rows) == [
        "/v1/containers", "/v1/fine_tuning/jobs", "/v1/vector_stores"]
    for r in rows:
        assert (r.tenant, r.status, r.priced, r.cost_nanos) == ("acme", 200, False, 0)
        assert "endpoint_not_priced" in r.flags
    metrics = await gw.metrics_text()
    counted = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("faregate_unpriced_requests_total{") and 'tenant="acme"' in line]
    assert sum(counted) == 3


async def test_a_billable_call_counts_against_the_model_allowlist(make_gateway, objects):
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    with pytest.raises(openai.PermissionDeniedError) as info:
        await gw.client("sk-acme").fine_tuning.jobs.create(model="gpt-4.1",
                                                           training_file="file-abc")
    assert info.value.body["code"] == "model_not_allowed" and objects.created == []


async def test_endpoints_allowlist(make_gateway, upstream):
    gw = await make_gateway(cfg(endpoints=["/v1/chat/completions", "/v1/models"]))
    client = gw.client("sk-acme")
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    [m async for m in await client.models.list()]
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.responses.create(model="gpt-4o-mini", input="hi")
    assert info.value.body["code"] == "endpoint_not_allowed"
    status, body = await raw(gw, "POST", "/v1/chat/completionsx", CHAT)
    assert (status, code(body)) == (403, "endpoint_not_allowed")
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions", "/v1/models"]


# -- 4. unknown models under a budget --------------------------------------------------

async def test_unpriced_models_are_refused_for_callers_with_a_budget(make_gateway, upstream):
    """Before: 50 calls to an unpriced model, $0 counted, never refused."""
    gw = await make_gateway(cfg())
    client = gw.client("sk-acme")
    for _ in range(3):
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(model="my-mystery-model", messages=HELLO)
        assert info.value.body["code"] == "model_not_priced"
        assert '[pricing.models."my-mystery-model"]' in info.value.body["message"]
    assert upstream.requests == []
    # no USD limit: forwarded, recorded, flagged (as before)
    await gw.client("sk-free").chat.completions.create(model="my-mystery-model", messages=HELLO)
    [row] = await gw.ledger_rows(1)
    assert (row.tenant, row.priced) == ("free", False)


async def test_record_reserves_an_unpriced_model_at_the_dearest_rate(make_gateway, upstream):
    gw = await make_gateway(cfg(unknown_model="record"))
    client = gw.client("sk-acme")
    # 1000 output tokens at the dearest output rate in the table is far over $0.02
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="my-mystery-model", messages=HELLO,
                                             max_tokens=1000)
    await client.chat.completions.create(model="my-mystery-model", messages=HELLO,
                                         max_tokens=10)
    [row] = await gw.ledger_rows(1)
    assert not row.priced and row.model == "my-mystery-model"


# -- 5. unreadable bodies are not forwarded --------------------------------------------

PRO = {"model": "gpt-5-pro", "messages": HELLO}


@pytest.mark.parametrize("body", [
    b"\xef\xbb\xbf" + json.dumps(PRO).encode(),  # a UTF-8 byte-order mark
    b'{"model": "gpt-5-pro", "messages": [{"role": "user", "content": "\xff"}]}',
    b"model=gpt-5-pro&messages=hi",
    b'{"model": "gpt-4o-mini", "messages": [], "model": "gpt-5-pro"}',
    b'{"model": "gpt-4o-mini", "messages": [], "mod\\u0065l": "gpt-5-pro"}',
    b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": 5, "max_tokens": 90000}',
], ids=["bom", "invalid-utf8", "form", "duplicate-model", "escaped-duplicate", "duplicate-cap"])
async def test_bodies_faregate_cannot_read_are_refused(make_gateway, upstream, body):
    """Before: a body faregate's parser refused was forwarded unexamined (20 parallel calls
    to a disallowed model: $25.20 against $0.05)."""
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    status, answer = await raw(gw, "POST", "/v1/chat/completions", body)
    assert (status, code(answer)) == (400, "invalid_request_body")
    assert upstream.requests == []


def form(*fields: tuple[str, bytes], boundary: str = "bnd") -> bytes:
    parts = []
    for name, value in fields:
        filename = '; filename="a.wav"' if name == "file" else ""
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}'
                     f"\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


async def test_an_upload_cannot_name_its_model_twice(make_gateway, upstream):
    gw = await make_gateway(cfg(models=["whisper-1"]))
    head = {"Content-Type": "multipart/form-data; boundary=bnd"}
    twice = form(("model", b"whisper-1"), ("file", b"\0" * 100_000),
                 ("model", b"gpt-4o-transcribe"))
    status, body = await raw(gw, "POST", "/v1/audio/transcriptions", twice, headers=head)
    assert (status, code(body)) == (400, "invalid_request_body")
    # a model only after the file is still found, and checked
    late = form(("file", b"\0" * 100_000), ("model", b"gpt-4o-transcribe"))
    status, body = await raw(gw, "POST", "/v1/audio/transcriptions", late, headers=head)
    assert (status, code(body)) == (403, "model_not_allowed")
    assert not any(r.form and r.form.get("model") == "gpt-4o-transcribe"
                   for r in upstream.requests)


async def test_a_stored_prompt_is_reserved_and_its_model_checked(make_gateway, upstream):
    """Before: a body with no model got no reservation and no allowlist check."""
    upstream.prompt_models["pmpt_pro"] = "gpt-5-pro"
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    client = gw.client("sk-acme")
    exhaust(gw)
    with pytest.raises(openai.RateLimitError):  # reserved: a spent budget refuses it
        await client.responses.create(prompt={"id": "pmpt_pro"})
    gw.state.quota.book.counter("tenant:acme", "month", datetime.now(timezone.utc)).spent = 0
    await client.responses.create(prompt={"id": "pmpt_pro"})  # its model shows in the answer
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.responses.create(prompt={"id": "pmpt_pro"})
    assert info.value.body["code"] == "model_not_allowed"
    assert len(upstream.requests) == 1


# -- 7. disconnects are charged at least what was delivered ----------------------------

async def test_a_client_leaving_mid_stream_pays_at_least_the_prompt(make_gateway, upstream):
    """Before: charged a body-size estimate a quarter of the real prompt ($0.000058 where
    the upstream billed $0.204 for a long history)."""
    upstream.chunk_delay_s = 0.1
    gw = await make_gateway(cfg())
    history = [{"role": "user", "content": "a " * 20_000}]
    real_prompt = 20_000 + 7  # what the fake upstream counts for this body
    stream = await gw.client("sk-acme").chat.completions.create(
        model="gpt-4o-mini", messages=history, stream=True, max_tokens=20)
    async for _ in stream:
        break
    await stream.close()
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "cut_short" in row.flags
    assert row.tokens["input"] >= real_prompt


async def test_a_client_leaving_before_a_json_answer_pays_its_real_usage(make_gateway,
                                                                        upstream):
    upstream.delay_s = 0.3
    gw = await make_gateway(cfg())
    reader, writer = await asyncio.open_connection(*gw.url.removeprefix("http://").split(":"))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 b"sk-acme\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(CHAT)).encode() + b"\r\n\r\n" + CHAT)
    await writer.drain()
    writer.close()  # gone before the answer
    [row] = await gw.ledger_rows(1)
    assert not row.estimated and row.tokens["input"] == 10 and row.tokens["output"] == 20


# -- 8. caps count what they name ------------------------------------------------------

async def test_image_caps_count_the_responses_image_tool(make_gateway, upstream):
    """Before: 18 images made by the Responses image_generation tool after a cap of 2."""
    gw = await make_gateway(cfg(max_images_per_day=2, monthly_usd="5"))
    client = gw.client("sk-acme")
    tool = [{"type": "image_generation", "quality": "low"}]
    await client.images.generate(model="gpt-image-1", prompt="a cat")
    await client.responses.create(model="gpt-4o-mini", input="draw", tools=tool)
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-4o-mini", input="draw", tools=tool)
    assert info.value.body["code"] == "request_quota_exceeded"
    rows = await gw.ledger_rows(2)
    assert sum(r.images for r in rows) == 2


# -- 6. Realtime frames are read, not sniffed ------------------------------------------

@pytest.fixture
async def sessions():
    async with FakeSessions() as fake:
        yield fake


async def realtime_gateway(sessions, tmp_path, **tenant):
    extra = cfg(**tenant)
    extra["pricing"] = {"models": {"gpt-realtime": {"input": "4", "output": "16",
                                                    "audio_input": "32", "audio_output": "64"}}}
    return await start_gateway(parse_settings(gateway_config(sessions.url, tmp_path, extra)))


HIDDEN_CREATES = {  # frames whose response.create was once missed by the reservation
    # a nested "type" before the top-level one ($0.36 of 30 such creates against $0.05)
    "nested type": '{"event_id":"e1","response":{"metadata":{"type":"noise"},'
                   '"max_output_tokens":4000},"type":"response.create"}',
    # a binary frame: an upstream may read it as an event
    "binary frame": b'{"type":"response.create","response":{"max_output_tokens":4000}}',
}


@pytest.mark.parametrize("frame", HIDDEN_CREATES.values(), ids=HIDDEN_CREATES.keys())
async def test_a_response_create_cannot_hide_from_its_reservation(sessions, tmp_path, frame):
    gw = await realtime_gateway(sessions, tmp_path)
    try:
        leave_one_response(gw)
        url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={
                "Authorization": "Bearer sk-acme"}) as sock:
            await sock.recv()  # session.created
            await sock.send(frame)
            created = await upstream_event(sessions, "response.create")
        # Read as a response.create: reserved, and capped at what the budget has left.
        assert created["response"]["max_output_tokens"] == MIN_RESPONSE_TOKENS
    finally:
        await gw.stop()


async def test_a_nested_type_cannot_hide_a_session_update(sessions, tmp_path):
    gw = await realtime_gateway(sessions, tmp_path, models=["gpt-realtime"])
    try:
        url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={
                "Authorization": "Bearer sk-acme"}) as sock:
            await sock.recv()
            await sock.send('{"session":{"type":"realtime","model":"gpt-4o-realtime-preview"},'
                            '"type":"session.update"}')
            event = json.loads(await sock.recv())
            assert event["error"]["code"] == "model_not_allowed"
        assert "session.update" not in sessions.sessions[0].types()
    finally:
        await gw.stop()


async def test_a_frame_with_two_types_is_not_forwarded(sessions, tmp_path):
    gw = await realtime_gateway(sessions, tmp_path)
    try:
        url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={
                "Authorization": "Bearer sk-acme"}) as sock:
            await sock.recv()
            await sock.send('{"type":"conversation.item.create","type":"response.create"}')
            event = json.loads(await sock.recv())
            assert event["type"] == "error" and event["error"]["code"] == "invalid_event"
            await sock.send('{"type":"response.create","response":{"max_output_tokens":5}}')
            while json.loads(await sock.recv())["type"] != "response.done":
                pass
        assert sessions.sessions[0].types() == ["response.create"]
    finally:
        await gw.stop()


async def test_upgrades_obey_unknown_model_and_endpoints(sessions, tmp_path):
    gw = await realtime_gateway(sessions, tmp_path, endpoints=["/v1/realtime"])
    try:
        base = gw.url.replace("http://", "ws://")
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(base + "/v1/realtime?model=my-voice-model",
                                          additional_headers={"Authorization": "Bearer sk-acme"}):
                pass
        assert info.value.response.status_code == 403
        assert json.loads(info.value.response.body)["error"]["code"] == "model_not_priced"
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(base + "/v1/live/sessions?model=gpt-realtime",
                                          additional_headers={"Authorization": "Bearer sk-acme"}):
                pass
        assert json.loads(info.value.response.body)["error"]["code"] == "endpoint_not_allowed"
        async with websockets.connect(base + "/v1/realtime?model=gpt-realtime",
                                      additional_headers={"Authorization": "Bearer sk-acme"}) as s:
            await s.recv()
            await s.send(json.dumps({"type": "session.update",
                                     "session": {"type": "realtime", "model": "my-voice-model"}}))
            event = json.loads(await s.recv())
            assert event["error"]["code"] == "model_not_priced"
        assert len(sessions.sessions) == 1
        assert "session.update" not in sessions.sessions[0].types()
    finally:
        await gw.stop()
