"""Big ledgers for bench/volume.py, generated once and reused.

    python -m bench.volume_data --rows 10000000 [--work bench/.volume] [--pg]

SQLite: `record()` into a `Ledger` (its own write path: queue, writer,
1,000-row transactions, rollups), in chunks so memory stays flat.
PostgreSQL: `copy_ledger` from that SQLite file (the import path: the
target's COPY, partitions and rollup trigger). A JSON file next to each
ledger says what it holds; a ledger whose file says the same rows and shape
is reused, so the slow part runs once.

The charges: 50 tenants, 500 users (each in one tenant) with a key each, 6
models, 4 endpoints, a `feature` tag on 30%, a Realtime session response on
5% (the first of each session flagged `session_start`), spread evenly over the
31 days before the generation time, ids made of
their own timestamp (as `new_id` does) so PostgreSQL's monthly partitions
follow the calendar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from faregate.storage import Ledger, LedgerRecord, copy_ledger, random_hex  # noqa: E402

WORK = ROOT / "bench" / ".volume"
SHAPE = 1  # bump when the generated charges change
SPAN = timedelta(days=31)
MODELS = ("gpt-4o", "gpt-4o-mini", "o3", "gpt-4.1", "gpt-realtime", "text-embedding-3-small")
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/realtime")
CHUNK = 20_000


def log(msg: str) -> None:
    print(f"[volume {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def charge(i: int, n: int, start_ms: int, span_ms: int) -> LedgerRecord:
    ts_ms = start_ms + i * span_ms // n
    user = i % 500
    session = i % 20 == 0
    inp, out = 100 + i % 900, 20 + i % 300
    return LedgerRecord(
        id=f"{ts_ms:012x}{random_hex(80)}", tenant=f"t{user % 50:02d}",
        model=MODELS[(i // 3) % 6], endpoint=ENDPOINTS[(i // 5) % 4], status=200,
        cost_nanos=inp * 150 + out * 600, ts=datetime.fromtimestamp(ts_ms / 1000, timezone.utc),
        user=f"u{user:03d}", key_id=f"k{user:03d}", request_id=f"fg_{i:024x}",
        tokens={"input": inp, "cached_input": inp // 4, "output": out},
        breakdown={"input": inp * 150, "output": out * 600}, price_version="bench",
        latency_ms=12.5, tags={"feature": f"f{i % 10}"} if i % 10 < 3 else {},
        session_id=f"fgs_{i // 2000:08x}" if session else None,
        response_id=f"resp_{i:x}" if session else None,
        flags=("session_start",) if i % 2000 == 0 else (),  # a session's first charge
    )


def meta_path(db: Path) -> Path:
    return db.with_suffix(".json")


def matches(db: Path, rows: int) -> dict | None:
    try:
        meta = json.loads(meta_path(db).read_text())
    except (OSError, ValueError):
        return None
    ok = meta.get("rows") == rows and meta.get("shape") == SHAPE and meta.get("complete")
    return meta if ok else None


async def make_sqlite(rows: int, work: Path) -> dict:
    """The SQLite ledger of `rows` charges (generated unless a matching one exists)."""
    db = work / f"sqlite-{rows}.db"
    meta = matches(db, rows)
    if meta is not None and db.exists():
        log(f"reusing {db} ({rows:,} charges)")
        return meta
    for p in work.glob(f"sqlite-{rows}.db*"):
        p.unlink()
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start_ms = int((end - SPAN).timestamp() * 1000)
    span_ms = int(SPAN.total_seconds() * 1000)
    url = f"sqlite:///{db}"
    lg = await Ledger.open(url, batch_size=1000)
    started = time.perf_counter()
    try:
        for base in range(0, rows, CHUNK):
            for i in range(base, min(rows, base + CHUNK)):
                lg.record(charge(i, rows, start_ms, span_ms))
                if i % 1000 == 999:
                    await asyncio.sleep(0)
            await lg.flush()
            if base % 1_000_000 == 0 and base:
                took = time.perf_counter() - started
                log(f"sqlite: {base:,} of {rows:,} ({base / took:,.0f} rows/s)")
        took = time.perf_counter() - started
        rebuilt = await lg.rebuild_sessions()  # session rows, as a serving ledger has them
    finally:
        await lg.close()
    meta = {"rows": rows, "shape": SHAPE, "complete": True, "url": url,
            "window_start": (end - SPAN).isoformat(), "window_end": end.isoformat(),
            "generate_s": round(took, 1), "generate_rows_per_s": round(rows / took),
            "sessions_rebuilt": rebuilt}
    meta_path(db).write_text(json.dumps(meta, indent=1))
    log(f"sqlite: {rows:,} charges in {took:.0f}s")
    return meta


async def make_postgres(rows: int, work: Path, pg_url: str, sqlite_meta: dict) -> dict:
    """The same charges in PostgreSQL, imported with `copy_ledger` unless already there."""
    marker = work / f"postgresql-{rows}.json"
    meta = matches(marker, rows)
    if meta is not None and meta.get("source_window") == sqlite_meta["window_start"]:
        log(f"reusing the PostgreSQL ledger ({rows:,} charges)")
        return meta
    from embedded_pg import reset_database

    await reset_database(pg_url)
    started = time.perf_counter()
    copied = await copy_ledger(sqlite_meta["url"], pg_url, lambda line: log(f"copy: {line}"))
    took = time.perf_counter() - started
    meta = {"rows": rows, "shape": SHAPE, "complete": copied["charges"] == rows, "url": pg_url,
            "source_window": sqlite_meta["window_start"],
            "window_start": sqlite_meta["window_start"], "window_end": sqlite_meta["window_end"],
            "copy_s": round(took, 1), "copy_rows_per_s": round(rows / took)}
    marker.write_text(json.dumps(meta, indent=1))
    log(f"postgresql: {rows:,} charges copied in {took:.0f}s")
    return meta


def persistent_postgres(work: Path):
    """An embedded PostgreSQL whose data directory lives in `work` (kept between runs)."""
    from embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(fsync=True, root=work / "pg")
    server.start()
    return server


async def _database(server, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(server.url())
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.url(name)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--pg", action="store_true", help="also the PostgreSQL copy")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    meta = await make_sqlite(args.rows, args.work)
    if args.pg:
        server = persistent_postgres(args.work)
        try:
            url = await _database(server, f"volume_{args.rows}")
            await make_postgres(args.rows, args.work, url, meta)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
