"""Azure OpenAI as the upstream, through the official SDK.

faregate forwards `/v1/...` to `upstream + same path`, so `upstream =
"…/openai"` reaches Azure's v1 API; `[server] upstream_auth = "api-key"`
sends the credential in Azure's `api-key` header; `[pricing.aliases]` maps
deployment names to priced models. The fake upstream's Azure mode serves
`/openai/v1/...`, refuses bearer tokens and unknown deployments, and
answers with the deployed model's name, as Azure does.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import openai
import pytest

from fake_sessions import FakeSessions
from fake_upstream import FakeUpstream
from faregate.pricing import load_price_table

TEAM_KEY = "fg-team-key"
AZURE_KEY = "azure-key-0123456789"
DEPLOYMENTS = {"my-mini": "gpt-4o-mini", "my-embedder": "text-embedding-3-small",
               "my-voice": "gpt-realtime"}
ALIASES = {"my-mini": "gpt-4o-mini", "my-embedder": "text-embedding-3-small",
           "my-voice": "gpt-realtime"}
HELLO = [{"role": "user", "content": "one two three"}]


@pytest.fixture
async def azure():
    async with FakeUpstream(azure_deployments=DEPLOYMENTS) as fake:
        fake.valid_keys = {AZURE_KEY}
        fake.add_route("GET", "/v1/realtime", FakeSessions().realtime)
        yield fake


@pytest.fixture
def azure_gateway(azure, make_gateway, monkeypatch):
    """faregate in front of the fake Azure resource (conftest's make_gateway)."""
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)

    async def make(mode: str = "keys", aliases: dict | None = None, **extra):
        return await make_gateway({
            "server": {"upstream": azure.url + "/openai", "upstream_auth": "api-key",
                       "upstream_api_key_env": "AZURE_OPENAI_API_KEY"},
            "identity": {"mode": mode},
            "keys": [{"sha256": hashlib.sha256(TEAM_KEY.encode()).hexdigest(),
                      "tenant": "search"}],
            "pricing": {"aliases": ALIASES if aliases is None else aliases},
            **extra})
    return make


def cost(model: str, prompt: int, completion: int) -> Decimal:
    entry = load_price_table().entry(model)
    return (prompt * entry.rate("input") + completion * (entry.rate("output") or 0)) / 1_000_000


async def test_keys_mode_sends_the_azure_key_in_api_key_and_prices_deployments(
    azure, azure_gateway
):
    gw = await azure_gateway(tiers={"team": {"models": ["gpt-4o-mini", "text-embedding-3-small"],
                                             "daily_usd": "5"}},
                             tenants={"search": {"tier": "team"}})
    client = gw.client(TEAM_KEY)
    chat = await client.chat.completions.create(model="my-mini", messages=HELLO)
    assert chat.model == "gpt-4o-mini-2024-07-18"  # Azure names the deployed model
    seen = azure.last_request
    assert seen.path == "/openai/v1/chat/completions"
    assert seen.headers["api-key"] == AZURE_KEY and "authorization" not in seen.headers

    stream = await client.chat.completions.create(model="my-mini", messages=HELLO, stream=True)
    assert [c async for c in stream]
    await client.embeddings.create(model="my-embedder", input="a b c")

    rows = sorted(await gw.ledger_rows(3), key=lambda r: r.endpoint)
    chat_rows = [r for r in rows if r.endpoint == "/v1/chat/completions"]
    assert [r.tenant for r in rows] == ["search"] * 3
    for row in chat_rows:
        assert row.cost_nanos == int(cost("gpt-4o-mini", 10, 20) * 10**9)
    embed = next(r for r in rows if r.endpoint == "/v1/embeddings")
    assert embed.tokens["input"] == 3
    assert embed.cost_nanos == int(cost("text-embedding-3-small", 3, 0) * 10**9)


async def test_an_unmapped_deployment_is_outside_the_allowlist(azure, azure_gateway):
    gw = await azure_gateway(aliases={}, tiers={"team": {"models": ["gpt-4o-mini"]}},
                             tenants={"search": {"tier": "team"}})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await gw.client(TEAM_KEY).chat.completions.create(model="my-mini", messages=HELLO)
    assert refused.value.code == "model_not_allowed"
    assert not [r for r in azure.requests if r.path.endswith("/chat/completions")]


async def test_passthrough_forwards_the_callers_own_azure_key_as_api_key(azure, azure_gateway):
    gw = await azure_gateway(mode="passthrough")
    await gw.client(AZURE_KEY).chat.completions.create(model="my-mini", messages=HELLO)
    assert azure.last_request.headers["api-key"] == AZURE_KEY
    with pytest.raises(openai.AuthenticationError):  # Azure's own 401 comes back
        await gw.client("not-an-azure-key").chat.completions.create(
            model="my-mini", messages=HELLO)
    with pytest.raises(openai.NotFoundError) as missing:  # and its 404 for a deployment
        await gw.client(AZURE_KEY).chat.completions.create(model="nobody", messages=HELLO)
    assert missing.value.code == "DeploymentNotFound"


async def test_a_realtime_session_on_an_azure_deployment(azure, azure_gateway):
    gw = await azure_gateway()
    client = gw.client(TEAM_KEY)
    async with client.realtime.connect(model="my-voice") as conn:
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello azure"}]})
        await conn.response.create(response={"output_modalities": ["text"]})
        async for event in conn:
            if event.type == "response.done":
                break
    upgrade = next(r for r in azure.requests if r.path == "/openai/v1/realtime")
    assert upgrade.headers["api-key"] == AZURE_KEY and "authorization" not in upgrade.headers
    assert upgrade.query["model"] == "my-voice"
    [row] = await gw.ledger_rows(1)
    assert row.endpoint == "/v1/realtime" and row.model == "my-voice"
    assert row.priced and row.cost_nanos > 0  # priced as gpt-realtime through the alias
