"""`/metrics` shows every tenant's spend: a bearer token, or an address of its own.

Without either, the metrics stay open as before (loopback default), and
`serve` warns when `listen` is not loopback.
"""

from __future__ import annotations

import aiohttp
import pytest

from faregate.proxy import parse_settings
from faregate.proxy._scrape import exposure_warning
from test_serve import free_port

TOKEN = "metrics-token-123"


async def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=headers) as r:
            return r.status, await r.text()


async def test_the_token_is_required_when_configured(make_gateway, monkeypatch):
    monkeypatch.setenv("FG_METRICS_TOKEN", TOKEN)
    gw = await make_gateway({"server": {"metrics_token_env": "FG_METRICS_TOKEN"}})
    await gw.client().embeddings.create(model="text-embedding-3-small", input="a b")
    for token in (None, "", "wrong", TOKEN + "x", TOKEN[:-1]):
        status, text = await get(gw.url + "/metrics", token)
        assert status == 401 and "faregate_cost_usd" not in text, token
    status, text = await get(gw.url + "/metrics", TOKEN)
    assert status == 200 and "faregate_requests_total" in text
    monkeypatch.delenv("FG_METRICS_TOKEN")  # a variable gone missing closes, never opens
    status, text = await get(gw.url + "/metrics", TOKEN)
    assert status == 401 and "metrics_token_unset" in text


async def test_metrics_listen_serves_them_on_their_own_address(make_gateway, monkeypatch):
    port = free_port()
    monkeypatch.setenv("FG_METRICS_TOKEN", TOKEN)
    gw = await make_gateway({"server": {"metrics_listen": f"127.0.0.1:{port}",
                                        "metrics_token_env": "FG_METRICS_TOKEN"}})
    status, text = await get(gw.url + "/metrics", TOKEN)
    assert status == 404 and "metrics_listen" in text
    assert (await get(f"http://127.0.0.1:{port}/metrics"))[0] == 401
    status, text = await get(f"http://127.0.0.1:{port}/metrics", TOKEN)
    assert status == 200 and "faregate_ledger_queue_depth" in text
    assert (await get(f"http://127.0.0.1:{port}/v1/models"))[0] == 404  # metrics only


def server(**values):
    return parse_settings({"server": values}).server


@pytest.mark.parametrize("settings,env,warns", [
    (server(), {}, False),  # loopback default
    (server(listen="0.0.0.0:8787"), {}, True),
    (server(listen="[::]:8787"), {}, True),
    (server(listen="faregate.internal:8787"), {}, True),
    (server(listen="0.0.0.0:8787", metrics_token_env="T"), {"T": "x"}, False),
    (server(listen="0.0.0.0:8787", metrics_token_env="T"), {}, True),  # variable unset
    (server(listen="0.0.0.0:8787", metrics_listen="127.0.0.1:9787"), {}, False),
    (server(listen="127.0.0.1:8787", metrics_listen="0.0.0.0:9787"), {}, True),
])
def test_serve_warns_when_metrics_are_open_beyond_loopback(settings, env, warns):
    """What `faregate serve` prints at start (tests bind loopback only, so the table
    checks the rule itself)."""
    warning = exposure_warning(settings, environ=env)
    assert (warning is not None) == warns
    if warns:
        assert "metrics_token_env" in warning and "metrics_listen" in warning
