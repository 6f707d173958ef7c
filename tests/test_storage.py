"""The ledger on SQLite and PostgreSQL: nothing lost, nothing doubled, sums exact.

Every test taking `ledger` or `ledger_url` runs once per backend, and must
see identical results on both.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from faregate.storage import (
    TOKEN_COLUMNS,
    Ledger,
    LedgerRecord,
    format_usd,
    parse_date_range,
    period_bounds,
    render_report,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def rec(i: int, **kw) -> LedgerRecord:
    base = dict(
        tenant=("acme", "globex")[i % 2], model=("gpt-4o", "gpt-4o-mini", "o3")[i % 3],
        endpoint="/v1/chat/completions", status=200, cost_nanos=1000 + i,
        ts=T0 + timedelta(minutes=i), user=f"u{i % 5}",
        tokens={"input": 10, "cached_input": 2, "output": 5},
    )
    base.update(kw)
    return LedgerRecord(**base)


@pytest.fixture
async def ledger(ledger_url):
    lg = await Ledger.open(ledger_url, flush_interval_ms=10)
    yield lg
    await lg.close()


async def test_many_records_written_exactly_once(ledger_url):
    url = ledger_url
    written = []
    lg = await Ledger.open(url, batch_size=500, on_written=lambda n, r: written.append((n, r)))
    records = [rec(i) for i in range(10_000)]
    for r in records:
        lg.record(r)  # synchronous: never awaits
    assert lg.queue_depth > 0
    for r in records[:100]:
        lg.record(r)  # replay of the same ids is idempotent
    await lg.close()
    assert sum(n for n, r in written if r == "written") == 10_100

    again = await Ledger.open(url)  # migrations are idempotent
    try:
        report = await again.usage(None, None, "tenant")
        assert sum(r.requests for r in report.rows) == 10_000
        assert report.total_cost_nanos == sum(1000 + i for i in range(10_000))
    finally:
        await again.close()


async def test_usage_groups_and_exact_sums(ledger):
    for i in range(30):
        ledger.record(rec(i))
    ledger.record(rec(99, model="mystery", priced=False, cost_nanos=0, tenant="acme",
                      ts=T0 + timedelta(days=1)))
    await ledger.flush()
    by_tenant = await ledger.usage(None, None, "tenant")
    acme = next(r for r in by_tenant.rows if r.key == "acme")
    assert acme.requests == 16 and acme.unpriced == 1
    assert acme.cost_nanos == sum(1000 + i for i in range(0, 30, 2))
    assert acme.input_tokens == 16 * 12 and acme.output_tokens == 16 * 5
    assert acme.cached_tokens == 16 * 2
    assert [r.key for r in by_tenant.rows] == sorted(
        [r.key for r in by_tenant.rows], key=lambda k: -next(x.cost_nanos for x in by_tenant.rows
                                                               if x.key == k))
    by_day = await ledger.usage(None, None, "day")
    assert [r.key for r in by_day.rows] == ["2026-11-23", "2026-11-24"]
    by_model = await ledger.usage(None, None, "model", tenant="globex")
    assert sum(r.requests for r in by_model.rows) == 15
    by_user = await ledger.usage(T0, T0 + timedelta(minutes=10), "user")
    assert sum(r.requests for r in by_user.rows) == 10
    with pytest.raises(ValueError):
        await ledger.usage(None, None, "colour")


async def test_logs_newest_first_with_cursor(ledger):
    records = [rec(i) for i in range(25)]
    for r in records:
        ledger.record(r)
    await ledger.flush()
    first = await ledger.logs(limit=10)
    second = await ledger.logs(limit=10, before=first[-1].id)
    assert len(first) == 10 and len(second) == 10
    assert not {r.id for r in first} & {r.id for r in second}
    assert first[0].id > first[-1].id > second[0].id
    got = (await ledger.logs(tenant="acme", model="gpt-4o", limit=100))
    assert {(r.tenant, r.model) for r in got} == {("acme", "gpt-4o")}
    one = (await ledger.logs(limit=1))[0]
    original = next(r for r in records if r.id == one.id)
    full_tokens = {c: original.tokens.get(c, 0) for c in one.tokens}
    assert one == replace(original, tokens=full_tokens)  # every field round-trips


@pytest.mark.parametrize("nanos, text", [
    (0, "0.000000"), (1500, "0.0000015"), (1_234_567_000, "1.234567"), (1, "0.000000001"),
    (10**9 * 500, "500.000000"), (-1500, "-0.0000015"),
])
def test_format_usd(nanos, text):
    assert format_usd(nanos) == text
    assert Decimal(text) == Decimal(nanos).scaleb(-9)


@pytest.mark.parametrize("period, now, start, end", [
    ("today", "2026-11-23T15:00", "2026-11-23", "2026-11-24"),
    ("week", "2026-11-23T15:00", "2026-11-17", "2026-11-24"),
    ("month", "2026-11-30T23:59", "2026-11-01", "2026-12-01"),
    ("month", "2026-12-31T23:59", "2026-12-01", "2027-01-01"),
])
def test_period_bounds(period, now, start, end):
    got = period_bounds(period, datetime.fromisoformat(now).replace(tzinfo=timezone.utc))
    assert [d.date().isoformat() for d in got] == [start, end]
    assert period_bounds("all", T0) == (None, None)


def test_date_range_is_inclusive_and_checked():
    start, end = parse_date_range("2026-11-01", "2026-11-15")
    assert (start.day, end.day) == (1, 16)
    with pytest.raises(ValueError):
        parse_date_range("2026-11-15", "2026-11-01")
    with pytest.raises(ValueError):
        parse_date_range("yesterday", None)


async def test_render_json_csv_table(ledger):
    for i in range(6):
        ledger.record(rec(i))
    ledger.record(rec(7, model="mystery", priced=False, cost_nanos=0))
    await ledger.flush()
    report = await ledger.usage(None, None, "model")
    doc = json.loads(render_report(report, "model", "json"))
    assert doc["total_cost_usd"] == format_usd(report.total_cost_nanos)
    assert {r["model"] for r in doc["rows"]} == {"gpt-4o", "gpt-4o-mini", "o3", "mystery"}
    assert all(isinstance(r["cost_usd"], str) for r in doc["rows"])
    csv_text = render_report(report, "model", "csv", top=2)
    assert csv_text.splitlines()[0].startswith("model,requests,")
    assert len(csv_text.splitlines()) == 3
    table = render_report(report, "model", "table")
    lines = table.splitlines()
    assert lines[0].startswith("MODEL") and "COST USD" in lines[0]
    assert any(l.startswith("TOTAL") for l in lines) and "UNPRICED" in table
    assert len({len(l) for l in lines[2:6]}) == 1  # numbers right-aligned in columns


def test_charge_row_timestamps_are_exact_whatever_the_zone():
    """The row's ISO text is the UTC `isoformat`, and ts_ms its exact integer
    milliseconds: a float timestamp loses one on some whole milliseconds."""
    from faregate.storage._kinds import CHARGES

    india = timezone(timedelta(hours=5, minutes=30))
    stamps = [
        datetime(2004, 8, 25, 22, 8, 30, 8000, tzinfo=timezone.utc),  # float: ...007
        datetime(2039, 6, 14, 17, 54, 38, 798000, tzinfo=timezone.utc),  # float: ...797
        T0, T0 + timedelta(microseconds=1), T0 - timedelta(microseconds=1),
        T0.astimezone(india), (T0 + timedelta(seconds=1, microseconds=5)).astimezone(india),
        datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 12, 1, tzinfo=timezone.utc),
        datetime(2026, 12, 1, 0, 0, 0, 1),  # naive: local time, as before
    ]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for ts in stamps * 2:  # twice: the per-second cache must not leak between them
        row = dict(zip(CHARGES.columns, CHARGES.to_row(rec(0, ts=ts))))
        utc = ts.astimezone(timezone.utc)
        assert row["ts"] == utc.isoformat(timespec="microseconds"), ts
        assert row["ts_ms"] == (utc - epoch) // timedelta(milliseconds=1), ts
        assert CHARGES.from_row(tuple(row.values())).ts == utc


def test_every_kind_stores_exact_epoch_milliseconds():
    """Sessions, alerts and batch events share the charges' exact milliseconds."""
    from faregate.storage import AlertRecord, BatchEvent, SessionRecord
    from faregate.storage._kinds import ALERTS, BATCHES, SESSIONS

    trap = datetime(2004, 8, 25, 22, 8, 30, 8000, tzinfo=timezone.utc)  # float: ...007
    exact = 1093471710008
    s = SessionRecord(id="fgs_t", tenant="acme", model="gpt-realtime", endpoint="/v1/realtime",
                      started_at=trap, ended_at=trap + timedelta(seconds=2),
                      end_reason="client_closed")
    row = dict(zip(SESSIONS.columns, SESSIONS.to_row(s)))
    assert (row["started_ms"], row["ended_ms"], row["duration_ms"]) == (exact, exact + 2000, 2000)
    assert row["started_at"] == trap.isoformat(timespec="microseconds")
    a = AlertRecord(id="a", scope="tenant:acme", period="day", period_start="2004-08-25",
                    threshold="0.8", level="warning", limit_nanos=1, spent_nanos=1,
                    projected_nanos=1, at=trap)
    assert dict(zip(ALERTS.columns, ALERTS.to_row(a)))["at_ms"] == exact
    b = BatchEvent(id="batch_t", batch_id="batch_t", event="created", tenant="acme", at=trap)
    assert dict(zip(BATCHES.columns, BATCHES.to_row(b)))["at_ms"] == exact


