"""Long work shows progress: rows done, rate, time left — a line on a terminal, a
structured log line otherwise, at most one every `_progress.EVERY_S` seconds."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys

import orjson
import pytest

from faregate.storage import Ledger, LedgerRecord, copy_ledger
from faregate.storage import _copy, _progress, _upgrades
from faregate.storage._progress import Progress
from test_rollups import _old_ledger, charges, stored


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "work", None) == what]


def test_log_lines_come_at_most_every_two_seconds_and_once_when_done(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="faregate.ledger")
    progress = Progress("rollup backfill", 1000, stream=io.StringIO(), clock=clock)
    for at in (0.5, 1.0, 1.9, 2.1, 3.0, 4.0, 4.2):
        clock.now = 100 + at
        progress.add(100)
    clock.now = 105.0
    progress.finish()
    got = lines(caplog, "rollup backfill")
    assert [(r.state, r.rows) for r in got] == [
        ("in progress", 400), ("in progress", 700), ("done", 700)]
    first = got[0]
    assert first.getMessage() == "rollup backfill: in progress" and first.levelname == "INFO"
    assert (first.rows_total, first.rows_per_s, first.seconds) == (1000, 190, 2.1)
    assert first.eta_s == pytest.approx(600 / (400 / 2.1), abs=0.1)


def test_on_a_terminal_one_line_is_rewritten_and_nothing_is_logged(caplog):
    clock, tty = Clock(), Terminal()
    caplog.set_level(logging.INFO, logger="faregate.ledger")
    progress = Progress("ledger copy: charges", 1000, stream=tty, clock=clock)
    clock.now = 102.5
    progress.add(250)
    clock.now = 110.0
    progress.add(750)
    progress.finish()
    assert tty.getvalue().split("\x1b[K") == [
        "\rledger copy: charges: 250 of ~1,000 rows, 100 rows/s, 0m08s left",
        "\rledger copy: charges: 1,000 of ~1,000 rows, 100 rows/s, 0m00s left",
        "\rledger copy: charges: 1,000 of ~1,000 rows, 100 rows/s in 0m10s", "\n"]
    assert lines(caplog, "ledger copy: charges") == []


async def test_a_backfill_in_small_batches_logs_each_batch(tmp_path, caplog, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    records = stored(charges(900, seed=5))  # distinct ids only
    await _old_ledger(url, records)
    monkeypatch.setattr(_upgrades, "BACKFILL_ROWS", 250)
    monkeypatch.setattr(_progress, "EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="faregate.ledger")
    lg = await Ledger.open(url)
    await lg.close()
    got = lines(caplog, "rollup backfill")
    assert [r.state for r in got] == ["in progress"] * 4 + ["done"]
    n = len(records)
    assert [r.rows for r in got] == [250, 500, 750, n, n]
    assert got[-1].rows_total == n and got[-1].eta_s == 0


def _records(n: int) -> list[LedgerRecord]:
    return [LedgerRecord(tenant="acme", model="gpt-4o-mini", endpoint="/v1/chat/completions",
                         status=200, cost_nanos=10 + i, tokens={"input": 3}) for i in range(n)]


async def _source(url: str, n: int) -> None:
    lg = await Ledger.open(url)
    for r in _records(n):
        lg.record(r)
    await lg.flush()
    await lg.close()


async def test_a_ledger_copy_in_small_pages_logs_each_page(tmp_path, caplog, monkeypatch):
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    await _source(source, 10)
    monkeypatch.setattr(_copy, "PAGE", 4)
    monkeypatch.setattr(_progress, "EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="faregate.ledger")
    copied = await copy_ledger(source, target, lambda line: None)
    assert copied["charges"] == 10
    got = lines(caplog, "ledger copy: charges")
    assert [(r.state, r.rows) for r in got] == [
        ("in progress", 4), ("in progress", 8), ("in progress", 10), ("done", 10)]
    assert all(r.rows_total == 10 for r in got)


def test_the_copy_command_logs_json_progress_when_stderr_is_no_terminal(tmp_path):
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    asyncio.run(_source(f"sqlite:///{source}", 7))
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{source}"\n')
    exe = os.path.join(os.path.dirname(sys.executable), "faregate")
    done = subprocess.run([exe, "ledger", "copy", "--config", str(config),
                           "--to", f"sqlite:///{target}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "charges=7" in done.stdout
    logged = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [charges_done] = [e for e in logged if e["msg"] == "ledger copy: charges: done"]
    assert charges_done["level"] == "info" and charges_done["rows"] == 7
    assert "\r" not in done.stderr
