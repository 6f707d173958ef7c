"""What rollups cost to write, and what an upgrade in place costs, for bench/volume.py.

- `write_cost`: `bench/ledger.py` (record() → journal → database, the
  database side alone, and a journal replay) for this code and for a
  baseline checkout without rollups (`--baseline-src DIR`, e.g. the tree of
  the commit before them), run alternately in fresh processes so both see
  the same machine; medians per backend.
- `upgrade`: a ledger as the previous release left it (schema version 10,
  no rollups, PostgreSQL not partitioned) holding `rows` charges, opened by
  this code: migrations 0011 and 0012 partition it and backfill rollups.
  Seconds per million charges.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .volume_data import SPAN, charge, log

ROOT = Path(__file__).resolve().parent.parent


def _shim(src: Path) -> Path:
    """A directory that makes `import faregate.*` load the checkout at `src`."""
    shim = Path(tempfile.mkdtemp(prefix="faregate-baseline-"))
    (shim / "faregate").mkdir()
    for room in ("proxy", "pricing", "storage"):
        (shim / "faregate" / room).symlink_to(src / room)
    return shim


def _ledger_bench(src: Path | None, records: int, out: Path) -> dict:
    env = dict(os.environ)
    script = ROOT / "bench" / "ledger.py"
    if src is not None:
        env["PYTHONPATH"] = str(_shim(src))
        script = src / "bench" / "ledger.py"
    cmd = [sys.executable, str(script), "--records", str(records), "--recover", str(records),
           "--down", "0", "--json", str(out)]
    check = subprocess.run([sys.executable, "-c", "import os, faregate.storage as s; "
                            "print(os.path.realpath(s.__file__))"],
                           env=env, capture_output=True, text=True, check=True)
    expect = str((src or ROOT) / "storage")
    if not check.stdout.strip().startswith(expect):
        raise RuntimeError(f"baseline shim loads {check.stdout.strip()}, not {expect}")
    subprocess.run(cmd, env=env, check=True, timeout=900, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def write_cost(baseline: Path | None, records: int, rounds: int) -> dict:
    """Rows/s with rollups (this code) and without (the baseline), alternating."""
    runs: dict[str, list[dict]] = {"rollups": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="faregate-cost-") as tmp:
        for n in range(rounds):
            order = [("rollups", None), ("baseline", baseline)]
            if n % 2:
                order.reverse()
            for name, src in order:
                if name == "baseline" and baseline is None:
                    continue
                log(f"write cost: round {n + 1}/{rounds}, {name}")
                runs[name].append(_ledger_bench(src, records, Path(tmp) / f"{name}{n}.json"))
    out: dict = {"records": records, "rounds": rounds}
    for name, got in runs.items():
        if not got:
            continue
        out[name] = {
            backend: {key: round(statistics.median(r[backend][key] for r in got))
                      for key in ("rows_per_s", "store_rows_per_s", "recovery_rows_per_s")}
            for backend in ("sqlite", "postgresql")}
    return out


async def _old_ledger(url: str, rows: int) -> int:
    """A schema-10 ledger (no rollups, nothing partitioned) with `rows` charges
    over the 31 days before the hour; returns that hour (epoch ms)."""
    from faregate.storage._kinds import CHARGE_COLUMNS_BEFORE_0040, CHARGES
    from faregate.storage._store import open_store

    store = await open_store(url, upto=10)
    await store.close()
    end_ms = int(time.time() * 1000) // 3_600_000 * 3_600_000
    span = int(SPAN.total_seconds() * 1000)
    start = end_ms - span
    cols = list(CHARGE_COLUMNS_BEFORE_0040)
    width = len(cols)
    chunk = 10_000
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        sql = f"INSERT INTO charges ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        for base in range(0, rows, chunk):
            conn.executemany(sql, [CHARGES.to_row(charge(i, rows, start, span))[:width]
                                   for i in range(base, min(rows, base + chunk))])
            conn.commit()
        conn.close()
        return end_ms
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for base in range(0, rows, chunk):
            await conn.copy_records_to_table("charges", columns=cols, records=[
                CHARGES.to_row(charge(i, rows, start, span))[:width]
                for i in range(base, min(rows, base + chunk))])
    finally:
        await conn.close()
    return end_ms


async def upgrade(url: str, rows: int) -> dict:
    """Seconds to open a schema-10 ledger of `rows` charges (migrations 0011 + 0012)."""
    from faregate.storage import Ledger

    from datetime import datetime, timezone

    log(f"upgrade: building a schema-10 ledger of {rows:,} charges")
    end_ms = await _old_ledger(url, rows)
    end = datetime.fromtimestamp(end_ms / 1000, timezone.utc)
    started = time.perf_counter()
    lg = await Ledger.open(url)
    took = time.perf_counter() - started
    total = (await lg.usage(None, None, "tenant")).total_requests
    await lg.close()
    log(f"upgrade: {rows:,} charges migrated in {took:.1f}s")
    return {"rows": rows, "seconds": round(took, 2),
            "seconds_per_million": round(took / rows * 1e6, 2), "rolled_up": total,
            "window_start": (end - SPAN).isoformat(), "window_end": end.isoformat()}


def run_upgrade(url: str, rows: int) -> dict:
    return asyncio.run(upgrade(url, rows))
