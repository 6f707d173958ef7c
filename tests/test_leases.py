"""Two replicas on one PostgreSQL share a budget through leases.

Two real `faregate serve` processes take concurrent load for one tenant.
The invariant: together they never spend past the limit, they do use most of
it (capacity stranded in leases is bounded), and at shutdown they return
what they did not spend, so the shared row equals the ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg

from test_serve import start_serve, stop

PER_CALL_NANOS = 13_500  # 10 prompt tokens x $0.15/M + 20 completion x $0.60/M
LIMIT_CALLS = 200
LIMIT_NANOS = LIMIT_CALLS * PER_CALL_NANOS
LEASE_FRACTION = Decimal("0.1")
CALLS_PER_REPLICA = 300
CONCURRENCY = 8


def config(tmp_path: Path, name: str, upstream: str, ledger_url: str) -> Path:
    path = tmp_path / f"{name}.toml"
    digest = hashlib.sha256(b"sk-acme").hexdigest()
    path.write_text(
        f'[server]\nupstream = "{upstream}"\n'
        f'[storage]\nurl = "{ledger_url}"\njournal_dir = "{tmp_path / name}"\n'
        f"flush_interval_ms = 50\nlease_max_fraction = {LEASE_FRACTION}\n"
        f'[[keys]]\nsha256 = "{digest}"\ntenant = "acme"\n'
        f'[tenants.acme]\nmonthly_usd = "{Decimal(LIMIT_NANOS).scaleb(-9)}"\n'
        "default_max_output_tokens = 20\n"
        '[pricing.models."gpt-4o-mini"]\ninput = "0.15"\noutput = "0.60"\n'
    )
    return path


async def hammer(url: str) -> tuple[int, int]:
    ok = refused = 0
    pending = list(range(CALLS_PER_REPLICA))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}]}

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal ok, refused
        while pending:
            pending.pop()
            async with s.post(url + "/v1/chat/completions", json=body,
                              headers={"authorization": "Bearer sk-acme"}) as r:
                await r.read()
                if r.status == 200:
                    ok += 1
                elif r.status == 429:
                    refused += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        await asyncio.wait_for(asyncio.gather(*(worker(s) for _ in range(CONCURRENCY))), 60)
    return ok, refused


async def test_two_replicas_stay_within_one_budget(tmp_path, upstream, pg_database):
    from embedded_pg import reset_database

    await reset_database(pg_database)
    a, url_a = await start_serve(tmp_path, "--config",
                                 str(config(tmp_path, "a", upstream.url, pg_database)))
    b, url_b = await start_serve(tmp_path, "--config",
                                 str(config(tmp_path, "b", upstream.url, pg_database)))
    try:
        (ok_a, refused_a), (ok_b, refused_b) = await asyncio.gather(hammer(url_a),
                                                                    hammer(url_b))
    finally:
        assert await stop(a) == 0
        assert await stop(b) == 0
    conn = await asyncpg.connect(pg_database)
    try:
        spent = await conn.fetchval("SELECT COALESCE(SUM(cost_nanos), 0) FROM charges")
        calls = await conn.fetchval("SELECT COUNT(*) FROM charges")
        leased = await conn.fetchval("SELECT leased_nanos FROM budget_leases "
                                     "WHERE scope = 'tenant:acme' AND period = 'month'")
    finally:
        await conn.close()
    print(f"\nreplica a: {ok_a} ok {refused_a} refused; b: {ok_b} ok {refused_b} refused; "
          f"spent {spent} of {LIMIT_NANOS} nanos ({spent / LIMIT_NANOS:.1%}), leased {leased}")
    assert calls == ok_a + ok_b and refused_a > 0 and refused_b > 0
    assert ok_a > 0 and ok_b > 0  # both replicas served the tenant
    assert spent <= LIMIT_NANOS  # together, never past the limit
    # Stranded capacity is bounded by one slice per replica (plus one reservation each).
    slice_nanos = int(LIMIT_NANOS * LEASE_FRACTION)
    assert spent >= LIMIT_NANOS - 2 * slice_nanos - 2 * 3 * PER_CALL_NANOS
    assert leased == spent  # unspent slices were returned at shutdown
