"""Background responses: reserved at create, charged once with their real usage when final.

The official SDK creates `background: true` responses through faregate against
the fake upstream (tests/fake_responses.py), which finishes them a little
later. Whoever learns first that a response is final — a client poll, a
stream resume, a cancel, or faregate's own follow-up (also after a restart)
— the ledger gets one row with the usage the final response reports, and the
reservation held since the create is settled to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime, timezone
from decimal import Decimal

import openai
import pytest

from conftest import gateway_config, start_gateway
from fake_responses import FakeResponses
from faregate.proxy import parse_settings

M = Decimal(1_000_000)
# gpt-4o: $2.50 / $10.00 per 1M tokens. The fake reports this much for every response:
REPORTED = {"input_tokens": 500, "output_tokens": 900}
PER_RESPONSE = (500 * Decimal("2.50") + 900 * Decimal("10.00")) / M  # $0.01025
PER_RESPONSE_NANOS = int(PER_RESPONSE * 10**9)


def key(name: str) -> dict:
    return {"sha256": hashlib.sha256(name.encode()).hexdigest()}


def cfg(monthly: str = "1.00", **server) -> dict:
    return {"server": {"background_poll_s": 0.2, **server},
            "keys": [{**key("sk-acme"), "tenant": "acme"}],
            "tenants": {"acme": {"monthly_usd": monthly}}}


@pytest.fixture
def responses(upstream):
    fake = FakeResponses(upstream)
    upstream.usage["/v1/responses"] = dict(REPORTED)
    return fake


def counter(gw, tenant: str = "acme"):
    return gw.state.quota.book.peek(f"tenant:{tenant}", "month", datetime.now(timezone.utc))


async def charges(gw, n: int, timeout: float = 10.0) -> list:
    """Wait until `n` background charges are in the ledger (they come after the create)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in await gw.ledger_rows(n, timeout=0.1) if r.endpoint == "/v1/responses"]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def create(client, **kw):
    return await client.responses.create(model="gpt-4o", input="write a long story",
                                         background=True, max_output_tokens=1000, **kw)


async def test_polled_through_faregate_charged_once_with_the_real_usage(make_gateway, responses):
    gw = await make_gateway(cfg())
    client = gw.client("sk-acme")
    created = await create(client)
    assert created.status == "queued" and created.usage is None
    assert counter(gw).reserved > 0 and counter(gw).spent == 0  # held, not charged yet
    while (await client.responses.retrieve(created.id)).status != "completed":
        await asyncio.sleep(0.05)
    for _ in range(3):  # repeated polls charge nothing more
        await client.responses.retrieve(created.id)
    [row] = await charges(gw, 1)
    assert row.cost_nanos == PER_RESPONSE_NANOS and not row.estimated
    assert row.tokens["input"] == 500 and row.tokens["output"] == 900
    assert row.response_id == created.id and row.tags["background"] == created.id
    await asyncio.sleep(0.5)  # the follow-up, too, finds nothing left to charge
    assert len(await charges(gw, 2, timeout=0.2)) == 1
    assert counter(gw).spent == PER_RESPONSE_NANOS and counter(gw).reserved == 0


async def test_a_response_nobody_polls_is_followed_up_by_faregate(make_gateway, responses):
    gw = await make_gateway(cfg())
    created = await create(gw.client("sk-acme"))
    [row] = await charges(gw, 1)
    assert row.cost_nanos == PER_RESPONSE_NANOS and row.response_id == created.id
    assert responses.polls(created.id) >= 1  # faregate asked the upstream itself
    assert counter(gw).reserved == 0


async def test_the_200_calls_bypass_is_closed(make_gateway, responses):
    """Before: every background call was charged a prompt-size estimate and never refused.
    Now each holds its worst case until it is final: a $0.02 budget admits what it can
    pay for and the rest are refused; what is charged is what the upstream reported."""
    gw = await make_gateway(cfg(monthly="0.02"))
    client = gw.client("sk-acme")
    admitted = refused = 0
    for _ in range(20):
        try:
            await create(client)
            admitted += 1
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded"
            refused += 1
    assert refused >= 18 and admitted >= 1
    rows = await charges(gw, admitted)
    assert sum(r.cost_nanos for r in rows) == admitted * PER_RESPONSE_NANOS
    assert counter(gw).spent <= Decimal("0.02") * 10**9 + PER_RESPONSE_NANOS


async def test_cancel_settles_to_what_the_cancelled_response_reports(make_gateway, responses):
    responses.run_s = 30.0
    gw = await make_gateway(cfg(background_poll_s=30.0))
    client = gw.client("sk-acme")
    created = await create(client)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    [row] = await charges(gw, 1)
    assert row.tokens["input"] == 500 and row.tokens["output"] == responses.cancel_output
    assert counter(gw).reserved == 0


