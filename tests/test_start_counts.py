"""Start counts everything: budgets after a restart = the database + the journal's rest.

A restart while the database lags (here: locked by another session, so no
charge can be written) must not forget what the journal holds, or a tenant
could spend its limit twice. Runs on both backends.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import asyncpg
import openai

from conftest import gateway_config, start_gateway
from faregate.proxy import parse_settings
from faregate.storage import LedgerRecord
from faregate.storage._journal import encode_entry
from faregate.storage._kinds import CHARGES
from test_budgets import HELLO, PER_CALL, cfg

CALL_NANOS = int(PER_CALL * 10**9)


@asynccontextmanager
async def locked(url: str):
    """Another session holds the write lock on charges: inserts wait, reads do not."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    conn = await asyncpg.connect(url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE charges IN SHARE ROW EXCLUSIVE MODE")
    try:
        yield
    finally:
        await tx.rollback()
        await conn.close()


async def test_restart_with_a_locked_database_counts_the_journal(ledger_url, upstream,
                                                                  tmp_path):
    data = gateway_config(upstream.url, tmp_path, {
        **cfg({"daily_usd": str(PER_CALL * 6)}), "storage": {"url": ledger_url}})
    settings = parse_settings(data)
    gw = await start_gateway(settings)
    for _ in range(3):
        await gw.client("sk-acme").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    [stored, *_] = await gw.ledger_rows(3)
    await gw.stop()

    # What a run killed while the database lagged leaves: one charge the database
    # confirmed (its segment not yet deleted) and three it never got.
    now = datetime.now(timezone.utc)
    lost = [LedgerRecord(tenant="acme", model="gpt-4o-mini", endpoint="/v1/chat/completions",
                         status=200, cost_nanos=CALL_NANOS, ts=now, request_id=f"lost{i}")
            for i in range(3)]
    journal = tmp_path / "ledger.db.journal"
    lines = [encode_entry("charge", 0, CHARGES.to_row(r)) for r in [stored, *lost]]
    (journal / "segment-000000000001.journal").write_bytes(b"".join(lines))

    async with locked(ledger_url):
        gw = await start_gateway(settings)
        try:
            counters = {k: c.spent for k, c in gw.state.quota.book.items()}
            assert counters[("tenant:acme", "day", now.strftime("%Y-%m-%d"))] == 6 * CALL_NANOS
            try:
                await gw.client("sk-acme").chat.completions.create(
                    model="gpt-4o-mini", messages=HELLO)
                raise AssertionError("the journal's spend was forgotten")
            except openai.RateLimitError as exc:
                assert exc.body["code"] == "budget_exceeded"
            assert len(await gw.state.ledger.logs(limit=10)) == 3  # nothing written meanwhile
        except BaseException:
            await gw.stop()
            raise
    try:
        await asyncio.wait_for(gw.state.ledger.flush(), 60)  # the lock is gone: replay lands
        rows = await gw.state.ledger.logs(limit=10)
        assert sorted(r.request_id for r in rows if r.request_id.startswith("lost")) == [
            "lost0", "lost1", "lost2"]
        report = await gw.state.ledger.usage(None, None, "tenant")
        assert (report.total_requests, report.total_cost_nanos) == (6, 6 * CALL_NANOS)
    finally:
        await gw.stop()


async def test_a_call_a_crash_cut_off_counts_at_its_reservation_unless_unmarked(ledger_url,
                                                                               tmp_path):
    """A start marker with no charge (a call in flight at a kill -9) is charged at its
    reservation when the journal is replayed — and counted at start, before that; a
    marker the run itself closed (`unmark`: a released reservation, or a pending
    background response its own row follows up) counts nothing."""
    from faregate.storage import Ledger, StartMarker
    from faregate.storage._markers import UNMARK, marker_row

    cut = StartMarker("0" * 30 + "aa", "acme", None, None, "gpt-4o-mini",
                      "/v1/chat/completions", "fg_cut", 7_000, (0,) * 9)
    closed = StartMarker("0" * 30 + "bb", "acme", None, None, "gpt-4o-mini",
                         "/v1/chat/completions", "fg_closed", 9_000, (0,) * 9)
    await (await Ledger.open(ledger_url)).close()  # the tables, before they are locked
    journal = tmp_path / "journal"
    journal.mkdir()
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    (journal / "segment-000000000001.journal").write_bytes(b"".join([
        encode_entry("start", now_ms, marker_row(cut)),
        encode_entry("start", now_ms, marker_row(closed)),
        encode_entry(UNMARK, now_ms, (closed.id,))]))
    lg = None
    try:
        async with locked(ledger_url):  # the replay cannot write: the journal alone says it
            lg = await Ledger.open(ledger_url, journal_dir=journal)
            now = datetime.now(timezone.utc)
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            rows = await lg.spend_since(day.replace(day=1), day)
    finally:
        if lg is not None:
            await lg.close()
    spent = {(t, u): month for t, u, month, *_ in rows}
    assert spent == {("acme", None): 7_000}
