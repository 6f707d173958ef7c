"""Every limit across replicas: several faregate apps on one embedded PostgreSQL.

Two and three apps in this test process share one ledger database, as
replicas behind a load balancer would. Calls are spread across them; what the
ledger holds afterwards must keep each limit within the bound README states:
USD spent ≤ limit + one call; rpm ≤ the limit per UTC minute window;
concurrent sessions exactly the cap. And a voice-only tenant's first session
is admitted on every replica at $0 spent (issue #26).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from decimal import Decimal
from itertools import cycle

import asyncpg
import openai
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import gateway_config, start_gateway
from fake_sessions import FakeSessions
from faregate.proxy import parse_settings

MINI = {"input": "0.15", "output": "0.60"}
RT = {"input": "4", "cached_input": "0.4", "output": "16", "audio_input": "32",
      "cached_audio_input": "0.4", "audio_output": "64"}
HELLO = [{"role": "user", "content": "two words"}]
AUTH = {"Authorization": "Bearer sk-acme"}
M = Decimal(1_000_000)


@pytest.fixture
async def replicas(pg_database, tmp_path):
    """Factory: `await replicas(n, upstream_url, tenant)` -> n gateways on one database."""
    from embedded_pg import reset_database

    await reset_database(pg_database)
    started = []

    async def make(n: int, upstream: str, tenant: dict, **extra) -> list:
        for i in range(n):
            data = gateway_config(upstream, tmp_path, {
                "pricing": {"models": {"gpt-4o-mini": MINI, "gpt-realtime": RT}},
                "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(),
                          "tenant": "acme"}],
                "tenants": {"acme": tenant}, **extra}, db=f"replica{len(started)}.db")
            data["storage"]["url"] = pg_database
            data["storage"]["lease_max_fraction"] = "0.1"
            started.append(await start_gateway(parse_settings(data)))
        return started[-n:]

    yield make
    for gw in started:
        await gw.stop()


async def ledger(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def flush(gateways) -> None:
    for gw in gateways:
        await gw.state.ledger.flush()


async def spread(gateways, n: int, call) -> tuple[int, list[str]]:
    """`n` calls at once, round-robin over the replicas: (answered, refusal codes)."""
    clients = cycle([gw.client("sk-acme") for gw in gateways])

    async def one(client):
        try:
            await call(client)
            return None
        except openai.RateLimitError as exc:
            return exc.body["code"]
    results = await asyncio.gather(*(one(next(clients)) for _ in range(n)))
    return sum(r is None for r in results), [r for r in results if r is not None]


@pytest.mark.parametrize("n", [2, 3])
async def test_usd_budget_across_replicas_passed_by_at_most_one_call(
        replicas, upstream, pg_database, n):
    per_call = (1000 * Decimal("0.15") + 20 * Decimal("0.60")) / M  # 1,000 hidden tokens
    limit = per_call * 15
    gateways = await replicas(n, upstream.url, {"daily_usd": str(limit)})
    upstream.usage["/v1/chat/completions"] = {"prompt_tokens": 1000}
    upstream.delay_s = 0.02
    ok, refused = await spread(gateways, 90, lambda c: c.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=20))
    await flush(gateways)
    [(spent, largest, rows)] = await ledger(
        pg_database, "SELECT SUM(cost_nanos), MAX(cost_nanos), COUNT(*) FROM charges")
    spent, largest = Decimal(spent).scaleb(-9), Decimal(largest).scaleb(-9)
    print(f"\n{n} replicas: {ok} answered, spent {spent} of {limit} "
          f"(overshoot {spent - limit}, one call {largest})")
    assert rows == ok and refused
    assert spent <= limit + largest


@pytest.mark.parametrize("n", [2, 3])
async def test_rpm_across_replicas_is_one_allowance_per_minute(replicas, upstream, n):
    gateways = await replicas(n, upstream.url, {"rpm": 30})
    first = int(time.time() // 60)
    ok, refused = await spread(gateways, 30 * n, lambda c: c.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=5))
    windows = int(time.time() // 60) - first + 1  # the burst may straddle a minute
    print(f"\n{n} replicas, rpm 30: {ok} of {30 * n} admitted in {windows} window(s)")
    assert ok <= 30 * windows and refused
    assert set(refused) == {"rate_limit_exceeded"}
    assert ok >= 30 // 2  # the allowance was used (what is parked in slices is bounded)


async def test_tpm_and_upstream_rpm_across_replicas(replicas, upstream, pg_database):
    # 900 tokens a minute, whichever replica the calls reach (each estimates ~60 and
    # uses 14: 9 prompt + 5 output; what a call did not use goes back to the window);
    # the operator's account allows 12 requests a minute across all of them.
    gateways = await replicas(3, upstream.url, {"tpm": 900})
    first = int(time.time() // 60)
    ok, refused = await spread(gateways, 150, lambda c: c.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=5))
    windows = int(time.time() // 60) - first + 1
    await flush(gateways)
    [(tokens,)] = await ledger(pg_database, "SELECT SUM(input_tokens + output_tokens) "
                                            "FROM charges")
    assert 0 < tokens <= 900 * windows and set(refused) == {"rate_limit_exceeded"}
    shared = await replicas(3, upstream.url, {}, upstream_limits={"rpm": 12})
    first = int(time.time() // 60)
    ok, refused = await spread(shared, 36, lambda c: c.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=5))
    windows = int(time.time() // 60) - first + 1
    assert 0 < ok <= 12 * windows and set(refused) == {"upstream_limit"}


async def test_image_cap_across_replicas(replicas, upstream):
    gateways = await replicas(3, upstream.url, {"max_images_per_day": 4})
    clients = cycle([gw.client("sk-acme") for gw in gateways])
    made = 0
    for _ in range(9):
        try:
            await next(clients).images.generate(model="gpt-image-1", prompt="a cat", n=1,
                                                size="1024x1024", quality="low")
            made += 1
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "request_quota_exceeded"
    assert made == 4


async def test_request_cap_across_replicas(replicas, upstream, pg_database):
    gateways = await replicas(3, upstream.url, {"max_requests_per_day": 20})
    ok, refused = await spread(gateways, 60, lambda c: c.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=5))
    assert ok <= 20 and set(refused) == {"request_quota_exceeded"}
    await flush(gateways)
    [(rows,)] = await ledger(pg_database, "SELECT COUNT(*) FROM charges")
    assert rows == ok


async def test_a_continuation_is_sized_on_another_replica(replicas, upstream):
    a, b = await replicas(2, upstream.url, {"daily_usd": "0.0014"})
    upstream.usage["/v1/responses"] = {"input_tokens": 6000}
    first = await a.client("sk-acme").responses.create(model="gpt-4o-mini", input="hello",
                                                       max_output_tokens=20)
    del upstream.usage["/v1/responses"]
    await a.state.ledger.flush()
    with pytest.raises(openai.RateLimitError) as info:  # carries 6,020 tokens ($0.0009)
        await b.client("sk-acme").responses.create(model="gpt-4o-mini", input="go on",
                                                   previous_response_id=first.id,
                                                   max_output_tokens=20)
    assert info.value.body["code"] == "budget_exceeded"


@pytest.fixture
async def rt_upstream():
    async with FakeSessions() as fake:
        yield fake


def ws_url(gw) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"


async def upgrade(gw):
    try:
        return await websockets.connect(ws_url(gw), additional_headers=AUTH)
    except InvalidStatus as exc:
        return exc.response.status_code, json.loads(exc.response.body)["error"]["code"]


async def respond(ws) -> None:
    """One response in an open session, then close it."""
    try:
        await ws.recv()
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] not in ("response.done", "error"):
            pass
    except ConnectionClosed:
        pass
    await ws.close()


@pytest.mark.parametrize("n", [2, 3])
async def test_concurrent_sessions_across_replicas(replicas, rt_upstream, n):
    rt_upstream.accept_delay_s = 0.1
    gateways = await replicas(n, rt_upstream.url, {"max_concurrent_sessions": 2})
    results = await asyncio.gather(*(upgrade(gw) for gw in gateways for _ in range(3)))
    opened = [r for r in results if not isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, tuple)]
    assert len(opened) == 2
    assert refused == [(429, "concurrent_sessions_exceeded")] * (3 * n - 2)
    for ws in opened:
        await ws.close()
    await asyncio.sleep(0.2)  # the slots go back to the shared rows
    again = await asyncio.gather(*(upgrade(gw) for gw in gateways[:2]))
    assert all(not isinstance(r, tuple) for r in again)
    for ws in again:
        await ws.close()


async def test_shared_upstream_sessions_across_replicas(replicas, rt_upstream):
    gateways = await replicas(3, rt_upstream.url, {},
                              upstream_limits={"max_concurrent_sessions": 4})
    results = await asyncio.gather(*(upgrade(gw) for gw in gateways for _ in range(3)))
    opened = [r for r in results if not isinstance(r, tuple)]
    assert len(opened) == 4
    assert {r for r in results if isinstance(r, tuple)} == {(429, "upstream_limit")}
    for ws in opened:
        await ws.close()


async def test_a_voice_only_tenant_starts_on_every_replica_at_zero_spent(
        replicas, rt_upstream, pg_database):
    """Issue #26: no REST call first; the upgrade leases its budget itself."""
    limit = Decimal("0.05")
    a, b = await replicas(2, rt_upstream.url, {"monthly_usd": str(limit)})
    for gw in (a, b):  # fresh replicas, $0 spent: each admits the first session
        ws = await upgrade(gw)
        assert not isinstance(ws, tuple), ws
        await ws.recv()
        await ws.close()
    # Spend the shared budget with responses on both replicas (~$0.004 each), until
    # each refuses a new session: a replica may still hold a slice the other cannot use.
    refused: set[int] = set()
    for turn in range(60):
        if turn % 2 in refused:
            continue
        ws = await upgrade((a, b)[turn % 2])
        if isinstance(ws, tuple):
            assert ws == (429, "budget_exceeded")
            refused.add(turn % 2)
            if len(refused) == 2:
                break
            continue
        await respond(ws)
    assert refused == {0, 1}  # the shared budget is spent: refused on both replicas
    for gw in (a, b):
        assert await upgrade(gw) == (429, "budget_exceeded")
    await flush((a, b))
    [(spent, largest)] = await ledger(
        pg_database, "SELECT SUM(cost_nanos), MAX(cost_nanos) FROM charges")
    spent, largest = Decimal(spent).scaleb(-9), Decimal(largest).scaleb(-9)
    print(f"\nvoice-only: spent {spent} of {limit}")
    assert spent <= limit + largest
