"""Usage is bounded by what is possible: a report that cannot be true costs the reservation.

The fake upstream reports usage beyond the model's context window or maximum
output (from the price table), negative counts and fields of the wrong
type. Each such call is flagged `usage_implausible` and charged exactly what
faregate reserved for it — never the face value, never $0 — and the report
and the budget alert say how many and how much. Believable usage (large,
but possible) is charged as reported.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
import websockets
from aiohttp import web



from faregate.pricing import load_price_table
from faregate.proxy.meter import classify, cost_nanos, estimate, facts_from_json, input_shape
from faregate.storage import report_dict

ACME = {"x-faregate-tenant": "acme"}
HELLO = [{"role": "user", "content": "one two three"}]
BUDGET = {"identity": {"allow_header_identity": True},
          "tenants": {"acme": {"daily_usd": "100"}}}

CHAT = "/v1/chat/completions"
IMPLAUSIBLE = [  # (path, usage override, why)
    (CHAT, {"prompt_tokens": 10**18}, "absurd"),
    (CHAT, {"prompt_tokens": 128_001}, "beyond gpt-4o-mini's 128,000-token context window"),
    (CHAT, {"completion_tokens": 16_385}, "beyond its 16,384 output tokens"),
    (CHAT, {"prompt_tokens": -5}, "negative"),
    (CHAT, {"prompt_tokens": "many", "total_tokens": 9}, "a string"),
    (CHAT, {"completion_tokens": True}, "a bool"),
    (CHAT, {"completion_tokens": 3.5}, "a fraction"),
    (CHAT, {"prompt_tokens_details": "cached"}, "details of the wrong type"),
    (CHAT, {"completion_tokens_details": [1, 2]}, "details of the wrong type"),
    ("/v1/responses", {"input_tokens": 10**9}, "responses beyond the window"),
    ("/v1/responses", {"output_tokens": -1}, "responses, negative"),
    ("/v1/embeddings", {"prompt_tokens": 10**12}, "embeddings beyond 2,048 inputs' windows"),
]
BELIEVABLE = [
    (CHAT, {"prompt_tokens": 100_000, "completion_tokens": 10_000}),
    ("/v1/responses", {"input_tokens": 120_000, "output_tokens": 8_000}),
    ("/v1/embeddings", {"prompt_tokens": 9_000}),  # more than one input's window, fine
]


async def call(client, path: str):
    if path == CHAT:
        return await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                    max_tokens=50, extra_headers=ACME)
    if path == "/v1/responses":
        return await client.responses.create(model="gpt-4o-mini", input="one two three",
                                             max_output_tokens=50, extra_headers=ACME)
    return await client.embeddings.create(model="text-embedding-3-small", input="a b",
                                          extra_headers=ACME)


def reservation(path: str, body: bytes) -> tuple[dict, int]:
    """What faregate held for the call: the reservation of the body it forwarded."""
    endpoint = classify("POST", path)
    parsed = orjson.loads(body)
    facts = facts_from_json(endpoint, parsed, len(body))
    table, now = load_price_table(), datetime.now(timezone.utc)
    shape = input_shape(endpoint.kind, parsed) if endpoint.kind in ("chat", "responses") else None
    usage = estimate(endpoint, facts, parsed, table=table, at=now, shape=shape).usage
    return usage.tokens(), cost_nanos(usage, facts.model, table, now)


@pytest.mark.parametrize("path,usage,why", IMPLAUSIBLE, ids=[w for _, _, w in IMPLAUSIBLE])
async def test_implausible_usage_is_charged_at_the_reservation(make_gateway, upstream, path,
                                                               usage, why):
    gw = await make_gateway(BUDGET)
    upstream.usage[path], upstream.honours_caps = usage, False
    reply = await call(gw.client(), path)
    assert reply  # the client gets the upstream's answer untouched
    [row] = await gw.ledger_rows(1)
    tokens, held = reservation(path, upstream.requests[-1].body)
    assert "usage_implausible" in row.flags and row.estimated, why
    assert row.cost_nanos == held > 0
    assert row.tokens == tokens
    metrics = await gw.metrics_text()
    assert f'faregate_usage_problems_total{{endpoint="{path}",problem="usage_implausible"}} 1.0' \
        in metrics


@pytest.mark.parametrize("path,usage", BELIEVABLE, ids=[p for p, _ in BELIEVABLE])
async def test_believable_usage_is_charged_as_reported(make_gateway, upstream, path, usage):
    gw = await make_gateway(BUDGET)
    upstream.usage[path], upstream.honours_caps = usage, False
    await call(gw.client(), path)
    [row] = await gw.ledger_rows(1)
    assert "usage_implausible" not in row.flags and not row.estimated
    assert sum(row.tokens.values()) >= sum(usage.values())


async def test_tool_turns_widen_the_bound_of_a_responses_call(make_gateway, upstream):
    """A Responses call with built-in tools runs several model turns and reports their sum."""
    gw = await make_gateway(BUDGET)
    upstream.usage["/v1/responses"] = {"input_tokens": 2_000_000}
    await gw.client().responses.create(model="gpt-4o-mini", input="find it",
                                       tools=[{"type": "web_search"}], extra_headers=ACME)
    [row] = await gw.ledger_rows(1)
    assert "usage_implausible" not in row.flags and row.tokens["input"] == 2_000_000


async def test_the_report_and_the_alert_say_how_many_and_how_much(make_gateway, upstream,
                                                                   webhook):
    url, posts = webhook
    gw = await make_gateway({**BUDGET, "tenants": {"acme": {"daily_usd": "0.0001"}},
                             "alerts": {"webhook_url": url, "thresholds": ["0.5"]}})
    upstream.usage[CHAT] = {"prompt_tokens": 10**18}
    client = gw.client()
    await call(client, CHAT)
    await call(client, CHAT)
    charged = sum(r.cost_nanos for r in await gw.ledger_rows(2))
    for _ in range(200):
        if posts:
            break
        await asyncio.sleep(0.02)
    [alert] = posts
    assert alert["faregate"]["implausible_usage"]["charges"] >= 1
    assert "implausible usage report" in alert["text"]
    report = report_dict(await gw.state.ledger.usage(None, None, "tenant"))
    [acme] = report["rows"]
    assert acme["implausible"] == 2 and report["total_implausible"] == 2
    assert Decimal(acme["implausible_cost_usd"]).scaleb(9) == charged > 0


def realtime_upstream(usage):
    """A Realtime upstream whose response streams text and reports `usage` (None: none)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "session.created", "session": {
            "id": "sess_1", "model": "gpt-realtime"}}))
        async for msg in ws:
            if json.loads(msg.data).get("type") != "response.create":
                continue
            await ws.send_str(json.dumps({"type": "response.created", "response": {
                "id": "resp_1", "status": "in_progress"}}))
            for _ in range(6):
                await ws.send_str(json.dumps({
                    "type": "response.output_text.delta", "event_id": "event_x",
                    "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
                    "content_index": 0, "delta": "a few words of text, " * 4}))
            response = {"id": "resp_1", "status": "completed", "output": []}
            if usage is not None:
                response["usage"] = usage
            await ws.send_str(json.dumps({"type": "response.done", "response": response}))
        return ws
    return handler


