"""The journal: every charge on disk first, replayed after a crash, bounded memory.

Runs on both backends. A database outage is simulated by a store whose
inserts fail until told otherwise; the real outage (PostgreSQL stopped under
a running `faregate serve`) is in test_durability.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timedelta, timezone

import pytest

from faregate.storage import JournalBusy, Ledger, LedgerRecord
from faregate.storage._journal import encode_entry
from faregate.storage._kinds import CHARGES

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def rec(i: int) -> LedgerRecord:
    return LedgerRecord(
        tenant="acme", model="gpt-4o-mini", endpoint="/v1/chat/completions", status=200,
        cost_nanos=1000 + i, ts=T0 + timedelta(seconds=i), tokens={"input": 3, "output": 1},
    )


def segments(journal) -> list[str]:
    return sorted(p.name for p in journal.glob("segment-*"))


class Outage:
    """Wraps a store so inserts fail while `down` is set."""

    def __init__(self, store):
        self.store = store
        self.down = False
        self.dialect = store.dialect

    async def insert(self, rows):
        if self.down:
            raise ConnectionRefusedError("database is down (simulated)")
        return await self.store.insert(rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


async def totals(url: str) -> tuple[int, int]:
    lg = await Ledger.open(url)
    try:
        report = await lg.usage(None, None, "tenant")
        return report.total_requests, report.total_cost_nanos
    finally:
        await lg.close()


async def test_records_are_journaled_then_segments_deleted(ledger_url, tmp_path):
    journal = tmp_path / "journal"
    counts: dict[str, int] = {}
    lg = await Ledger.open(
        ledger_url, journal_dir=journal, flush_interval_ms=10, segment_bytes=4096,
        on_written=lambda n, r: counts.__setitem__(r, counts.get(r, 0) + n),
    )
    for i in range(500):
        lg.record(rec(i))
    assert lg.journal_bytes > 0  # on disk before the call returned
    await lg.flush()
    await asyncio.sleep(0.1)  # a few group commits: rotate, fsync, delete
    assert len(segments(journal)) <= 2
    with pytest.raises(JournalBusy):  # one process per journal
        await Ledger.open(ledger_url, journal_dir=journal)
    await lg.close()
    assert segments(journal) == []
    assert counts["written"] == 500 and counts["journaled"] == 500
    assert await totals(ledger_url) == (500, sum(1000 + i for i in range(500)))


@pytest.mark.parametrize("batch_size", [64, 299])  # 299: a batch ends at the last entry
async def test_replay_after_crash_is_idempotent_and_skips_a_torn_line(
    ledger_url, tmp_path, batch_size, caplog
):
    """Segments left by a killed process: some rows already written, a torn last line."""
    journal = tmp_path / "journal"
    journal.mkdir()
    records = [rec(i) for i in range(300)]
    lg = await Ledger.open(ledger_url)
    for r in records[:120]:  # the database got these before the crash
        lg.record(r)
    await lg.close()
    lines = [encode_entry("charge", 0, CHARGES.to_row(r)) for r in records]
    torn = lines[199][: len(lines[199]) // 2]  # the crash cut record 199 short
    (journal / "segment-000000000001.journal").write_bytes(b"".join(lines[:199]) + torn)
    (journal / "segment-000000000002.journal").write_bytes(b"".join(lines[200:]))

    replayed: list[int] = []
    caplog.set_level(logging.INFO, logger="faregate.ledger")
    lg = await Ledger.open(
        ledger_url, journal_dir=journal, flush_interval_ms=10, batch_size=batch_size,
        on_written=lambda n, r: replayed.append(n) if r == "replayed" else None,
    )
    await lg.flush()  # waits for the earlier run's backlog too
    assert sum(replayed) == 299
    [line] = [r for r in caplog.records if r.getMessage() == "journal replayed into the database"]
    assert line.levelname == "INFO"
    assert line.entries == 299 and line.journal == str(journal) and line.seconds >= 0
    await lg.close()
    assert segments(journal) == []
    assert await totals(ledger_url) == (299, sum(1000 + i for i in range(300) if i != 199))


async def test_outage_bounds_memory_and_the_backlog_drains(ledger_url, tmp_path):
    journal = tmp_path / "journal"
    lg = await Ledger.open(
        ledger_url, journal_dir=journal, flush_interval_ms=10, batch_size=50,
        queue_limit=100, segment_bytes=16384,
    )
    outage = lg._store = Outage(lg._store)
    outage.down = True
    peak = 0
    for i in range(2000):
        lg.record(rec(i))
        peak = max(peak, lg.queue_depth)
        if i % 100 == 0:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)
    assert peak <= 100  # memory bounded; the rest lives only in the journal
    assert not lg.healthy and "down" in lg.last_error
    assert lg.oldest_unwritten_seconds > 0.1
    assert lg.journal_bytes > 2000 * 200 and len(segments(journal)) > 5
    outage.down = False
    await asyncio.wait_for(lg.flush(), 30)
    assert lg.healthy and lg.queue_depth == 0 and lg.oldest_unwritten_seconds == 0
    for i in range(2000, 2100):  # back to memory after catching up
        lg.record(rec(i))
    await lg.flush()
    await lg.close()
    assert segments(journal) == []
    assert await totals(ledger_url) == (2100, sum(1000 + i for i in range(2100)))


async def test_close_during_outage_keeps_records_for_next_start(ledger_url, tmp_path):
    journal = tmp_path / "journal"
    lg = await Ledger.open(ledger_url, journal_dir=journal, flush_interval_ms=10)
    lg._store = outage = Outage(lg._store)
    outage.down = True
    for i in range(50):
        lg.record(rec(i))
    await asyncio.wait_for(lg.close(), 5)  # does not wait for a database that is gone
    assert segments(journal)
    lg = await Ledger.open(ledger_url, journal_dir=journal, flush_interval_ms=10)
    await lg.flush()
    await lg.close()
    assert segments(journal) == []
    assert await totals(ledger_url) == (50, sum(1000 + i for i in range(50)))


async def test_migrations_from_two_processes_at_once(ledger_url, tmp_path):
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "{ledger_url}"\n')
    exe = os.path.join(os.path.dirname(os.sys.executable), "faregate")
    procs = [
        await asyncio.create_subprocess_exec(
            exe, "migrate", "--config", str(config), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    lg = await Ledger.open(ledger_url)
    await lg.close()
    if ledger_url.startswith("sqlite"):
        import sqlite3

        path = ledger_url[len("sqlite:///"):]
        versions = [v for (v,) in sqlite3.connect(path).execute(
            "SELECT version FROM schema_migrations")]
    else:
        import asyncpg

        conn = await asyncpg.connect(ledger_url)
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        await conn.close()
    assert sorted(versions) == sorted(set(versions)) and 1 in versions


def test_many_openers_of_one_fresh_sqlite_file_all_succeed(tmp_path):
    """Processes starting together on a new SQLite file race to switch it to
    WAL; SQLite refuses one of them at once ("database is locked") without
    waiting. Threads race the same way, and much faster than processes: with
    three at a time over 100 fresh files the old code failed about 1 in 20."""
    import threading

    from faregate.storage._sqlite import SqliteDatabase

    errors: list[BaseException] = []
    for i in range(100):
        url = f"sqlite:///{tmp_path}/race{i}.db"
        start = threading.Barrier(3)

        def open_and_migrate() -> None:
            start.wait()
            try:
                db = SqliteDatabase(url)
                db.migrate()
                db.conn.close()
            except BaseException as exc:  # collected and reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_migrate) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


async def test_journal_rows_of_an_older_faregate_replay_with_defaults(ledger_url, tmp_path):
    """A journal written before the savings/billed columns existed (an upgrade
    after a crash) still replays: the missing trailing columns get defaults."""
    journal = tmp_path / "journal"
    journal.mkdir()
    old_width = len(CHARGES.columns) - len(CHARGES.added)
    records = [rec(i) for i in range(3)]
    lines = [encode_entry("charge", 0, CHARGES.to_row(r)[:old_width]) for r in records]
    (journal / "segment-000000000001.journal").write_bytes(b"".join(lines))
    lg = await Ledger.open(ledger_url, journal_dir=journal, flush_interval_ms=10)
    await lg.flush()
    rows = await lg.logs(limit=10)
    await lg.close()
    assert sorted(r.id for r in rows) == sorted(r.id for r in records)
    assert all(r.savings_nanos == 0 and r.billed_nanos is None for r in rows)
    assert all(r.billed == r.cost_nanos for r in rows)
    with pytest.raises(ValueError):
        CHARGES.fit(CHARGES.to_row(records[0])[: old_width - 1])
