"""`faregate ledger copy --to postgresql://…`: an SQLite ledger moves without losing history.

Everything arrives once (run it twice: nothing doubles), reports on the copy
equal reports on the original for every grouping, and sums the source keeps
only as rollups (its retention deleted the charges) come along too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from faregate.storage import (
    GROUPS,
    AlertRecord,
    BatchEvent,
    Ledger,
    SessionRecord,
    copy_ledger,
)
from test_retention import NOW, aged

GROUPINGS = (*GROUPS, "tag:team")


def history() -> list:
    out = []
    for i, days in enumerate([90, 75, 50, 33, 20, 12, 3, 1] * 4):
        r = aged(days, i)
        r.tags = {"team": "a"} if i % 3 else {}
        r.key_id = ("k1", None)[i % 2]
        if i % 5 == 0:
            r.session_id, r.response_id = f"fgs_{i % 2}", f"resp_{i}"
        out.append(r)
    out.append(SessionRecord(id="fgs_0", tenant="acme", model="gpt-realtime",
                             endpoint="/v1/realtime", started_at=NOW - timedelta(days=3),
                             ended_at=NOW - timedelta(days=3, seconds=-60),
                             end_reason="client_closed", cost_nanos=5))
    out.append(AlertRecord(id="tenant:acme|month|2026-11|0.8", scope="tenant:acme",
                           period="month", period_start="2026-11", threshold="0.8",
                           level="warning", limit_nanos=10, spent_nanos=8, projected_nanos=9,
                           at=NOW - timedelta(days=5)))
    out.append(BatchEvent(id="batch_1", batch_id="batch_1", event="created", tenant="acme",
                          at=NOW - timedelta(days=2)))
    return out


async def everything(url: str) -> dict:
    lg = await Ledger.open(url)
    try:
        reports = {g: [r.as_dict(g) for r in (await lg.usage(None, None, g)).rows]
                   for g in GROUPINGS}
        reports["oct"] = [r.as_dict("day") for r in (await lg.usage(
            datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc),
            "day")).rows]
        return {
            "reports": reports,
            "charges": sorted((r.id, r.cost_nanos) for r in await lg.logs(limit=1000)),
            "sessions": await lg.sessions(),
            "alerts": await lg.alerts(),
            "batches": await lg.batch_events(NOW - timedelta(days=30)),
            "seed": sorted(await lg.spend_since(NOW.replace(day=1), NOW.replace(hour=0))),
        }
    finally:
        await lg.close()


async def test_copy_to_postgresql_is_complete_and_idempotent(tmp_path, pg_database):
    from embedded_pg import reset_database

    await reset_database(pg_database)
    source = f"sqlite:///{tmp_path / 'old.db'}"
    lg = await Ledger.open(source, keep_charges_days=40)
    for r in history():
        lg.record(r)
    await lg.flush()
    await lg.maintain(NOW)  # the oldest charges now exist only as rollups
    await lg.close()
    want = await everything(source)
    assert want["reports"]["tenant"] and len(want["charges"]) < 32

    lines: list[str] = []
    copied = await copy_ledger(source, pg_database, lines.append)
    assert copied["charges"] == len(want["charges"]) and copied["sessions"] == 1
    assert any("rollups before the source's retention horizon" in line for line in lines)
    got = await everything(pg_database)
    assert got == want

    again = await copy_ledger(source, pg_database, lines.append)  # a second run adds nothing
    assert again["charges"] == copied["charges"]
    assert await everything(pg_database) == want


def test_ledger_copy_command(tmp_path, pg_database):
    from embedded_pg import reset_database, run_sync

    run_sync(reset_database(pg_database))
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "l.db"}"\n')
    exe = os.path.join(os.path.dirname(sys.executable), "faregate")
    done = subprocess.run([exe, "ledger", "copy", "--config", str(config), "--to", pg_database],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "charges=0" in done.stdout and "copying sqlite:///" in done.stderr
    bad = subprocess.run([exe, "ledger", "copy", "--config", str(config), "--to",
                          "postgresql://nobody@/nothing?host=/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "faregate ledger copy:" in bad.stderr
    assert "Traceback" not in bad.stderr
