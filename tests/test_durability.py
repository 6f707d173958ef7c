"""Zero-loss recording, end to end: `faregate serve` killed or starved of its database.

Each test drives a real `faregate serve` process with a bounded load of
metered requests, breaks something mid-load, and then checks the ledger the
way an operator would: every request that got a 200 has exactly one charge.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import asyncpg

from test_serve import start_serve, stop

N_REQUESTS = 240
CONCURRENCY = 12
LOAD_DEADLINE_S = 60


def serve_config(tmp_path: Path, upstream_url: str, ledger_url: str, **storage) -> Path:
    lines = [
        "[server]", f'upstream = "{upstream_url}"', "[storage]", f'url = "{ledger_url}"',
        f'journal_dir = "{tmp_path / "journal"}"', "flush_interval_ms = 50",
        *(f"{k} = {v}" for k, v in storage.items()),
    ]
    path = tmp_path / "faregate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Load:
    """N embeddings calls through faregate, `CONCURRENCY` at a time; remembers the 200s."""

    def __init__(self, url: str, n: int = N_REQUESTS):
        self.url = url
        self.pending = list(range(n))
        self.ok: set[str] = set()  # x-faregate-request-id of each 200
        self.failed = 0
        self.started = 0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            await asyncio.wait_for(
                asyncio.gather(*(self._worker(s) for _ in range(CONCURRENCY))), LOAD_DEADLINE_S
            )

    async def _worker(self, s: aiohttp.ClientSession) -> None:
        while self.pending:
            i = self.pending.pop()
            self.started += 1
            try:
                async with s.post(
                    self.url + "/v1/embeddings",
                    json={"model": "text-embedding-3-small", "input": f"call {i} a b"},
                    headers={"authorization": "Bearer sk-test"},
                ) as r:
                    await r.read()
                    if r.status == 200:
                        self.ok.add(r.headers["x-faregate-request-id"])
                    else:
                        self.failed += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.failed += 1

    async def until_ok(self, count: int) -> None:
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while len(self.ok) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


async def charged_request_ids(ledger_url: str) -> list[str]:
    if ledger_url.startswith("sqlite:///"):
        conn = sqlite3.connect(ledger_url[len("sqlite:///"):])
        try:
            return [r for (r,) in conn.execute("SELECT request_id FROM charges")]
        finally:
            conn.close()
    conn = await asyncpg.connect(ledger_url)
    try:
        return [r[0] for r in await conn.fetch("SELECT request_id FROM charges")]
    finally:
        await conn.close()


async def assert_rollups_match_rows(ledger_url: str) -> None:
    """Totals from rollups equal the raw rows, to the nano-dollar (a batch cut off
    by kill -9 left neither its charges nor its sums)."""
    from faregate.storage import Ledger

    if ledger_url.startswith("sqlite:///"):
        conn = sqlite3.connect(ledger_url[len("sqlite:///"):])
        try:
            raw = conn.execute("SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0) FROM charges").fetchone()
        finally:
            conn.close()
    else:
        conn = await asyncpg.connect(ledger_url)
        try:
            raw = tuple(await conn.fetchrow(
                "SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0) FROM charges"))
        finally:
            await conn.close()
    lg = await Ledger.open(ledger_url)
    try:
        report = await lg.usage(None, None, "tenant")
    finally:
        await lg.close()
    assert (report.total_requests, report.total_cost_nanos) == (int(raw[0]), int(raw[1]))


async def test_kill_9_mid_load_loses_no_charge(ledger_url, tmp_path, upstream):
    config = serve_config(tmp_path, upstream.url, ledger_url)
    proc, url = await start_serve(tmp_path, "--config", str(config))
    load = Load(url)
    running = asyncio.create_task(load.run())
    try:
        await load.until_ok(N_REQUESTS // 3)
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        await running
    finally:
        if proc.returncode is None:
            proc.kill()
    assert N_REQUESTS // 3 <= len(load.ok) < N_REQUESTS
    assert list((tmp_path / "journal").glob("segment-*"))  # the crash left a journal

    proc, url = await start_serve(tmp_path, "--config", str(config))  # replays at start
    assert await stop(proc) == 0
    charged = await charged_request_ids(ledger_url)
    assert len(charged) == len(set(charged))  # nothing doubled
    assert load.ok <= set(charged)  # every 200 is charged
    assert len(charged) <= load.started  # and nothing invented
    assert not list((tmp_path / "journal").glob("segment-*"))
    await assert_rollups_match_rows(ledger_url)


async def test_postgres_outage_mid_load_is_absorbed_by_the_journal(
    postgres, pg_database, tmp_path, upstream
):
    from embedded_pg import reset_database

    await reset_database(pg_database)
    config = serve_config(tmp_path, upstream.url, pg_database, queue_limit=20, batch_size=10)
    proc, url = await start_serve(tmp_path, "--config", str(config))
    load = Load(url)
    running = asyncio.create_task(load.run())
    async with aiohttp.ClientSession() as s:
        try:
            await load.until_ok(N_REQUESTS // 4)
            await asyncio.to_thread(postgres.stop)
            await load.until_ok(N_REQUESTS // 2)  # requests keep being served meanwhile
            await asyncio.sleep(0.3)
            async with s.get(url + "/readyz") as r:
                ready = await r.json()
                assert r.status == 503 and ready["reasons"]["ledger"], ready
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            assert metric(text, "faregate_ledger_journal_bytes") > 0
            assert metric(text, "faregate_ledger_queue_depth") <= 20
            assert metric(text, "faregate_ledger_oldest_unwritten_seconds") > 0
        finally:
            await asyncio.to_thread(postgres.start)
        await running
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:  # the backlog drains with the server still up
            async with s.get(url + "/readyz") as r:
                ready_again = r.status == 200
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            if ready_again and metric(text, "faregate_ledger_oldest_unwritten_seconds") == 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the backlog did not drain:\n" + text)
    charged = await charged_request_ids(pg_database)
    assert await stop(proc) == 0
    assert len(load.ok) == N_REQUESTS
    assert sorted(charged) == sorted(load.ok)
    assert metric(text, 'faregate_ledger_records_total{result="replayed"}') > 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (name.endswith("}") and line.startswith(name)):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
