"""Cost so far in a Realtime/Live session, read by the official SDK's Realtime client.

With cost events on (per tier/tenant `session_cost_events = true`, or per
connection `?faregate_cost_events=1`, which never reaches the upstream), each
charged `response.done` / Live usage update is followed by one
`faregate.session.cost` event whose `cost_usd` is that charge's ledger row and
whose `session_cost_usd` ends equal to the session row. Off by default. The
upgrade's 101 answer carries the `x-faregate-budget-*` headers too.
"""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from faregate.storage import format_usd
from test_realtime import fake, rt_gateway, sessions_of, until, ws_url  # noqa: F401

COST = "faregate.session.cost"
LIMIT = Decimal("2")


async def turn(conn, text: str, seen: list):
    """A text turn; returns (response.done, the faregate.session.cost after it)."""
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    done = await until(conn, "response.done", seen)
    cost = await conn.recv()  # faregate's event comes right after the frame it follows
    seen.append(cost.type)
    return done, cost


async def test_cost_event_after_each_response_equals_ledger_and_session_row(rt_gateway, fake):
    gw = await rt_gateway({"tenants": {"default": {"daily_usd": str(LIMIT)}}})
    seen: list = []
    async with gw.client().realtime.connect(
            model="gpt-realtime", extra_query={"faregate_cost_events": "1"}) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        results = [await turn(conn, text, seen) for text in ("hello there", "and again", "x")]
    assert fake.sessions[0].query == {"model": "gpt-realtime"}  # the switch stayed here
    assert seen.count(COST) == 3
    [session] = await sessions_of(gw)
    rows = {r.response_id: r for r in await gw.ledger_rows(3)}
    total = 0
    for done, event in results:
        assert event.type == COST and event.event_id.startswith("fg_evt_")
        assert event.response_id == done.response.id
        row = rows[done.response.id]
        total += row.cost_nanos
        assert event.cost_usd == format_usd(row.cost_nanos)
        assert event.session_cost_usd == format_usd(total)
        assert event.remaining_usd == format_usd(int(LIMIT * 10**9) - total)
    assert results[-1][1].session_cost_usd == format_usd(session.cost_nanos)


async def test_cost_events_are_off_by_default_and_per_tier_or_connection(rt_gateway):
    gw = await rt_gateway({"tiers": {"voice": {"session_cost_events": True}},
                           "tenants": {"default": {"tier": "voice"}}})
    seen: list = []
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:  # tier: on
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        done, cost = await turn(conn, "hi", seen)
        assert cost.type == COST and cost.remaining_usd is None  # no USD limit
    async with gw.client().realtime.connect(
            model="gpt-realtime", extra_query={"faregate_cost_events": "0"}) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]})
        await conn.response.create()
        await until(conn, "response.done")
        await conn.response.create()  # what follows the first response.done: no cost event
        assert (await conn.recv()).type != COST

    plain = await rt_gateway()
    events: list = []
    async with plain.client().realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for _ in range(2):
            await conn.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "a"}]})
            await conn.response.create()
            await until(conn, "response.done", events)
        await conn.session.update(session={"type": "realtime"})
        await until(conn, "session.updated", events)
    assert COST not in events


async def test_live_usage_updates_get_cost_events(rt_gateway):
    gw = await rt_gateway({"tenants": {"default": {"session_cost_events": True}}})
    costs = []
    async with gw.client().live.connect() as conn:
        await conn.send({"type": "session.start", "session": {"model": "gpt-live-1"}})
        await until(conn, "session.started")
        for _ in range(3):
            await conn.send({"type": "session.input_audio.append",
                             "audio": base64.b64encode(b"\0" * 960).decode()})
            await until(conn, "session.usage.updated")
            costs.append(await until(conn, COST))
        await conn.send({"type": "session.close"})
        await until(conn, "session.closed")
    [session] = await sessions_of(gw)
    assert [c.response_id for c in costs] == ["live:1", "live:2", "live:3"]
    assert costs[-1].session_cost_usd == format_usd(session.cost_nanos)
    assert sum(Decimal(c.cost_usd) for c in costs) == Decimal(costs[-1].session_cost_usd)


async def test_upgrade_answer_carries_budget_headers_and_a_bad_switch_is_refused(
        rt_gateway, fake):
    gw = await rt_gateway({"tenants": {"default": {"monthly_usd": "3"}}})
    async with websockets.connect(ws_url(gw), additional_headers={
            "Authorization": "Bearer sk-test-client"}) as ws:
        headers = ws.response.headers
        assert headers["x-faregate-budget-limit"] == "3.000000"
        assert headers["x-faregate-budget-scope"] == "tenant:default:month"
        assert Decimal(headers["x-faregate-budget-remaining"]) <= 3
        assert int(headers["x-faregate-budget-reset"]) > 0
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(ws_url(gw, "/v1/realtime?model=gpt-realtime"
                                                 "&faregate_cost_events=maybe")):
            pass
    assert info.value.response.status_code == 400
    assert len(fake.sessions) == 1


async def test_a_browser_with_an_ephemeral_key_reads_its_minting_tenants_quota(rt_gateway):
    import hashlib

    gw = await rt_gateway({
        "keys": [{"sha256": hashlib.sha256(b"sk-acme-backend").hexdigest(), "tenant": "acme"}],
        "tenants": {"acme": {"daily_usd": "1.5", "client_secrets": "allow",
                             "max_session_seconds": 60}}})
    secret = await gw.client("sk-acme-backend").realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"})
    quota = await gw.client(secret.value).get("/faregate/quota", cast_to=object)
    assert quota["tenant"] == "acme" and quota["limits"][0]["limit"] == "1.500000"
