"""Every response a Realtime session bills is reserved; concurrency caps hold at the upgrade.

Raw WebSocket frames against the fake Realtime upstream: server-VAD turns the
upstream starts by itself, out-of-band responses with large inline input,
several sessions of one tenant over context faregate cannot see, and many
upgrades at once under a concurrency cap. The promise: spent ≤ limit + one
response.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from test_session_limits import AUTH, fake, limited, url  # noqa: F401 (fixtures)

SECOND = base64.b64encode(b"\0" * 48_000).decode()  # one second of 24 kHz PCM16


async def spent(gw, responses: int) -> tuple[Decimal, Decimal]:
    """(spent, the dearest single response) from the ledger."""
    rows = await gw.ledger_rows(responses)
    costs = [Decimal(r.cost_nanos).scaleb(-9) for r in rows]
    return sum(costs, Decimal(0)), max(costs, default=Decimal(0))


async def until_done_or_end(ws) -> list[dict]:
    """Events up to the next response.done, an error, or the end of the session."""
    out = []
    try:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            out.append(event)
            if event["type"] in ("response.done", "error"):
                return out
    except ConnectionClosed:
        return out


async def turn_events(ws, on_created) -> list[dict]:
    """Events of one server-started turn, up to its response.done (or the cut)."""
    out = []
    try:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            out.append(event)
            if event["type"] == "response.created":
                on_created()
            if event["type"] in ("response.done", "error"):
                return out
    except ConnectionClosed:
        return out


def held(gw) -> int:
    counter = gw.state.quota.book.peek("tenant:acme", "day", datetime.now(timezone.utc))
    return counter.reserved if counter is not None else 0


async def test_server_vad_turns_are_reserved_and_the_session_cut_before_the_limit(
        limited, fake):
    # Each turn: 1 s of speech; the upstream answers it by itself over 2,000 tokens of
    # context the client never sent (~$0.012 a response). faregate saw no response.create.
    fake.vad, fake.hidden_input_tokens, fake.response_delay_s = True, 2000, 0.2
    limit = Decimal("0.03")
    gw = await limited({"daily_usd": str(limit)})
    reserved_in_flight: list[int] = []
    events: list[dict] = []
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()  # session.created (server VAD on)
        for _ in range(8):  # one turn at a time: speak, then hear the answer
            try:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": SECOND}))
            except ConnectionClosed:
                break
            turn = await turn_events(ws, lambda: reserved_in_flight.append(held(gw)))
            events += turn
            if not turn or turn[-1]["type"] == "error":
                break
    done = [e for e in events if e["type"] == "response.done"]
    total, one = await spent(gw, len(done))
    print(f"\nVAD: {len(done)} responses, spent {total} of {limit}, one {one}",
          reserved_in_flight, [e["type"] for e in events])
    assert all(h > 0 for h in reserved_in_flight)
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "budget_exceeded"
    assert ws.close_code == 1008
    assert total <= limit + one
    assert len(done) < 8


async def test_server_vad_output_cap_lowered_to_what_the_budget_buys(limited, fake):
    # A 4,096-token spoken answer costs $0.26: far more than $0.0103. faregate lowers the
    # session's output cap (its own session.update) when the session starts, and again
    # after each response, to what the budget left buys.
    fake.vad = fake.honour_caps = True
    limit = Decimal("0.0103")
    gw = await limited({"daily_usd": str(limit)})
    answers = []
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()
        for _ in range(2):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": SECOND}))
            turn = await turn_events(ws, lambda: None)
            assert turn[-1]["type"] == "response.done"
            answers.append(turn[-1]["response"]["usage"]["output_tokens"])
            for _ in range(50):  # faregate's session.update after the answer reaches upstream
                if len(caps(fake)) == len(answers) + 1:
                    break
                await asyncio.sleep(0.02)
    lowered = caps(fake)
    print(f"\ncaps {lowered}, answers {answers}")
    assert len(lowered) >= 3 and all(a > b for a, b in zip(lowered, lowered[1:]))
    assert 4096 > lowered[0] and lowered[-1] >= 16
    events = fake.sessions[0].events
    second_turn = [i for i, e in enumerate(events) if e["type"] == "input_audio_buffer.append"][1]
    in_force = caps_of(events[:second_turn])[-1]
    assert answers[1] <= in_force < answers[0]  # the second answer within the lowered cap
    total, one = await spent(gw, 2)
    assert total <= limit + one


def caps(fake) -> list[int]:
    return caps_of(fake.sessions[0].events)


def caps_of(events: list[dict]) -> list[int]:
    """The output caps faregate itself set with session.update (event id fg_cap)."""
    return [e["session"]["max_output_tokens"] for e in events
            if e["type"] == "session.update" and e.get("event_id") == "fg_cap"]


async def test_out_of_band_responses_with_large_inline_input(limited, fake):
    # Ten out-of-band responses sent at once, each with 20,000 words of inline input
    # and 10 output tokens: ~$0.08 each, reserved from the frame's own input (not the
    # 10 tokens asked for), so $0.25 is not passed by more than one of them.
    limit = Decimal("0.25")
    gw = await limited({"daily_usd": str(limit)})
    inline = [{"type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "word " * 20_000}]}]
    ask = json.dumps({"type": "response.create", "response": {
        "conversation": "none", "input": inline, "max_output_tokens": 10,
        "output_modalities": ["text"]}})
    events: list[dict] = []
    async with websockets.connect(url(gw), additional_headers=AUTH, max_size=None) as ws:
        await ws.recv()
        for _ in range(10):
            await ws.send(ask)
        try:
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        except ConnectionClosed:
            pass
    done = [e for e in events if e["type"] == "response.done"]
    total, one = await spent(gw, len(done))
    print(f"\nout of band: {len(done)} of 10 responses, spent {total} of {limit}")
    assert 0 < len(done) < 10 and total <= limit + one
    assert all(e["response"]["conversation_id"] is None for e in done)
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "budget_exceeded"


async def test_conversation_items_are_counted_before_the_response(limited, fake):
    gw = await limited({"daily_usd": "0.05"})
    async with websockets.connect(url(gw), additional_headers=AUTH, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "word " * 30_000}]}}))
        await ws.recv()  # conversation.item.added
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"max_output_tokens": 10}}))
        events = await until_done_or_end(ws)
    # 30,000 words cost $0.12 of input: more than the budget, refused before the upstream.
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "budget_exceeded"
    assert "response.create" not in fake.sessions[0].types()


async def test_several_sessions_of_one_tenant_over_hidden_context(limited, fake):
    # Ten sessions ask for a response at once, each over 5,000 tokens of context the
    # client never sent ($0.02 of input each): together far past a $0.1 budget.
    fake.hidden_input_tokens, fake.response_delay_s = 5000, 0.05
    limit = Decimal("0.1")
    gw = await limited({"daily_usd": str(limit)}, server={"admission_wait_s": 5.0})

    async def one_session() -> list[dict]:
        async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "response.create",
                                      "response": {"output_modalities": ["text"],
                                                   "max_output_tokens": 100}}))
            return await until_done_or_end(ws)
    ends = await asyncio.gather(*(one_session() for _ in range(10)))
    done = [e for events in ends for e in events if e["type"] == "response.done"]
    total, one = await spent(gw, len(done))
    print(f"\n10 sessions: {len(done)} responses, spent {total} of {limit}, one {one}")
    assert 0 < len(done) < 10
    assert total <= limit + one
    refusals = {e["error"]["code"] for events in ends for e in events if e["type"] == "error"}
    assert refusals <= {"budget_exceeded", "rate_limit_exceeded"}


async def test_ten_simultaneous_upgrades_under_a_cap_of_one(limited, fake):
    fake.accept_delay_s = 0.2  # every upgrade is dialling at the same time
    gw = await limited({"max_concurrent_sessions": 1})

    async def upgrade():
        try:
            ws = await websockets.connect(url(gw), additional_headers=AUTH)
        except InvalidStatus as exc:
            return exc.response.status_code, json.loads(exc.response.body)["error"]["code"]
        return 101, ws
    results = await asyncio.gather(*(upgrade() for _ in range(10)))
    opened = [r[1] for r in results if r[0] == 101]
    refused = [r for r in results if r[0] != 101]
    assert len(opened) == 1
    assert refused == [(429, "concurrent_sessions_exceeded")] * 9
    await opened[0].close()
    for _ in range(100):  # the slot is given back when the session ends
        if gw.state.quota.slots.held("sessions|tenant:acme") == 0:
            break
        await asyncio.sleep(0.02)
    async with websockets.connect(url(gw), additional_headers=AUTH) as again:
        await again.recv()


async def test_a_refused_dial_gives_its_slot_back(limited, fake):
    gw = await limited({"max_concurrent_sessions": 1})
    fake.refuse_next = (403, {"error": {"message": "no", "type": "invalid_request_error",
                                        "code": "nope", "param": None}})
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(gw), additional_headers=AUTH):
            pass
    assert info.value.response.status_code == 403
    assert gw.state.quota.slots.held("sessions|tenant:acme") == 0
    async with websockets.connect(url(gw), additional_headers=AUTH) as ws:
        await ws.recv()


async def test_shared_upstream_session_limit_under_simultaneous_upgrades(limited, fake):
    fake.accept_delay_s = 0.2
    gw = await limited({}, upstream_limits={"max_concurrent_sessions": 2})

    async def upgrade():
        try:
            return await websockets.connect(url(gw), additional_headers=AUTH)
        except InvalidStatus as exc:
            return exc.response.status_code
    results = await asyncio.gather(*(upgrade() for _ in range(10)))
    opened = [r for r in results if not isinstance(r, int)]
    assert len(opened) == 2 and results.count(429) == 8
    for ws in opened:
        await ws.close()
