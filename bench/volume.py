"""The ledger at volume (issue #21): 10M charges on SQLite and on PostgreSQL.

    python -m bench.volume [--rows 10000000] [--baseline-src DIR] \
        [--markdown bench/RESULTS.md] [--out bench/VOLUME.json]
    python -m bench.volume --smoke          # seconds; the test suite runs this

The ledgers are made once by bench/volume_data.py (kept in bench/.volume/,
reused while they match) — SQLite through `record()`, PostgreSQL imported
from it with `faregate ledger copy`'s code — then, per backend, measured in
one run:

- start: `faregate serve` spawned → `/readyz` 200, three starts, median;
- reads through the running server: `/admin/usage` by tenant this month and
  over the 30 whole days of the data (by tenant and by user), `/admin/budgets`,
  the dashboard's full refresh (its 12 calls at once) as the page asks and
  with its month replaced by those 30 days;
- `faregate report` (a fresh process) this month and over the 30 days;
- ledger lag and call latency under 200 calls/s, quiet blocks interleaved
  with blocks of 10 dashboard refreshes back to back;
- disk: bytes per charge, rollup bytes per day;
- write cost: `bench/ledger.py` with and without rollups, alternating;
- upgrade in place: a schema-10 ledger of 1M charges opened by this code;
- a projection at 10, 100 and 1,000 calls/s from the measured slopes.
Results: JSON (`--out`) and a section of `--markdown` (other sections kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from . import volume_probe as probe
from .run import Loadgen, start_upstream
from .volume_cost import upgrade, write_cost
from .volume_data import WORK, _database, log, make_postgres, make_sqlite, persistent_postgres
from .volume_report import markdown_section, projection, replace_section

ROOT = Path(__file__).resolve().parent.parent


def _window(meta: dict) -> tuple[str, str]:
    """The whole UTC days inside the data (inclusive --from/--to dates)."""
    start = datetime.fromisoformat(meta["window_start"]).date() + timedelta(days=1)
    end = datetime.fromisoformat(meta["window_end"]).date() - timedelta(days=1)
    return start.isoformat(), end.isoformat()


async def reads(base: str, meta: dict, n: int) -> dict:
    w0, w1 = _window(meta)
    span = f"from={w0}&to={w1}"
    month30 = [p.replace("period=month", span).replace("period=week", span)
               .replace("period=today", span) for p in probe.DASHBOARD]
    return {
        "usage_month_tenant": await probe.repeat(
            base, ["/admin/usage?period=month&group_by=tenant"], n),
        "usage_30d_tenant": await probe.repeat(base, [f"/admin/usage?{span}&group_by=tenant"], n),
        "usage_30d_user": await probe.repeat(base, [f"/admin/usage?{span}&group_by=user"], n),
        "budgets": await probe.repeat(base, ["/admin/budgets"], n),
        "dashboard": await probe.repeat(base, probe.DASHBOARD, n),
        "dashboard_30d": await probe.repeat(base, month30, n),
    }


async def in_process(url: str, meta: dict, n: int) -> dict:
    """Query times inside one process (no interpreter start): report and seeding."""
    from faregate.storage import Ledger, parse_date_range, render_report

    w0, w1 = _window(meta)
    start, end = parse_date_range(w0, w1)
    report_ms, seed_ms, rebuild_ms = [], [], []
    for _ in range(n):
        t = time.perf_counter()
        lg = await Ledger.open(url)
        render_report(await lg.usage(start, end, "tenant"), "tenant", "table")
        report_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await lg.spend_since(start, end - timedelta(days=1))
        seed_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await lg.rebuild_sessions()
        rebuild_ms.append((time.perf_counter() - t) * 1000)
        await lg.close()
    from faregate.storage._ledger_queries import REBUILD_WINDOW_S

    lg = await Ledger.open(url)
    try:
        p = lg._store.placeholder
        since = int(time.time() * 1000) - REBUILD_WINDOW_S * 1000
        (entries,) = (await lg._store.read(
            f"SELECT COUNT(*) FROM charges WHERE session_id IS NOT NULL AND ts_ms >= {p(1)}",
            [since]))[0]
    finally:
        await lg.close()
    return {"report_30d_ms": probe.summary(report_ms), "seed_30d_ms": probe.summary(seed_ms),
            "rebuild_ms": probe.summary(rebuild_ms), "rebuild_window_entries": int(entries)}


async def disk(url: str) -> dict:
    from faregate.storage._store import open_store

    store = await open_store(url)
    try:
        (rollups,) = (await store.read("SELECT COUNT(*) FROM rollups"))[0]
        if store.dialect == "sqlite":
            path = Path(url[len("sqlite:///"):])
            total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
            try:
                sizes = dict(await store.read("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
                roll = sum(v for k, v in sizes.items() if "rollups" in k)
            except Exception:  # no dbstat in this SQLite build
                roll = None
        else:
            total, roll = (await store.read(
                "SELECT pg_database_size(current_database()), "
                "pg_total_relation_size('rollups')"))[0]
        return {"bytes": int(total), "rollup_bytes": None if roll is None else int(roll),
                "rollup_rows": int(rollups)}
    finally:
        await store.close()


async def measure(backend: str, meta: dict, upstream: str, loadgen, args, work: Path) -> dict:
    url = meta["url"]
    starts, out = [], {}
    for k in range(args.starts):
        proc, base, secs = await probe.serve(work / f"{backend}-serve-{k}", upstream, url)
        starts.append(secs)
        log(f"{backend}: ready in {secs:.2f}s")
        try:
            if k == args.starts - 1:
                out["reads"] = await reads(base, meta, args.repeat)
                log(f"{backend}: reads {json.dumps(out['reads'])}")
                out["lag"] = await probe.lag_blocks(loadgen, base, args.rounds, args.rps,
                                                    args.block_s)
                log(f"{backend}: lag {json.dumps(out['lag'])}")
        finally:
            proc.stop()
    out["start_s"] = {"runs": [round(s, 3) for s in starts],
                      "median": round(statistics.median(starts), 3)}
    cfg = str(work / f"{backend}-serve-0" / "faregate.toml")
    w0, w1 = _window(meta)
    out["cli"] = {
        "report_month": probe.cli(["report", "--config", cfg, "--period", "month"], args.cli_n),
        "report_30d": probe.cli(["report", "--config", cfg, "--from", w0, "--to", w1], args.cli_n),
    }
    out["in_process"] = await in_process(url, meta, args.cli_n)
    out["disk"] = await disk(url)
    out["rows"] = meta["rows"]
    return out


async def small_point(backend: str, url: str, rows: int, upstream: str, work: Path,
                      n: int) -> dict:
    """Upgrade a schema-10 ledger of `rows` in place, then start on it and read it."""
    got = await upgrade(url, rows)
    proc, base, secs = await probe.serve(work / f"{backend}-small", upstream, url)
    try:
        w0, w1 = _window(got)
        got["usage_30d_tenant"] = await probe.repeat(
            base, [f"/admin/usage?from={w0}&to={w1}&group_by=tenant"], n)
    finally:
        proc.stop()
    got["start_s"] = round(secs, 3)
    return got


async def run(args) -> dict:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"rows": args.rows, "started": datetime.now().astimezone().isoformat(),
                     "machine": f"{platform.node()} {platform.machine()}, "
                                f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}"}
    sqlite_meta = await make_sqlite(args.rows, work)
    server = persistent_postgres(work)
    procs: list = []
    loadgen = None
    try:
        pg_meta = await make_postgres(args.rows, work, await _database(server, f"volume_{args.rows}"),
                                      sqlite_meta)
        results["generate"] = {"sqlite_rows_per_s": sqlite_meta.get("generate_rows_per_s"),
                               "copy_rows_per_s": pg_meta.get("copy_rows_per_s")}
        upstream, _ = start_upstream(procs)
        loadgen = Loadgen(work)
        results["import_ms"] = probe.import_ms(args.cli_n)
        results["backends"] = {}
        with tempfile.TemporaryDirectory(prefix="faregate-volume-") as tmp:
            for backend, meta in (("sqlite", sqlite_meta), ("postgresql", pg_meta)):
                results["backends"][backend] = await measure(
                    backend, meta, upstream, loadgen, args, Path(tmp))
            small = {}
            urls = {"sqlite": f"sqlite:///{tmp}/upgrade.db",
                    "postgresql": await _database(server, f"upgrade_{int(time.time())}")}
            for backend, url in urls.items():
                small[backend] = await small_point(backend, url, args.upgrade_rows, upstream,
                                                   Path(tmp), args.repeat)
            results["upgrade"] = small
    finally:
        if loadgen is not None:
            loadgen.stop()
        for p in procs:
            p.stop()
        server.stop()
    results["write_cost"] = await asyncio.to_thread(
        write_cost, args.baseline_src, args.write_records, args.write_rounds)
    results["projection"] = projection(results)
    results["finished"] = datetime.now().astimezone().isoformat()
    return results


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.volume")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--baseline-src", type=Path,
                    help="a checkout without rollups, for the write-cost comparison")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    args = ap.parse_args(argv)
    big = not args.smoke
    args.starts, args.repeat, args.cli_n = (3, 20, 5) if big else (1, 2, 1)
    args.rounds, args.rps, args.block_s = (3, 200, 4.0) if big else (1, 50, 0.5)
    args.upgrade_rows = 1_000_000 if big else 2_000
    args.write_records, args.write_rounds = (50_000, 3) if big else (2_000, 0)
    if args.smoke:
        args.rows = min(args.rows, 5_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    if args.markdown:
        command = "python -m bench.volume " + " ".join(sys.argv[1:])
        section = markdown_section(results, command.strip())
        old = args.markdown.read_text() if args.markdown.exists() else ""
        args.markdown.write_text(replace_section(old, section))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

