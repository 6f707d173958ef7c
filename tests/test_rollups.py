"""Rollups add up: every report from rollups equals the sum of the raw charges.

Runs on both backends. The truth is the raw-row query (`usage_sql` over the
whole range, what reports ran before rollups) and a plain Python sum of the
records written; rollups must match both to the nano-dollar for every
grouping and for ranges that are whole days, whole hours and neither, also
after journal replays, repeated ids and a batch that died half-way.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from faregate.storage import GROUPS, Ledger, LedgerRecord
from faregate.storage._journal import encode_entry
from faregate.storage._kinds import CHARGES
from faregate.storage._periods import epoch_ms
from faregate.storage._queries import usage_sql
from faregate.storage._report import UsageReport, UsageRow

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
GROUPINGS = (*GROUPS, "tag:feature", "tag:team")
FLAGS = ("", "priced_by_family", "tier_unpriced,x", "rate_missing", "session_start")


def charges(n: int, seed: int = 7) -> list[LedgerRecord]:
    """A mixed ledger: users and keys or none, tags or none, sessions, markups, flags."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        session = rnd.random() < 0.2
        tags = {}
        if rnd.random() < 0.5:
            tags["feature"] = rnd.choice(["voice", "search", "it's \"odd\"", "x" * 600])
        if rnd.random() < 0.3:
            tags["team"] = rnd.choice(["a", "b"])
        cost = rnd.randrange(0, 5_000_000_000)
        out.append(LedgerRecord(
            tenant=rnd.choice(["acme", "globex", "initech"]),
            model=rnd.choice(["gpt-4o", "gpt-4o-mini", "o3"]),
            endpoint=rnd.choice(["/v1/chat/completions", "/v1/responses", "/v1/realtime"]),
            status=200, cost_nanos=cost,
            ts=T0 + timedelta(seconds=rnd.randrange(0, 5 * 86400), microseconds=rnd.randrange(10**6)),
            user=rnd.choice([None, "alice", "bob", "carol"]),
            key_id=rnd.choice([None, "k1", "k2"]),
            tokens={"input": rnd.randrange(1000), "cached_input": rnd.randrange(50),
                    "output": rnd.randrange(500), "audio_output": rnd.randrange(20)},
            reasoning_tokens=rnd.randrange(10), images=rnd.randrange(3),
            characters=rnd.randrange(5),
            priced=rnd.random() > 0.1, estimated=rnd.random() < 0.1,
            flags=tuple(f for f in rnd.choice(FLAGS).split(",") if f),
            session_id=f"fgs_{rnd.randrange(30)}" if session else None,
            response_id=f"resp_{rnd.randrange(40)}" if session else None,
            savings_nanos=rnd.randrange(1000),
            billed_nanos=None if rnd.random() < 0.5 else cost * 2,
            tags=tags,
        ))
    return out


async def raw(ledger: Ledger, start, end, group_by: str, tenant=None) -> UsageReport:
    s = ledger._store
    sql, args = usage_sql(s.placeholder, None if start is None else epoch_ms(start),
                          None if end is None else epoch_ms(end), group_by, tenant, s.dialect)
    return UsageReport.of([UsageRow.from_row(r) for r in await s.read(sql, args)], group_by)


def rows(report: UsageReport) -> list[dict]:
    return sorted((r.as_dict(report.group_by) for r in report.rows), key=repr)


RANGES = [
    (None, None),
    (T0 + timedelta(days=1), T0 + timedelta(days=3)),  # whole days
    (T0 + timedelta(hours=5), T0 + timedelta(days=2, hours=7)),  # whole hours
    (T0 + timedelta(hours=5, minutes=17, seconds=3), T0 + timedelta(days=3, hours=1, minutes=2)),
    (T0 + timedelta(days=1, hours=3, minutes=1), T0 + timedelta(days=1, hours=3, minutes=50)),
    (T0 + timedelta(days=2, minutes=30), None),
    (None, T0 + timedelta(days=2, hours=20, seconds=1)),
]