async def test_stream_resume_after_the_client_left_charges_once(make_gateway, responses):
    responses.event_delay_s = 0.05
    gw = await make_gateway(cfg(background_poll_s=30.0))
    client = gw.client("sk-acme")
    stream = await client.responses.create(model="gpt-4o", input="go", background=True,
                                           stream=True, max_output_tokens=1000)
    async for event in stream:
        rid = event.response.id  # response.created
        break
    await stream.close()
    await asyncio.sleep(0.2)
    assert await charges(gw, 1, timeout=0.3) == []  # left mid-stream: pending, not estimated
    resumed = await client.responses.retrieve(rid, stream=True, starting_after=0)
    async for event in resumed:
        pass
    [row] = await charges(gw, 1)
    assert row.cost_nanos == PER_RESPONSE_NANOS and not row.estimated


async def test_a_deleted_response_is_charged_its_reservation(make_gateway, responses, upstream):
    responses.run_s = 30.0
    gw = await make_gateway(cfg())
    client = gw.client("sk-acme")
    created = await create(client)
    held = counter(gw).reserved
    del responses.stored[created.id]  # gone upstream before it was ever read
    [row] = await charges(gw, 1)
    assert row.estimated and "background_unconfirmed" in row.flags
    assert abs(row.cost_nanos - held) <= 1 and counter(gw).reserved == 0


@pytest.mark.parametrize("mode", ["keys", "passthrough"])
async def test_pending_responses_survive_a_restart(upstream, responses, tmp_path, monkeypatch,
                                                   mode):
    """Pending ids live in the ledger: after a restart their holds are back and they are
    charged once — by faregate's own follow-up where it holds the upstream key (keys
    mode), else when a client polls."""
    monkeypatch.setenv("FG_BG_UPSTREAM_KEY", "sk-real")
    responses.run_s = 0.5
    extra = cfg()
    extra["server"]["upstream_api_key_env"] = "FG_BG_UPSTREAM_KEY"
    extra["identity"] = {"mode": mode}
    settings = parse_settings(gateway_config(upstream.url, tmp_path, extra))
    gw = await start_gateway(settings)
    created = await create(gw.client("sk-acme"))
    held = counter(gw).reserved
    await gw.stop()  # before the response is final
    gw = await start_gateway(settings)
    try:
        assert counter(gw).reserved == held
        if mode == "passthrough":
            await asyncio.sleep(1.0)
            assert await charges(gw, 1, timeout=0.2) == []  # no key to follow it up with
            assert (await gw.client("sk-acme").responses.retrieve(created.id)).status == \
                "completed"
        [row] = await charges(gw, 1)
        assert row.cost_nanos == PER_RESPONSE_NANOS
        assert counter(gw).reserved == 0 and counter(gw).spent == PER_RESPONSE_NANOS
    finally:
        await gw.stop()
    gw = await start_gateway(settings)  # and a third start charges nothing again
    try:
        await asyncio.sleep(0.5)
        assert len(await charges(gw, 2, timeout=0.2)) == 1
        assert counter(gw).reserved == 0
    finally:
        await gw.stop()


async def test_a_plain_response_is_charged_at_once(make_gateway, responses):
    gw = await make_gateway(cfg())
    await gw.client("sk-acme").responses.create(model="gpt-4o", input="hi")
    [row] = await charges(gw, 1)
    assert row.cost_nanos == PER_RESPONSE_NANOS
    assert gw.state.background.pending == {}


async def test_two_replicas_charge_a_pending_response_once(upstream, responses, tmp_path,
                                                           monkeypatch, pg_database):
    """Replicas on one PostgreSQL: a replica started while a response is pending adopts it
    too; both follow it up, the `final:` claim lets one charge it, the other lets go."""
    from embedded_pg import reset_database, run_sync

    run_sync(reset_database(pg_database))
    monkeypatch.setenv("FG_BG_UPSTREAM_KEY", "sk-real")
    responses.run_s = 1.0
    extra = cfg()
    extra["server"]["upstream_api_key_env"] = "FG_BG_UPSTREAM_KEY"
    extra["identity"] = {"mode": "keys"}

    def settings(name: str):
        data = gateway_config(upstream.url, tmp_path, extra, db=name)
        data["storage"]["url"] = pg_database
        return parse_settings(data)

    a = await start_gateway(settings("a.db"))
    b = None
    try:
        created = await create(a.client("sk-acme"))
        await a.state.ledger.flush()
        b = await start_gateway(settings("b.db"))
        assert created.id in b.state.background.pending
        deadline = time.monotonic() + 10
        while (a.state.background.pending or b.state.background.pending) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await a.state.ledger.flush()
        await b.state.ledger.flush()
        rows = [r for r in await a.state.ledger.logs(limit=10) if r.endpoint == "/v1/responses"]
        assert [r.cost_nanos for r in rows] == [PER_RESPONSE_NANOS]
        assert counter(a).reserved == 0 and counter(b).reserved == 0
    finally:
        await a.stop()
        if b is not None:
            await b.stop()
