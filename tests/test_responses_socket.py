"""The Responses API over a WebSocket (`client.responses.connect()`), metered like a stream.

Before, the upgrade of `/v1/responses` was relayed frame by frame and nothing
was charged or admitted. Now every `response.create` is admitted like a REST
call (allowlist, unknown models, worst case against the budget) and every
response's terminal event is charged once with the usage it reports. An
upgrade faregate cannot meter is refused, never relayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from decimal import Decimal

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fake_responses import FakeResponses

M = Decimal(1_000_000)
REPORTED = {"input_tokens": 300, "output_tokens": 50}
PER_RESPONSE_NANOS = int((300 * Decimal("2.50") + 50 * Decimal("10.00")) / M * 10**9)


def key(name: str) -> dict:
    return {"sha256": hashlib.sha256(name.encode()).hexdigest()}


@pytest.fixture
def responses(upstream):
    fake = FakeResponses(upstream)
    upstream.usage["/v1/responses"] = dict(REPORTED)
    return fake


def cfg(**tenant) -> dict:
    return {"keys": [{**key("sk-acme"), "tenant": "acme"}],
            "tenants": {"acme": {"monthly_usd": "1.00", **tenant}}}


async def sessions_of(gw, timeout: float = 5.0) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await gw.state.ledger.flush()
        rows = await gw.state.ledger.sessions()
        if rows or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.02)


def ws(gw, path: str = "/v1/responses") -> str:
    return gw.url.replace("http://", "ws://") + path


async def until_done(conn) -> list[str]:
    seen = []
    async for event in conn:
        seen.append(event.type)
        if event.type in ("response.completed", "error"):
            return seen
    return seen


async def test_sdk_socket_responses_are_charged_once_each(make_gateway, responses):
    gw = await make_gateway(cfg())
    async with gw.client("sk-acme").responses.connect() as conn:
        for text in ("first", "second"):
            await conn.send({"type": "response.create", "model": "gpt-4o", "input": text,
                             "max_output_tokens": 100})
            assert (await until_done(conn))[-1] == "response.completed"
    rows = [r for r in await gw.ledger_rows(2) if r.endpoint == "/v1/responses"]
    assert len(rows) == 2 and all(r.cost_nanos == PER_RESPONSE_NANOS for r in rows)
    assert all(r.session_id for r in rows) and len({r.response_id for r in rows}) == 2
    [session] = await sessions_of(gw)
    assert session.endpoint == "/v1/responses" and session.responses == 2
    assert session.cost_nanos == 2 * PER_RESPONSE_NANOS


async def test_a_spent_budget_refuses_the_next_response(make_gateway, responses, upstream):
    """The first response is charged; the next create cannot fit and ends the session
    with the budget error event (1008) before it reaches the upstream."""
    gw = await make_gateway(cfg(monthly_usd=str(Decimal(PER_RESPONSE_NANOS) / 10**9 * 2)))
    async with websockets.connect(ws(gw), additional_headers={
            "Authorization": "Bearer sk-acme"}) as sock:
        create = {"type": "response.create", "model": "gpt-4o", "input": "x",
                  "max_output_tokens": 100}
        await sock.send(json.dumps(create))
        while json.loads(await sock.recv())["type"] != "response.completed":
            pass
        await sock.send(json.dumps({**create, "max_output_tokens": 100_000}))
        event = json.loads(await sock.recv())
        assert event["type"] == "error" and event["error"]["code"] == "budget_exceeded"
        with pytest.raises(ConnectionClosed) as closed:
            await sock.recv()
        assert closed.value.rcvd.code == 1008
    sent = [e for e in responses.sockets[0] if e["type"] == "response.create"]
    assert len(sent) == 1  # the refused create never went upstream


async def test_a_model_outside_the_allowlist_is_refused(make_gateway, responses):
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    async with websockets.connect(ws(gw), additional_headers={
            "Authorization": "Bearer sk-acme"}) as sock:
        await sock.send(json.dumps({"type": "response.create", "model": "gpt-5-pro",
                                    "input": "x"}))
        event = json.loads(await sock.recv())
        assert event["error"]["code"] == "model_not_allowed"
    assert [e for e in responses.sockets[0] if e["type"] == "response.create"] == []


async def test_a_hidden_create_in_a_frame_with_a_nested_type_is_still_read(make_gateway,
                                                                           responses):
    """A nested "type" placed before the top-level one used to hide the create from the
    sniffing reader; the real parse sees the top-level type."""
    gw = await make_gateway(cfg(models=["gpt-4o-mini"]))
    async with websockets.connect(ws(gw), additional_headers={
            "Authorization": "Bearer sk-acme"}) as sock:
        await sock.send('{"metadata":{"type":"noise"},"type":"response.create",'
                        '"model":"gpt-5-pro","input":"x"}')
        event = json.loads(await sock.recv())
        assert event["error"]["code"] == "model_not_allowed"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/assistants", "/v1/anything"])
async def test_an_upgrade_faregate_cannot_meter_is_refused(make_gateway, responses, upstream,
                                                          path):
    gw = await make_gateway(cfg())
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(ws(gw, path),
                                      additional_headers={"Authorization": "Bearer sk-acme"}):
            pass
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body)["error"]["code"] == "endpoint_not_allowed"
    assert upstream.requests == []


async def test_a_rate_limited_create_is_refused_and_the_session_goes_on(make_gateway,
                                                                        responses):
    """A refusal that waiting cures (here the tenant's rpm) answers that create with an
    error event; the session stays open and the create never reaches the upstream."""
    gw = await make_gateway(cfg(rpm=2))  # the upgrade is a request, then one create
    async with websockets.connect(ws(gw), additional_headers={
            "Authorization": "Bearer sk-acme"}) as sock:
        create = {"type": "response.create", "model": "gpt-4o", "input": "x",
                  "max_output_tokens": 100}
        await sock.send(json.dumps(create))
        while json.loads(await asyncio.wait_for(sock.recv(), 5))["type"] != "response.completed":
            pass
        for _ in range(2):  # refused each time, and the session is still there
            await sock.send(json.dumps(create))
            event = json.loads(await asyncio.wait_for(sock.recv(), 5))
            assert event["type"] == "error" and event["error"]["code"] == "rate_limit_exceeded"
    sent = [e for e in responses.sockets[0] if e["type"] == "response.create"]
    assert len(sent) == 1
    [row] = [r for r in await gw.ledger_rows(1) if r.endpoint == "/v1/responses"]
    assert row.cost_nanos == PER_RESPONSE_NANOS