async def assert_rollups_add_up(ledger: Ledger, expected: list[LedgerRecord] | None = None):
    for group_by in GROUPINGS:
        for start, end in RANGES:
            for tenant in (None, "acme"):
                want = await raw(ledger, start, end, group_by, tenant)
                got = await ledger.usage(start, end, group_by, tenant)
                assert rows(got) == rows(want), (group_by, start, end, tenant)
    if expected is not None:
        total = await ledger.usage(None, None, "tenant")
        # A session counts once, at the charge flagged as its first.
        assert total.total_requests == sum(
            r.session_id is None or "session_start" in r.flags for r in expected)
        assert total.total_cost_nanos == sum(r.cost_nanos for r in expected)
        assert total.total("billed_nanos") == sum(r.billed for r in expected)


def stored(records: list[LedgerRecord]) -> list[LedgerRecord]:
    """What the ledger keeps of these: the first of each id and of each session response."""
    ids, responses, out = set(), set(), []
    for r in records:
        key = (r.session_id, r.response_id)
        if r.id in ids or (None not in key and key in responses):
            continue
        ids.add(r.id)
        responses.add(key)
        out.append(r)
    return out


async def test_every_report_from_rollups_equals_the_raw_sums(ledger_url):
    records = charges(1500)
    lg = await Ledger.open(ledger_url, batch_size=97)
    try:
        for n, r in enumerate(records):
            lg.record(r)
            if n % 5 == 0:
                lg.record(records[n // 2])  # a repeat of an earlier id, often in a later batch
        await lg.flush()
        await assert_rollups_add_up(lg, stored(records))
        by_key = {r.key: r for r in (await lg.usage(None, None, "key")).rows}
        assert set(by_key) == {"k1", "k2", None}
    finally:
        await lg.close()


async def test_spend_seeding_from_rollups_equals_the_raw_rows(ledger_url):
    records = stored(charges(800, seed=3))
    lg = await Ledger.open(ledger_url, batch_size=200)
    try:
        for r in records:
            lg.record(r)
        await lg.flush()
        month, day = T0 - timedelta(days=19), T0 + timedelta(days=2)
        got = {(t, u): tuple(v) for t, u, *v in await lg.spend_since(month, day)}
    finally:
        await lg.close()
    want: dict = {}
    for r in records:
        acc = want.setdefault((r.tenant, r.user), [0] * 6)
        for i, v in enumerate((r.cost_nanos, int(r.response_id is None), r.images)):
            acc[i] += v
            if r.ts >= day:
                acc[3 + i] += v
    assert got == {k: tuple(v) for k, v in want.items()}


async def test_replayed_journal_adds_each_charge_once(ledger_url, tmp_path):
    """A crash left a journal whose first part the database already has: replay
    inserts only the rest, and the rollups count every charge exactly once."""
    records = stored(charges(600, seed=11))
    lg = await Ledger.open(ledger_url, batch_size=50)
    for r in records[:400]:
        lg.record(r)
    await lg.close()
    journal = tmp_path / "journal"
    journal.mkdir()
    lines = [encode_entry("charge", 0, CHARGES.to_row(r)) for r in records]
    (journal / "segment-000000000001.journal").write_bytes(b"".join(lines[:300]))
    (journal / "segment-000000000002.journal").write_bytes(b"".join(lines[250:]))
    for _ in range(2):  # and a second start replays nothing twice
        lg = await Ledger.open(ledger_url, journal_dir=journal, batch_size=64,
                               flush_interval_ms=10)
        await lg.flush()
        await assert_rollups_add_up(lg, records)
        await lg.close()


async def _fail_rollups(url: str, on: bool) -> None:
    """Make every rollup write fail (a crash between a batch's charges and its sums)."""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        conn.execute("DROP TRIGGER IF EXISTS test_fail_rollups")
        if on:
            conn.execute("CREATE TRIGGER test_fail_rollups BEFORE INSERT ON rollups "
                         "BEGIN SELECT RAISE(ABORT, 'simulated crash mid-batch'); END")
        conn.commit()
        conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute("DROP TRIGGER IF EXISTS test_fail_rollups ON rollups")
    if on:
        await conn.execute(
            "CREATE OR REPLACE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'simulated crash mid-batch'; END $$")
        await conn.execute("CREATE TRIGGER test_fail_rollups BEFORE INSERT ON rollups "
                           "FOR EACH ROW EXECUTE FUNCTION test_fail()")
    await conn.close()


async def test_a_batch_that_dies_after_its_charges_leaves_neither(ledger_url, tmp_path):
    records = stored(charges(300, seed=5))
    lg = await Ledger.open(ledger_url, journal_dir=tmp_path / "j", batch_size=40,
                           flush_interval_ms=10)
    try:
        for r in records[:100]:
            lg.record(r)
        await lg.flush()
        await _fail_rollups(ledger_url, True)
        for r in records[100:]:
            lg.record(r)
        for _ in range(200):  # the writer keeps failing and retrying
            if not lg.healthy:
                break
            await __import__("asyncio").sleep(0.02)
        assert not lg.healthy and "simulated crash" in lg.last_error
        assert len(await lg.logs(limit=1000)) == 100  # the failed batch left no charge
        await assert_rollups_add_up(lg, records[:100])
        await _fail_rollups(ledger_url, False)
        await lg.flush()
        await assert_rollups_add_up(lg, records)
    finally:
        await _fail_rollups(ledger_url, False)
        await lg.close()


def test_the_migrated_table_has_every_rollup_column(tmp_path):
    import sqlite3

    from faregate.storage._rollups import COLUMNS
    from faregate.storage._sqlite import SqliteDatabase

    db = SqliteDatabase(f"sqlite:///{tmp_path}/x.db")
    db.migrate()
    assert tuple(r[1] for r in db.conn.execute("PRAGMA table_info(rollups)")) == COLUMNS
    db.close()
    assert sqlite3.sqlite_version_info >= (3, 38)  # json_each, FILTER, row values


@pytest.mark.parametrize("group_by", ["colour", "tag:", "tag:a b"])
async def test_unknown_groupings_are_refused(ledger_url, group_by):
    lg = await Ledger.open(ledger_url)
    try:
        with pytest.raises(ValueError):
            await lg.usage(None, None, group_by)
    finally:
        await lg.close()


async def _old_ledger(url: str, records: list[LedgerRecord]) -> None:
    """A ledger as faregate left it before rollups (schema version 10), holding `records`."""
    from faregate.storage._store import open_store

    store = await open_store(url, upto=10)
    await store.close()
    from faregate.storage._kinds import CHARGE_COLUMNS_BEFORE_0040 as OLD

    rows = [CHARGES.to_row(r)[:len(OLD)] for r in records]
    cols = ", ".join(OLD)
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        marks = ", ".join("?" for _ in OLD)
        conn.executemany(f"INSERT OR IGNORE INTO charges ({cols}) VALUES ({marks})", rows)
        conn.commit()
        conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.copy_records_to_table("charges", records=[
        row[:len(OLD)] for row in stored_rows(records)], columns=list(OLD))
    await conn.close()


def stored_rows(records: list[LedgerRecord]) -> list[tuple]:
    return [CHARGES.to_row(r) for r in stored(records)]


async def test_upgrade_fills_rollups_from_existing_charges(ledger_url, caplog):
    """Migration 0012 backfills rollups in batches (and, on PostgreSQL, 0011
    partitions charges by month without copying a row); replay stays idempotent."""
    import logging

    from faregate.storage import _upgrades

    records = charges(900, seed=21)
    await _old_ledger(ledger_url, records)
    old_batch, _upgrades.BACKFILL_ROWS = _upgrades.BACKFILL_ROWS, 250
    try:
        with caplog.at_level(logging.INFO, logger="faregate.ledger"):
            lg = await Ledger.open(ledger_url, batch_size=100)
    finally:
        _upgrades.BACKFILL_ROWS = old_batch
    try:
        assert any("rollup backfill: done" in r.getMessage() for r in caplog.records)
        await assert_rollups_add_up(lg, stored(records))
        for r in records:  # the journal replays charges the old ledger already has
            lg.record(r)
        extra = charges(50, seed=22)  # and new ones, into a new month
        for r in extra:
            lg.record(r)
        later = [LedgerRecord(tenant="acme", model="gpt-4o", endpoint="/v1/responses",
                              status=200, cost_nanos=7, user="zed") for _ in range(3)]
        for r in later:
            lg.record(r)
        await lg.flush()
        await assert_rollups_add_up(lg, stored(records + extra) + later)
        if ledger_url.startswith("postgresql"):
            parts = {r[0] for r in await lg._store.read(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'charges'::regclass")}
            assert {"charges_legacy", "charges_other"} <= parts
            assert any(p.startswith("charges_y") for p in parts), parts
            [(n,)] = await lg._store.read("SELECT count(*) FROM charges_legacy")
            assert n >= len(stored(records))
    finally:
        await lg.close()


async def test_postgresql_upgrade_makes_the_rollup_trigger_again(pg_database):
    """A database migrated by an older faregate keeps its compiled trigger function
    until 0051 makes it again from today's sums (a session counts once)."""
    import asyncpg
    from embedded_pg import reset_database

    from faregate.storage._store import open_store

    await reset_database(pg_database)
    store = await open_store(pg_database, upto=50)
    await store.close()
    conn = await asyncpg.connect(pg_database)
    try:
        body = await conn.fetchval("SELECT pg_get_functiondef('faregate_roll_up'::regproc)")
        await conn.execute(body.replace("session_start", "older_rule"))  # as 0012 once made it
        lg = await Ledger.open(pg_database)
        await lg.close()
        body = await conn.fetchval("SELECT pg_get_functiondef('faregate_roll_up'::regproc)")
    finally:
        await conn.close()
    assert "session_start" in body and "older_rule" not in body


def test_ranges_are_cut_into_months_days_hours_and_raw_edges():
    from faregate.storage._usage import plan

    def ms(text: str) -> int:
        return epoch_ms(datetime.fromisoformat(text).replace(tzinfo=timezone.utc))

    def show(parts):
        return [(k, None if a is None else datetime.fromtimestamp(a / 1000, timezone.utc)
                 .isoformat()[:16], None if b is None else datetime.fromtimestamp(
                     b / 1000, timezone.utc).isoformat()[:16]) for k, a, b in parts]

    assert plan(None, None, True) == [("month", None, None)]
    assert show(plan(ms("2026-10-15"), ms("2026-12-01"), False)) == [
        ("month", "2026-11-01T00:00", "2026-12-01T00:00"),
        ("day", "2026-10-15T00:00", "2026-11-01T00:00")]
    assert show(plan(ms("2026-11-03T10:20"), ms("2026-11-05T01:00"), True)) == [
        ("day", "2026-11-04T00:00", "2026-11-05T00:00"),
        ("hour", "2026-11-03T11:00", "2026-11-04T00:00"),
        ("raw", "2026-11-03T10:20", "2026-11-03T11:00"),
        ("hour", "2026-11-05T00:00", "2026-11-05T01:00")]
    assert show(plan(ms("2026-11-03T10:20"), ms("2026-11-03T10:50"), True)) == [
        ("raw", "2026-11-03T10:20", "2026-11-03T10:50")]
    assert show(plan(ms("2026-11-03T10:20"), ms("2026-11-04"), False)) == [
        ("raw", "2026-11-03T10:20", "2026-11-04T00:00")]  # no hour rows for this grouping
    assert show(plan(ms("2026-11-01"), ms("2026-12-01"), True, months=False)) == [
        ("day", "2026-11-01T00:00", "2026-12-01T00:00")]
    assert plan(ms("2026-11-03"), ms("2026-11-03"), True) == []
