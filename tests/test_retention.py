"""Retention: old raw charges go, rollups stay, reports over old periods still add up.

`[storage] keep_charges_days` deletes charges older than that many days (a
whole monthly partition at a time on PostgreSQL); a report reaching before
the horizon is still exact and says that row-level detail has expired.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from faregate.proxy import parse_settings
from faregate.storage import Ledger, LedgerRecord, random_hex, render_report
from faregate.storage._periods import epoch_ms

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def aged(days_ago: float, i: int) -> LedgerRecord:
    """A charge made `days_ago` before NOW, with an id of that time (as new_id makes)."""
    ts = NOW - timedelta(days=days_ago)
    return LedgerRecord(id=f"{epoch_ms(ts):012x}{random_hex(80)}", tenant=("acme", "globex")[i % 2],
                        model="gpt-4o-mini", endpoint="/v1/chat/completions", status=200,
                        cost_nanos=1000 + i, ts=ts, user=f"u{i % 3}")


async def test_old_charges_expire_and_old_reports_still_add_up(ledger_url):
    records = [aged(d, i) for i, d in enumerate([100, 95, 80, 70, 61, 45, 40, 20, 5, 1] * 3)]
    lg = await Ledger.open(ledger_url, keep_charges_days=40)
    try:
        for r in records:
            lg.record(r)
        await lg.flush()
        august = (datetime(2026, 8, 1, tzinfo=timezone.utc), datetime(2026, 9, 1, tzinfo=timezone.utc))
        before = await lg.usage(*august, "user")
        everything = await lg.usage(None, None, "tenant")
        assert before.total_requests == 6 and before.detail_expired_before is None

        await lg.maintain(NOW)

        horizon = datetime(2026, 10, 22, tzinfo=timezone.utc)
        kept = await lg.logs(limit=100)
        assert kept and all(r.ts >= datetime(2026, 10, 1, tzinfo=timezone.utc) for r in kept)
        if ledger_url.startswith("sqlite"):
            assert all(r.ts >= horizon for r in kept)  # row by row
        else:  # whole months whose ids are all older: August and September
            assert {r.ts.month for r in kept} == {10, 11}
        assert {r.id for r in kept} >= {r.id for r in records if r.ts >= horizon}
        after = await lg.usage(*august, "user")
        assert [r.as_dict("user") for r in after.rows] == [r.as_dict("user") for r in before.rows]
        assert after.detail_expired_before == horizon.isoformat()
        assert (await lg.usage(None, None, "tenant")).rows == everything.rows
        recent = await lg.usage(horizon + timedelta(days=1), None, "tenant")
        assert recent.detail_expired_before is None  # nothing before the horizon asked for
        doc = json.loads(render_report(after, "user", "json"))
        assert doc["row_detail_expired_before"] == horizon.isoformat()
        assert "EXPIRED" in render_report(after, "user", "table")
    finally:
        await lg.close()
    lg = await Ledger.open(ledger_url)  # the horizon is remembered
    try:
        assert (await lg.usage(None, None, "tenant")).detail_expired_before == horizon.isoformat()
    finally:
        await lg.close()


def test_keep_charges_days_is_a_storage_setting():
    assert parse_settings({}).storage.keep_charges_days is None  # default: keep all
    assert parse_settings({"storage": {"keep_charges_days": 400}}).storage.keep_charges_days == 400
    for bad in (0, -1, "a lot"):
        try:
            parse_settings({"storage": {"keep_charges_days": bad}})
        except Exception as exc:
            assert "keep_charges_days" in str(exc)
        else:
            raise AssertionError(f"keep_charges_days = {bad!r} was accepted")
