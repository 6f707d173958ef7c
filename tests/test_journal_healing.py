"""The journal heals: a full disk is survived, said, refused where asked, and forgotten.

The journal lives on a tiny tmpfs (mounted here: needs root, as in CI; the
tests skip with the reason elsewhere), which a filler file fills up. While
the journal cannot write, charges wait in memory (bounded) and reach the
database; once the filler is gone the journal takes them again by itself —
and a `kill -9` after that loses nothing, even with the database locked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest

from faregate.storage import Ledger, LedgerRecord
from test_durability import Load, charged_request_ids, metric
from test_serve import start_serve, stop


def _mount(path: Path, size: str) -> str | None:
    """Mount a tmpfs at `path`; the reason when that is impossible."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs the suite as root)"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


@contextmanager
def tiny_disk(path: Path, size: str = "256k"):
    why = _mount(path, size)
    if why is not None:
        pytest.skip(why)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the filler to remove."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (4096, 512, 1):
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def rec(i: int) -> LedgerRecord:
    return LedgerRecord(tenant="acme", model="gpt-4o-mini", endpoint="/v1/chat/completions",
                        status=200, cost_nanos=1000 + i, tokens={"input": 3, "output": 1},
                        ts=datetime(2026, 11, 23, 12, tzinfo=timezone.utc))


async def until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class Locked:
    """The database refuses writes meanwhile (a store that fails its inserts)."""

    def __init__(self, store):
        self.store, self.dialect, self.where, self.down = store, store.dialect, store.where, False

    async def insert(self, rows):
        if self.down:
            raise sqlite3.OperationalError("database is locked")
        return await self.store.insert(rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


async def test_a_full_journal_disk_keeps_charges_in_memory_and_heals(tmp_path, caplog):
    with tiny_disk(tmp_path / "disk") as disk:
        counts: dict[str, int] = {}
        lg = await Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", journal_dir=disk / "journal",
                               flush_interval_ms=20, queue_limit=50,
                               on_written=lambda n, r: counts.__setitem__(r, counts.get(r, 0) + n))
        lg._store = db = Locked(lg._store)
        filler = fill(disk)
        for i in range(30):
            lg.record(rec(i))
        assert lg.journal_failing == "ENOSPC" and lg.accepting  # memory, the database is up
        [failed] = [r for r in caplog.records if r.getMessage().startswith("journal failing")]
        assert failed.path == str(disk / "journal") and failed.free_bytes is not None
        await lg.flush()  # written to the database from memory
        db.down = True
        for i in range(30, 130):  # 50 fit in memory; the rest cannot be kept anywhere
            lg.record(rec(i))
        await until(lambda: "database" in lg.problems())
        assert not lg.accepting and counts["dropped"] == 50
        journal = lg.problems()["journal"]
        assert "no space left on the device (ENOSPC)" in journal and str(disk) in journal
        assert "50 records kept in memory only" in journal and "50 lost" in journal
        filler.unlink()
        await until(lambda: lg.journal_failing is None)  # healed by itself, within a second
        assert lg.accepting and "journal" not in lg.problems()
        [healed] = [r for r in caplog.records if r.getMessage().startswith("journal recovered")]
        assert healed.rejournaled == 50 and healed.dropped == 50
        for i in range(130, 140):  # journaled again
            lg.record(rec(i))
        db.down = False
        await lg.flush()
        await lg.close()
        assert sorted(segment.name for segment in (disk / "journal").glob("segment-*")) == []
    conn = sqlite3.connect(tmp_path / "l.db")
    kept = [c for (c,) in conn.execute("SELECT cost_nanos FROM charges")]
    assert sorted(kept) == [1000 + i for i in [*range(80), *range(130, 140)]]


def config(tmp_path: Path, upstream_url: str, journal: Path, **storage) -> Path:
    path = tmp_path / "faregate.toml"
    path.write_text("\n".join([
        "[server]", f'upstream = "{upstream_url}"',
        "[storage]", f'url = "sqlite:///{tmp_path / "ledger.db"}"', f'journal_dir = "{journal}"',
        "flush_interval_ms = 50", *(f"{k} = {v}" for k, v in storage.items()),
        "[identity]", "allow_header_identity = true",
        "[tenants.capped]", "daily_usd = 100",
    ]) + "\n")
    return path


async def ready(url: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/readyz") as r:
            return await r.json()


async def embed(url: str, tenant: str) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/embeddings", json={"model": "text-embedding-3-small",
                          "input": "a b"}, headers={"authorization": "Bearer sk-test",
                                                    "x-faregate-tenant": tenant}) as r:
            return r.status, dict(r.headers), await r.json()


async def test_serve_survives_a_full_disk_and_a_kill_9_loses_nothing(tmp_path, upstream):
    """`faregate serve` with its journal on a full tmpfs and its database locked:
    callers with a USD limit are refused (503 ledger_unavailable), others served from
    memory; the disk is freed, the journal heals and takes the waiting charges; kill -9;
    the next start has every charge a client saw."""
    with tiny_disk(tmp_path / "disk", "512k") as disk:
        path = config(tmp_path, upstream.url, disk / "journal", queue_limit=5000)
        proc, url = await start_serve(tmp_path, "--config", str(path))
        try:
            first = Load(url, n=40)
            await first.run()
            filler = fill(disk)
            during = Load(url, n=60)
            await during.run()  # served: the database is up, charges go from memory
            assert len(first.ok) == 40 and len(during.ok) == 60
            state = await ready(url)
            assert "no space left on the device (ENOSPC)" in state["reasons"]["journal"]
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
            assert metric(text, 'faregate_ledger_journal_failing{reason="ENOSPC"}') == 1
            lock = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=30)
            lock.execute("BEGIN EXCLUSIVE")  # and now the database takes nothing either
            locked = Load(url, n=30)
            await locked.run()
            deadline = time.monotonic() + 30
            while "database" not in (await ready(url)).get("reasons", {}):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            status, headers, body = await embed(url, "capped")
            assert (status, body["error"]["code"]) == (503, "ledger_unavailable")
            assert headers["Retry-After"] == "5"
            served = await embed(url, "uncapped")  # no USD limit: served, kept in memory
            assert served[0] == 200
            filler.unlink()
            deadline = time.monotonic() + 15
            while "journal" in (await ready(url)).get("reasons", {}):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            healed = await embed(url, "capped")  # the journal takes charges again
            assert healed[0] == 200
            proc.send_signal(signal.SIGKILL)  # the database still locked: all in the journal
            await asyncio.wait_for(proc.wait(), 10)
            lock.execute("ROLLBACK")
            lock.close()
            ok = (first.ok | during.ok | locked.ok
                  | {served[1]["x-faregate-request-id"], healed[1]["x-faregate-request-id"]})
            proc, url = await start_serve(tmp_path, "--config", str(path))
        finally:
            if proc.returncode is None:
                assert await stop(proc) == 0
        charged = await charged_request_ids(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert len(locked.ok) == 30 and len(ok) == 132
    assert ok <= set(charged) and len(charged) == len(set(charged))
    print(f"\nfull disk + locked database + kill -9: {len(ok)} answered, "
          f"{len(ok & set(charged))} recorded, {len(ok - set(charged))} lost")