def test_ledger_columns_match_pricing_token_classes():
    """storage does not import pricing; this keeps their class lists in step."""
    from faregate.pricing import TOKEN_CLASSES
    from faregate.storage import TOKEN_COLUMNS

    assert TOKEN_COLUMNS == TOKEN_CLASSES


async def test_sessions_alerts_and_spend_seeding_on_both_backends(ledger):
    from faregate.storage import AlertRecord, SessionRecord

    s = SessionRecord(id="fgs_1", tenant="acme", model="gpt-realtime", endpoint="/v1/realtime",
                      started_at=T0, ended_at=T0 + timedelta(seconds=90), end_reason="client_closed",
                      user="alice", responses=2,
                      tokens={c: {"input": 5, "audio_output": 40}.get(c, 0) for c in TOKEN_COLUMNS},
                      seconds=Decimal("1.5"), cost_nanos=777, breakdown={"input": 7})
    ledger.record(s)
    for i in range(2):  # its response charges; a repeated response id is stored once
        ledger.record(rec(i, tenant="acme", session_id="fgs_1", response_id="resp_a"))
    ledger.record(rec(5, tenant="acme", session_id="fgs_1", response_id="resp_b"))
    ledger.record(rec(6, tenant="acme", user="alice", images=2))
    ledger.record(AlertRecord(id="tenant:acme|day|2026-11-23|0.8", scope="tenant:acme",
                              period="day", period_start="2026-11-23", threshold="0.8",
                              level="warning", limit_nanos=10, spent_nanos=8,
                              projected_nanos=20, at=T0))
    await ledger.flush()
    [got] = await ledger.sessions()
    assert got == s and await ledger.session("fgs_1") == s
    assert {r.response_id for r in await ledger.logs(tenant="acme")} == {"resp_a", "resp_b", None}
    [alert] = await ledger.alerts(since=T0 - timedelta(days=1))
    assert alert.id.endswith("|0.8") and alert.at == T0
    rows = {(r[0], r[1]): tuple(int(x or 0) for x in r[2:])
            for r in await ledger.spend_since(T0 - timedelta(days=30), T0 - timedelta(hours=1))}
    # (month nanos, month requests, month images, day nanos, day requests, day images):
    # session charges add money but are not requests of their own.
    assert rows[("acme", "u0")] == (2005, 0, 0, 2005, 0, 0)  # resp_a (once) + resp_b
    assert ("acme", "u1") not in rows  # the duplicate resp_a charge was ignored
    assert rows[("acme", "alice")] == (1006, 1, 2, 1006, 1, 2)


