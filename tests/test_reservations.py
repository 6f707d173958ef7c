"""Reservations that hold: a limit is passed by at most one call, whatever the shape.

Through the official SDK against the fake upstream, whose usage reports are
inflated far above what the request suggests (a prompt held upstream, an
image, a continuation). The promise under test, for any concurrency:
spent ≤ limit + what one call costs (README, "Budgets, quotas and alerts").
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from decimal import Decimal

import openai
import pytest

from conftest import gateway_config, start_gateway
from faregate.proxy import parse_settings

HELLO = [{"role": "user", "content": "two words"}]
MINI = {"input": "0.15", "output": "0.60"}
M = Decimal(1_000_000)


def cfg(tenant: dict, **extra) -> dict:
    data = {"pricing": {"models": {"gpt-4o-mini": MINI}},
            "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"}],
            "tenants": {"acme": tenant}}
    data.update(extra)
    return data


async def spent_and_largest(gw, expected: int) -> tuple[Decimal, Decimal]:
    rows = [r for r in await gw.ledger_rows(expected) if r.tenant == "acme"]
    assert len(rows) == expected
    spent = Decimal(sum(r.cost_nanos for r in rows)).scaleb(-9)
    largest = Decimal(max((r.cost_nanos for r in rows), default=0)).scaleb(-9)
    return spent, largest


async def crowd(n: int, call) -> tuple[int, list[str]]:
    """`n` callers at once: (answered, refusal codes)."""
    async def one():
        try:
            await call()
            return None
        except openai.RateLimitError as exc:
            return exc.body["code"]
    results = await asyncio.gather(*(one() for _ in range(n)))
    return sum(r is None for r in results), [r for r in results if r is not None]


@pytest.mark.parametrize("callers", [60, 200])
async def test_concurrent_callers_with_hidden_prompts_pass_the_limit_by_one_call(
        make_gateway, upstream, callers):
    # Each call reports 1,000 prompt tokens for a two-word prompt: what a system
    # prompt held upstream looks like. One costs 1000 x $0.15/M + 20 x $0.60/M.
    per_call = (1000 * Decimal("0.15") + 20 * Decimal("0.60")) / M
    limit = per_call * 12
    gw = await make_gateway(cfg({"daily_usd": str(limit)}))
    upstream.usage["/v1/chat/completions"] = {"prompt_tokens": 1000}
    upstream.delay_s = 0.02
    client = gw.client("sk-acme")
    ok, refused = await crowd(callers, lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=20))
    spent, largest = await spent_and_largest(gw, ok)
    print(f"\n{callers} callers: {ok} answered, spent {spent} of {limit} "
          f"(overshoot {spent - limit}, one call {largest})")
    assert spent <= limit + largest
    assert ok >= 11  # the budget was used, not refused wholesale
    assert set(refused) <= {"budget_exceeded", "rate_limit_exceeded"} and refused
    assert len(upstream.requests) == ok  # every refusal stopped before the upstream


async def test_image_inputs_are_reserved_by_the_image_token_rules(make_gateway, upstream):
    # 60 calls with an image URL each really count 50,000 prompt tokens ($0.0075 each).
    limit = Decimal("0.05")
    gw = await make_gateway(cfg({"daily_usd": str(limit)}))
    upstream.usage["/v1/chat/completions"] = {"prompt_tokens": 50_000}
    upstream.delay_s = 0.02
    client = gw.client("sk-acme")
    image = [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]}]
    ok, refused = await crowd(60, lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=image, max_tokens=20))
    spent, largest = await spent_and_largest(gw, ok)
    print(f"\nimages: {ok} of 60 answered, spent {spent} of {limit} (overshoot {spent - limit})")
    assert 0 < ok < 60 and spent <= limit + largest


async def test_an_image_part_is_reserved_before_anything_is_learned(make_gateway, upstream):
    # gpt-4o-mini counts a high-detail image up to 2,833 + 8 x 5,667 = 48,169 tokens:
    # a budget below that refuses the first image call outright; a low-detail one fits.
    gw = await make_gateway(cfg({"daily_usd": "0.005"}))
    client = gw.client("sk-acme")

    def ask(detail: str):
        return client.chat.completions.create(model="gpt-4o-mini", max_tokens=20, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": "https://example.invalid/cat.png", "detail": detail}}]}])
    with pytest.raises(openai.RateLimitError) as info:
        await ask("high")
    assert info.value.body["code"] == "budget_exceeded"
    await ask("low")  # 2,833 tokens x $0.15/M fits
    assert len(upstream.requests) == 1


async def test_a_previous_response_chain_is_reserved_at_what_it_carries(make_gateway, upstream):
    # A long first answer: ~5,000 words of input. Every continuation carries it.
    gw = await make_gateway(cfg({"daily_usd": "0.0030"}))
    client = gw.client("sk-acme")
    first = await client.responses.create(model="gpt-4o-mini", input="word " * 5000,
                                          max_output_tokens=20)
    # The budget left pays for a few continuations of 5,000+ tokens ($0.00075 each),
    # not for twenty at once.
    ok, refused = await crowd(20, lambda: client.responses.create(
        model="gpt-4o-mini", input="and then?", previous_response_id=first.id,
        max_output_tokens=20))
    spent, largest = await spent_and_largest(gw, ok + 1)
    assert spent <= Decimal("0.0030") + largest
    assert refused and ok >= 1
    counter = gw.state.quota.book.peek("tenant:acme", "day", datetime.now(timezone.utc))
    assert counter is not None and counter.reserved == counter.exposure == counter.lane == 0


async def test_a_continuation_is_sized_from_the_ledger_after_a_restart(upstream, tmp_path):
    data = gateway_config(upstream.url, tmp_path, cfg({"daily_usd": "0.0014"}))
    gw = await start_gateway(parse_settings(data))
    client = gw.client("sk-acme")
    upstream.usage["/v1/responses"] = {"input_tokens": 6000}  # a prompt held upstream
    first = await client.responses.create(model="gpt-4o-mini", input="hello",
                                          max_output_tokens=20)
    del upstream.usage["/v1/responses"]
    await gw.ledger_rows(1)
    await gw.stop()
    again = await start_gateway(parse_settings(data))  # a new process: nothing in memory
    try:
        client = again.client("sk-acme")
        # $0.0014 - $0.00091 spent leaves $0.0005: the continuation carries 6,020 tokens
        # ($0.0009) and is refused before it reaches the upstream; a fresh call fits.
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(model="gpt-4o-mini", input="go on",
                                          previous_response_id=first.id, max_output_tokens=20)
        assert info.value.body["code"] == "budget_exceeded"
        assert len(upstream.requests) == 1
        await client.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=20)
    finally:
        await again.stop()


async def reserved_while_in_flight(gw, upstream, call) -> int:
    """nano-USD the tenant holds while `call` is at the (slowed) upstream."""
    upstream.delay_s = 0.3
    task = asyncio.ensure_future(call())
    for _ in range(200):
        if upstream.in_flight:
            break
        await asyncio.sleep(0.01)
    counter = gw.state.quota.book.peek("tenant:acme", "day", datetime.now(timezone.utc))
    held = counter.reserved
    await task
    upstream.delay_s = 0.0
    return held


async def test_a_conversation_is_reserved_at_what_it_holds(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": "0.05"}))
    client = gw.client("sk-acme")
    upstream.usage["/v1/responses"] = {"input_tokens": 6000}
    await client.responses.create(model="gpt-4o-mini", input="hello",
                                  conversation="conv_big", max_output_tokens=20)
    del upstream.usage["/v1/responses"]
    held = await reserved_while_in_flight(gw, upstream, lambda: client.responses.create(
        model="gpt-4o-mini", input="more", conversation="conv_big", max_output_tokens=20))
    assert held >= (6020 * Decimal("0.15") * 1000)  # nano-USD of the 6,020 tokens it holds
    fresh = await reserved_while_in_flight(gw, upstream, lambda: client.responses.create(
        model="gpt-4o-mini", input="more", max_output_tokens=20))
    assert fresh < held / 10
    rows = await gw.ledger_rows(3)
    assert {r.conversation_id for r in rows} == {"conv_big", None}


O4 = {"input": "1.10", "cached_input": "0.275", "output": "4.40"}


async def test_reasoning_without_a_cap_is_reserved_at_the_models_longest_answer(
        make_gateway, upstream):
    # o4-mini may answer with 100,000 tokens ($0.44): a $0.05 budget cannot pay for a
    # call that sets no cap, where a flat 4,096-token reservation ($0.018) let one
    # through that really produced 16,000 ($0.07).
    gw = await make_gateway(cfg({"daily_usd": "0.05"}, pricing={"models": {"o4-mini": O4}}))
    upstream.usage["/v1/responses"] = {"output_tokens": 16_000}
    client = gw.client("sk-acme")
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="o4-mini", input="think hard")
    assert info.value.body["code"] == "budget_exceeded"
    assert upstream.requests == []
    await client.responses.create(model="o4-mini", input="think", max_output_tokens=8000)


async def test_clamp_output_writes_the_cap_the_budget_buys(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": "0.05", "clamp_output": True},
                                pricing={"models": {"o4-mini": O4}}))
    client = gw.client("sk-acme")
    # A call whose own cap is affordable is left as it is.
    await client.responses.create(model="o4-mini", input="hi", max_output_tokens=100)
    assert upstream.last_request.json["max_output_tokens"] == 100
    upstream.usage["/v1/responses"] = {"output_tokens": 100_000}  # as much as it may
    await client.responses.create(model="o4-mini", input="think hard")
    cap = upstream.last_request.json["max_output_tokens"]
    assert 16 <= cap < 100_000
    assert Decimal(cap) * Decimal("4.40") / M <= Decimal("0.05") < Decimal(cap + 100) * Decimal(
        "4.40") / M  # what the budget buys, nearly all of it
    rows = await gw.ledger_rows(2)
    assert sum(r.cost_nanos for r in rows) <= 50_000_000  # the answers stayed within it


async def test_clamped_streams_still_get_their_usage_chunk(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": "0.005", "clamp_output": True}))
    client = gw.client("sk-acme")
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                  stream=True)
    async for _ in stream:
        pass
    sent = upstream.last_request.json
    assert 16 <= sent["max_completion_tokens"] < 16384
    assert sent["stream_options"]["include_usage"] is True
    rows = await gw.ledger_rows(1)
    assert rows[0].tokens["output"] == 20 and not rows[0].estimated


async def test_far_from_its_limit_a_tenant_is_never_made_to_wait(make_gateway, upstream):
    gw = await make_gateway(cfg({"monthly_usd": "1000"}))
    upstream.gather = 100  # the upstream answers once all 100 are in flight together
    client = gw.client("sk-acme")
    ok, refused = await crowd(100, lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO))
    assert ok == 100 and not refused
    assert upstream.peak_in_flight == 100  # none waited for another's turn