async def one_response(gw, *events: dict) -> None:
    """A Realtime session through faregate: send `events`, read until `response.done`."""
    url = gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={**ACME, "Authorization": "Bearer x"}
                                  ) as ws:
        await ws.recv()
        for event in events:
            await ws.send(json.dumps(event))
        while json.loads(await ws.recv())["type"] != "response.done":
            pass


@pytest.mark.parametrize("usage", [
    {"input_tokens": 10**15, "output_tokens": 5},
    {"input_tokens": 10, "output_tokens": -3},
    {"input_tokens": 10, "output_tokens": 5, "input_token_details": "text"},
], ids=["absurd", "negative", "mistyped"])
async def test_realtime_implausible_usage_costs_the_response_reservation(make_gateway, upstream,
                                                                         usage):
    upstream.add_route("GET", "/v1/realtime", realtime_upstream(usage))
    gw = await make_gateway(BUDGET)
    await one_response(gw, {"type": "response.create", "response": {"max_output_tokens": 100}})
    [row] = await gw.ledger_rows(1)
    assert "usage_implausible" in row.flags and row.estimated and row.cost_nanos > 0
    # the reservation of a first response: 256 tokens of allowance in, 100 out
    assert row.tokens["input"] == 256 and row.tokens["audio_output"] + row.tokens["output"] == 100


async def test_a_realtime_text_response_without_usage_is_estimated_from_its_text(make_gateway,
                                                                                  upstream):
    """Missing usage on a text-only response: the estimate counts the text it streamed
    (it used to count audio only, and a text response came out at $0)."""
    upstream.add_route("GET", "/v1/realtime", realtime_upstream(None))
    gw = await make_gateway(BUDGET)
    await one_response(gw, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "tell me a long story " * 20}]}},
        {"type": "response.create"})
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "usage_missing" in row.flags
    assert row.tokens["output"] >= 6 and row.tokens["input"] > 20 and row.cost_nanos > 0


def test_the_price_table_carries_each_models_limits():
    from faregate.pricing import PriceTableError, Usage, implausible, loads_price_table

    table = load_price_table()
    mini = table.entry("gpt-4o-mini-2024-07-18")
    assert (mini.context_window, mini.max_output_tokens) == (128_000, 16_384)
    assert implausible(Usage(input=127_000, output=1_000), mini, "chat") is None
    assert "context window" in implausible(Usage(input=127_001, output=1_000), mini, "chat")
    assert "can write" in implausible(Usage(output=16_385), mini, "chat")
    assert implausible(Usage(input=10**7 - 1), None, "chat") is None  # global bound
    assert implausible(Usage(input=10**7 + 1), None, "chat") is not None
    own = table.with_overrides({"my-model": {"input": 1, "context_window": 1000}})
    assert own.entry("my-model").context_window == 1000
    for bad in ("0", "-5", "1.5", "true"):
        with pytest.raises(PriceTableError):
            loads_price_table(f'version = "t"\n[[models."m"]]\neffective = "2026-01-01"\n'
                              f'input = 1\ncontext_window = {bad}\n')


async def test_an_operator_model_bound_from_config(make_gateway, upstream):
    gw = await make_gateway({**BUDGET, "pricing": {"models": {"my-model": {
        "input": "1", "output": "2", "context_window": 1000, "max_output_tokens": 100}}}})
    upstream.usage[CHAT] = {"prompt_tokens": 2000}
    await gw.client().chat.completions.create(model="my-model", messages=HELLO, max_tokens=50,
                                              extra_headers=ACME)
    [row] = await gw.ledger_rows(1)
    assert "usage_implausible" in row.flags and row.tokens["output"] == 50
