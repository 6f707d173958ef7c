"""Identity modes: passthrough forwards the caller's key, keys mode swaps it."""

from __future__ import annotations

import hashlib

import openai
import pytest

HELLO = [{"role": "user", "content": "hi"}]
TEAM_KEY = "fg-team-search-0001"
REAL_KEY = "sk-real-upstream-key"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
async def keys_gateway(make_gateway, monkeypatch):
    monkeypatch.setenv("FG_TEST_UPSTREAM_KEY", REAL_KEY)
    monkeypatch.setenv("FG_TEST_BACKEND_KEY", "fg-backend-from-env")
    return await make_gateway({
        "server": {"upstream_api_key_env": "FG_TEST_UPSTREAM_KEY"},
        "identity": {"mode": "keys"},
        "tiers": {"pro": {}},
        "keys": [
            {"sha256": sha(TEAM_KEY), "tenant": "search", "user": "svc", "tier": "pro"},
            {"key_env": "FG_TEST_BACKEND_KEY", "tenant": "backend"},
        ],
    })


async def test_keys_mode_swaps_in_the_real_key(keys_gateway, upstream):
    await keys_gateway.client(TEAM_KEY).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    seen = upstream.last_request
    assert seen.api_key == REAL_KEY
    assert TEAM_KEY not in str(seen.headers)
    [row] = await keys_gateway.ledger_rows(1)
    assert (row.tenant, row.user) == ("search", "svc")


async def test_keys_mode_key_from_env(keys_gateway, upstream):
    await keys_gateway.client("fg-backend-from-env").embeddings.create(
        model="text-embedding-3-small", input="x")
    [row] = await keys_gateway.ledger_rows(1)
    assert row.tenant == "backend"


async def test_keys_mode_unknown_key_is_401_and_never_forwarded(keys_gateway, upstream):
    with pytest.raises(openai.AuthenticationError) as info:
        await keys_gateway.client("sk-who-knows").chat.completions.create(
            model="gpt-4o-mini", messages=HELLO)
    assert info.value.body["code"] == "invalid_api_key"
    assert info.value.body["type"] == "invalid_request_error"
    assert upstream.requests == []
    await keys_gateway.state.ledger.flush()
    assert await keys_gateway.state.ledger.logs() == []  # refusals cost nothing, no row
    assert ('faregate_requests_total{endpoint="/v1/chat/completions",model="none",'
            'status="401",tenant="default"} 1.0') in await keys_gateway.metrics_text()


async def test_passthrough_forwards_callers_key_and_maps_known_keys(make_gateway, upstream):
    gw = await make_gateway({"keys": [{"sha256": sha("sk-acme-own"), "tenant": "acme"}]})
    await gw.client("sk-acme-own").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert upstream.last_request.api_key == "sk-acme-own"
    await gw.client("sk-stranger").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert upstream.last_request.api_key == "sk-stranger"
    rows = await gw.ledger_rows(2)
    assert sorted(r.tenant for r in rows) == ["acme", "default"]


async def test_header_identity_only_when_allowed(make_gateway, upstream):
    headers = {"x-faregate-tenant": "globex", "x-faregate-user": "bob"}
    closed = await make_gateway()
    await closed.client(default_headers=headers).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO)
    [row] = await closed.ledger_rows(1)
    assert (row.tenant, row.user) == ("default", None)
    assert "x-faregate-tenant" not in upstream.last_request.headers

    opened = await make_gateway({"identity": {"allow_header_identity": True}})
    await opened.client(default_headers=headers).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO)
    [row] = await opened.ledger_rows(1)
    assert (row.tenant, row.user) == ("globex", "bob")
