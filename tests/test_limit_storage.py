"""The ledger surface shared limits use, on SQLite and PostgreSQL alike.

What a Responses answer or a conversation carried (for estimates after a
restart or on another replica), slot holds (concurrent sessions and the one
call near a limit, across replicas), a lease's state and its overdraft, and
request counts seeded from REST rows that carry their answer's own id.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from faregate.storage import Ledger, LedgerRecord

NOW = datetime.now(timezone.utc)


def row(**kw) -> LedgerRecord:
    base = dict(tenant="acme", model="gpt-4o-mini", endpoint="/v1/responses", status=200,
                cost_nanos=100, ts=NOW, tokens={"input": 1200, "cached_input": 300,
                                                "output": 40})
    base.update(kw)
    return LedgerRecord(**base)


async def test_recorded_context_of_a_response_and_a_conversation(ledger_url):
    lg = await Ledger.open(ledger_url, flush_interval_ms=10)
    try:
        lg.record(row(response_id="resp_1"))
        lg.record(row(response_id="resp_2", conversation_id="conv_9",
                      ts=NOW - timedelta(seconds=5), tokens={"input": 10, "output": 5}))
        lg.record(row(response_id="resp_3", conversation_id="conv_9",
                      tokens={"input": 2000, "output": 100}))
        lg.record(row(response_id="chatcmpl-1", endpoint="/v1/chat/completions"))
        await lg.flush()
        assert await lg.recorded_context("acme", response_id="resp_1") == 1540
        assert await lg.recorded_context("acme", conversation_id="conv_9") == 2100  # latest
        assert await lg.recorded_context("globex", response_id="resp_1") is None  # not theirs
        assert await lg.recorded_context("acme", response_id="chatcmpl-1") is None
        assert await lg.recorded_context("acme", response_id="resp_nope") is None
        assert await lg.recorded_context("acme") is None
        [got] = [r for r in await lg.logs() if r.response_id == "resp_3"]
        assert got.conversation_id == "conv_9"  # the column round-trips
    finally:
        await lg.close()


async def test_slot_holds_never_pass_their_limit_and_expire(ledger_url):
    lg = await Ledger.open(ledger_url)
    try:
        got = await asyncio.gather(*(lg.hold_slots("tenant:acme", f"r{i}", 1, 3, 30)
                                     for i in range(8)))
        assert sum(got) == 3  # eight replicas asking at once: exactly three hold one
        holders = [f"r{i}" for i, ok in enumerate(got) if ok]
        assert not await lg.hold_slots("tenant:acme", holders[0], 2, 3, 30)  # no room to grow
        assert await lg.hold_slots("tenant:acme", holders[0], 0, 3, 30)  # lowering always works
        assert await lg.hold_slots("tenant:acme", "late", 1, 3, 30)
        # A holder that stops renewing (a crashed replica) stops counting.
        assert await lg.hold_slots("upstream", "dead", 2, 2, 0.001)
        await asyncio.sleep(0.01)
        assert await lg.hold_slots("upstream", "alive", 2, 2, 30)
        await lg.renew_slots("alive", 30)
        assert not await lg.hold_slots("upstream", "other", 1, 2, 30)
    finally:
        await lg.close()


async def test_lease_state_and_overdraft(ledger_url):
    lg = await Ledger.open(ledger_url)
    try:
        assert await lg.lease_state("tenant:acme", "month", "2026-12") is None
        assert await lg.lease("tenant:acme", "month", "2026-12", 700, 1000, 0) == 700
        await lg.overdraw("tenant:acme", "month", "2026-12", 450)
        assert await lg.lease_state("tenant:acme", "month", "2026-12") == (1150, 1000)
        assert await lg.lease("tenant:acme", "month", "2026-12", 100, 1000, 0) == 0  # passed
    finally:
        await lg.close()


async def test_rest_rows_with_their_answer_id_still_count_as_requests(ledger_url):
    lg = await Ledger.open(ledger_url, flush_interval_ms=10)
    try:
        for i in range(3):
            lg.record(row(response_id=f"chatcmpl-{i}", endpoint="/v1/chat/completions"))
        lg.record(row(session_id="fgs_1", response_id="resp_a", endpoint="/v1/realtime"))
        await lg.flush()
        day = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
        [(_, _, cost, requests, *_rest)] = await lg.spend_since(day.replace(day=1), day)
        assert (cost, requests) == (400, 3)  # the session's response is not a request
    finally:
        await lg.close()