async def test_crash_cut_sessions_rebuilt_once(ledger_url):
    lg = await Ledger.open(ledger_url)
    old = datetime.now(timezone.utc) - timedelta(hours=3)
    for i in range(3):
        lg.record(rec(i, session_id="fgs_dead", response_id=f"r{i}", tenant="acme",
                      ts=old + timedelta(seconds=i)))
    await lg.flush()
    assert await lg.rebuild_sessions() == 1
    assert await lg.rebuild_sessions() == 0  # idempotent
    [s] = await lg.sessions()
    await lg.close()
    assert (s.id, s.end_reason, s.responses, s.cost_nanos) == ("fgs_dead", "interrupted", 3, 3003)


async def test_usage_by_tag_savings_and_billed_on_both_backends(ledger):
    for i in range(12):
        tags = {"feature": ("voice", "search", "it's \"odd\"")[i % 3]} if i % 4 else {}
        ledger.record(rec(i, tags=tags, savings_nanos=10, billed_nanos=2 * (1000 + i)
                          if i % 2 else None))
    await ledger.flush()
    report = await ledger.usage(None, None, "tag:feature", tenant=None)
    got = {r.key: r.requests for r in report.rows}
    want: dict = {}
    for i in range(12):
        key = ("voice", "search", "it's \"odd\"")[i % 3] if i % 4 else None
        want[key] = want.get(key, 0) + 1
    assert got == want
    assert report.total("savings_nanos") == 120
    assert report.total("billed_nanos") == sum(
        (2 if i % 2 else 1) * (1000 + i) for i in range(12))
    by_t = await ledger.usage(T0, None, "tag:feature", tenant="acme")  # with range + filter
    assert sum(r.requests for r in by_t.rows) == 6
    for bad in ("tag:", "tag:a b", "tag:x'--", "tag:" + "k" * 41):
        with pytest.raises(ValueError):
            await ledger.usage(None, None, bad)


