"""What bench/volume.py measures against a running faregate: start, reads, lag.

- `serve`: start `faregate serve` on a given ledger and time spawn → first
  `/readyz` 200 (migrations checked, sessions looked at, budgets seeded);
- `timed`: one admin GET, or the dashboard's whole refresh (its 12 calls at
  once, as the page makes them), in milliseconds;
- `lag_blocks`: an open-loop load of chat calls through faregate (in the
  load generator's own process), in blocks that alternate between quiet and
  "10 dashboard refreshes back to back"; for each kind the proxied-call
  latency and the ledger lag (`faregate_ledger_oldest_unwritten_seconds`,
  sampled every 50 ms: how old the oldest charge not yet in the database is).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from .run import Proc, faregate_argv, free_port, pct

ADMIN_TOKEN = "bench-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: The dashboard's refresh (proxy/static/dashboard.html), all at once.
DASHBOARD = [
    "/admin/usage?period=today", "/admin/usage?period=week", "/admin/usage?period=month",
    "/admin/usage?period=month&group_by=day", "/admin/usage?period=month&group_by=model",
    "/admin/usage?period=month&group_by=endpoint",
    "/admin/usage?period=month&group_by=tenant&top=10",
    "/admin/usage?period=month&group_by=user&top=10", "/admin/budgets",
    "/admin/sessions?active=true&limit=100", "/admin/sessions?active=false&limit=20",
    "/admin/alerts?limit=20",
]
CHAT = {"model": "gpt-4o-mini", "max_tokens": 20, "user": "bench-user",
        "messages": [{"role": "user", "content": "Say hello to the benchmark in five words."}]}


def config(work: Path, port: int, upstream: str, ledger_url: str) -> Path:
    """faregate.toml for a bench server: 50 tenants with monthly and per-user budgets."""
    lines = ["[server]", f'listen = "127.0.0.1:{port}"', f'upstream = "{upstream}"',
             "[storage]", f'url = "{ledger_url}"', f'journal_dir = "{work / "journal"}"']
    for t in range(50):
        lines += [f"[tenants.t{t:02d}]", "monthly_usd = 100000", "per_user_daily_usd = 1000"]
    path = work / "faregate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def serve(work: Path, upstream: str, ledger_url: str) -> tuple[Proc, str, float]:
    """Start faregate on the ledger; (process, base URL, seconds until /readyz said 200)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = config(work, port, upstream, ledger_url)
    env = {**os.environ, "FAREGATE_LOG_LEVEL": "WARNING", "FAREGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    log = open(work / "faregate.log", "ab")
    started = time.perf_counter()
    proc = Proc("faregate", [*faregate_argv(), "serve", "--config", str(cfg)], env=env,
                stderr=log, cwd=work)
    log.close()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.perf_counter() - started < 180:
            if not proc.alive():
                break
            try:
                async with s.get(base + "/readyz") as r:
                    if r.status == 200:
                        return proc, base, time.perf_counter() - started
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.01)
    proc.stop()
    tail = (work / "faregate.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"faregate did not become ready:\n{tail}")


async def timed(session: aiohttp.ClientSession, base: str, paths: list[str]) -> float:
    """Milliseconds until every one of `paths` (fetched at once) has answered 200."""
    async def get(path: str) -> None:
        async with session.get(base + path, headers=ADMIN) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status}")

    started = time.perf_counter()
    await asyncio.gather(*(get(p) for p in paths))
    return (time.perf_counter() - started) * 1000


async def repeat(base: str, paths: list[str], n: int) -> dict:
    async with aiohttp.ClientSession() as s:
        await timed(s, base, paths)  # warm-up
        ms = [await timed(s, base, paths) for _ in range(n)]
    return summary(ms)


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "median": round(statistics.median(ms), 2),
            "p95": round(pct(ms, 95) or 0, 2), "max": round(max(ms), 2)}


async def _metric(session: aiohttp.ClientSession, base: str, name: str) -> float | None:
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _block(loadgen, base: str, rps: float, seconds: float, dashboards: int) -> dict:
    """One block of load; with `dashboards`, that many full refreshes back to back."""
    cmd = {"op": "open", "url": base + "/v1/chat/completions", "body": CHAT, "rps": rps,
           "duration": seconds, "max_requests": int(rps * seconds) + 1, "grace": 5.0}
    load = asyncio.create_task(asyncio.to_thread(loadgen.run, cmd))
    lags: list[float] = []
    refreshes: list[float] = []
    async with aiohttp.ClientSession() as s:
        async def refresher() -> None:
            for _ in range(dashboards):
                refreshes.append(await timed(s, base, DASHBOARD))

        work = asyncio.create_task(refresher())
        while not load.done():
            lag = await _metric(s, base, "faregate_ledger_oldest_unwritten_seconds")
            if lag is not None:
                lags.append(lag)
            await asyncio.sleep(0.05)
        await work
    result = await load
    return {"lat": result["lat"], "errors": result["errors"], "lags": lags,
            "refresh_ms": refreshes}


async def lag_blocks(loadgen, base: str, rounds: int, rps: float, seconds: float) -> dict:
    """Quiet and dashboard blocks interleaved; pooled per kind."""
    pooled = {"quiet": {"lat": [], "lags": [], "errors": {}, "refresh_ms": []},
              "dashboard": {"lat": [], "lags": [], "errors": {}, "refresh_ms": []}}
    for n in range(rounds):
        order = ("quiet", "dashboard") if n % 2 == 0 else ("dashboard", "quiet")
        for kind in order:
            got = await _block(loadgen, base, rps, seconds, 10 if kind == "dashboard" else 0)
            acc = pooled[kind]
            for key in ("lat", "lags", "refresh_ms"):
                acc[key] += got[key]
            for k, v in got["errors"].items():
                acc["errors"][k] = acc["errors"].get(k, 0) + v
    out = {}
    for kind, acc in pooled.items():
        lat = acc["lat"]
        out[kind] = {
            "calls": len(lat), "errors": acc["errors"],
            "latency_p50_ms": round((pct(lat, 50) or 0) * 1000, 3),
            "latency_p99_ms": round((pct(lat, 99) or 0) * 1000, 3),
            "lag_p99_s": round(pct(acc["lags"], 99) or 0, 3),
            "lag_max_s": round(max(acc["lags"] or [0]), 3),
            "refreshes": len(acc["refresh_ms"]),
            "refresh_median_ms": round(statistics.median(acc["refresh_ms"]), 1)
            if acc["refresh_ms"] else None,
        }
    return out


def cli(args: list[str], n: int) -> dict:
    """Wall time of a `faregate …` command (a fresh process each time), ms."""
    ms = []
    for _ in range(n):
        started = time.perf_counter()
        done = subprocess.run([*faregate_argv(), *args], capture_output=True, timeout=300)
        ms.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace")[-2000:])
    return summary(ms)


def import_ms(n: int = 5) -> dict:
    """A fresh interpreter importing the CLI: what every `faregate` command pays first."""
    ms = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import faregate.proxy.cli, faregate.storage"],
                       check=True, timeout=60)
        ms.append((time.perf_counter() - started) * 1000)
    return summary(ms)