async def test_background_responses_pending_until_their_final_row(ledger):
    """Pending background responses survive in the ledger until a `final:` row is claimed,
    once, on either backend."""
    from faregate.storage import BackgroundEvent

    def event(kind: str, rid: str, **kw) -> BackgroundEvent:
        return BackgroundEvent(id=f"{kind}:{rid}", response_id=rid, event=kind, tenant="acme",
                               user="ana", tags={"team": "x"}, model="gpt-4o",
                               request_id="fg_req_1", hold_nanos=123_456,
                               reserved={"input": 40, "output": 1000}, at=T0, **kw)

    for rid in ("resp_a", "resp_b", "resp_c"):
        ledger.record(event("pending", rid))
    ledger.record(event("final", "resp_b"))
    await ledger.flush()
    pending = await ledger.background_pending(T0 - timedelta(days=1))
    assert [e.response_id for e in pending] == ["resp_a", "resp_c"]
    a = pending[0]
    assert (a.tenant, a.user, a.tags, a.hold_nanos, a.reserved, a.at) == (
        "acme", "ana", {"team": "x"}, 123_456, {"input": 40, "output": 1000}, T0)
    assert await ledger.claim_background(event("final", "resp_a")) is True
    assert await ledger.claim_background(event("final", "resp_a")) is False  # once
    assert [e.response_id for e in await ledger.background_pending(T0 - timedelta(days=1))] \
        == ["resp_c"]
    assert await ledger.background_pending(T0 + timedelta(days=1)) == []


async def test_a_serving_ledger_mends_crash_cut_sessions_in_its_upkeep(ledger_url, tmp_path):
    """SQLite rebuilds at start (one process owns it); a serving PostgreSQL ledger
    leaves it to its upkeep, so a start never waits for it."""
    lg = await Ledger.open(ledger_url, journal_dir=tmp_path / "journal")
    try:
        old = datetime.now(timezone.utc) - timedelta(hours=3)
        for i in range(2):
            lg.record(rec(i, session_id="fgs_cut", response_id=f"r{i}", tenant="acme",
                          ts=old + timedelta(seconds=i)))
        await lg.flush()
        at_start = await lg.rebuild_sessions()
        assert at_start == (1 if ledger_url.startswith("sqlite") else 0)
        await lg.maintain()
        [s] = await lg.sessions()
        assert (s.id, s.end_reason, s.responses) == ("fgs_cut", "interrupted", 2)
    finally:
        await lg.close()
