"""Realtime at load: many sessions talking audio both ways at real-time rate (issue #25).

    python -m bench.realtime_load [--sessions 150] [--seconds 4] [--rounds 2] [--json FILE]

Processes (127.0.0.1, stopped at the end): the talking upstream
(bench/rt_upstream.py), the bare WebSocket relay (bench/bare_ws_relay.py) and
`faregate serve` (SQLite ledger, default logging: INFO with the access log);
the sessions' client runs in this process (aiohttp).

Per block, one target (direct, bare, faregate): `--sessions` Realtime sessions
open evenly over `--ramp` s and are held. Each sends one
`input_audio_buffer.append` of 40 ms of 24 kHz PCM16 mono (1,920 bytes,
base64) every 40 ms, and the upstream sends it one `response.output_audio.delta`
of the same size every 40 ms, in responses of 25 deltas closed by a
`response.done` with usage (so faregate meters and bills as in production).
Every audio frame carries its send instant in its `event_id`
(`event_t<perf_counter>`; CLOCK_MONOTONIC is shared by the processes): the
client reads the downstream latency of each delta, the upstream the upstream
latency of each append. Only frames sent in the steady window (all sessions
open) count. A sampler thread reads the relay's CPU time and RSS every 50 ms:
CPU per relayed frame (both directions) over the window, and RSS per session
above the idle RSS. Targets run in a rotated order for `--rounds` rounds; the
verdicts compare faregate with bare. At the end faregate is stopped and its
ledger must hold a row for every response it relayed whole.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
import os
import urllib.request
from pathlib import Path

import aiohttp

from bench.rt_upstream import STAMP
from bench.run import (CLK, Proc, Target, dist_ms, free_port, ledger_rows, log, merge_errors,
                       quiesce, rss_mb, start_faregate, stop_all, wait_http)
from bench.streams import Sampler

FRAME_S = 0.04
FRAME_BYTES = 1920  # 40 ms of 24 kHz PCM16 mono
RESPONSE_FRAMES = 25
SETTLE_S = 0.3  # the steady window starts this long after the last session opened
AUTH = {"Authorization": "Bearer sk-bench"}
AUDIO = base64.b64encode(b"\x03\x04" * (FRAME_BYTES // 2)).decode()
HEAD = '{"event_id":"event_t'
PAGE = os.sysconf("SC_PAGE_SIZE")


class LightSampler(Sampler):
    """Sampler of one process only: it shares the GIL with the sessions' client, so it
    reads two /proc files per sample instead of walking every process's (`tree`)."""

    def run(self) -> None:
        while not self._done.is_set():
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{self.pid}/statm") as f:
                    pages = int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                break
            cpu = (int(fields[11]) + int(fields[12])) / CLK
            self.samples.append((time.perf_counter(), cpu, pages * PAGE / 2**20))
            self._done.wait(self.every_s)


def start_upstream(procs: list[Proc]) -> tuple[str, Proc]:
    proc = Proc("rt-upstream", [sys.executable, "-m", "bench.rt_upstream", "--frame-ms",
                                str(FRAME_S * 1000), "--frame-bytes", str(FRAME_BYTES),
                                "--response-frames", str(RESPONSE_FRAMES)],
                stdout=subprocess.PIPE)
    procs.append(proc)
    line = proc.p.stdout.readline().decode().strip()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        raise RuntimeError(f"Realtime upstream did not start: {line!r}")
    return line.split()[1], proc


def start_bare_ws(upstream: str, procs: list[Proc]) -> Target:
    port = free_port()
    proc = Proc("bare-ws", [sys.executable, "-m", "bench.bare_ws_relay", "--listen",
                            f"127.0.0.1:{port}", "--upstream", upstream])
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    if not wait_http(base + "/healthz", 20, proc):
        raise RuntimeError("bare WebSocket relay did not start")
    return Target("bare", base, proc)


def upstream_stats(upstream: str) -> dict:
    with urllib.request.urlopen(upstream + "/bench/stats", timeout=30) as r:
        return json.loads(r.read())


async def one_session(http: aiohttp.ClientSession, url: str, start_at: float, close_at: float,
                      down: list[tuple[float, float]], errors: dict[str, int]) -> None:
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    try:
        async with http.ws_connect(url, headers=AUTH, max_msg_size=0, compress=0) as ws:
            await asyncio.wait_for(ws.receive(), 10)  # session.created
            reader = asyncio.create_task(read_deltas(ws, down))
            t0, k = time.perf_counter(), 0
            while not reader.done():
                k += 1
                at = t0 + k * FRAME_S
                if at > close_at:
                    break
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                await ws.send_str(f'{HEAD}{time.perf_counter():.6f}",'
                                  f'"type":"input_audio_buffer.append","audio":"{AUDIO}"}}')
            await ws.close()
            await asyncio.wait_for(reader, 10)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1


async def read_deltas(ws: aiohttp.ClientWebSocketResponse,
                      down: list[tuple[float, float]]) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        now, data = time.perf_counter(), msg.data
        if data.startswith(HEAD):
            stamp = float(data[len(HEAD):data.index('"', len(HEAD))])
        elif (m := STAMP.search(data)) is not None:  # a relay that re-serialised the event
            stamp = float(m.group(1))
        else:
            continue
        down.append((stamp, now - stamp))


async def drive(url: str, sessions: int, ramp: float, seconds: float) -> dict:
    down: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    steady = start + ramp + SETTLE_S
    close_at = steady + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.wait_for(asyncio.gather(*(
            one_session(http, url, start + ramp * i / sessions, close_at, down, errors)
            for i in range(sessions))), ramp + SETTLE_S + seconds + 30)
    return {"down": down, "errors": errors, "steady": steady, "end": close_at}


def block(t: Target, upstream: str, sessions: int, ramp: float, seconds: float) -> dict:
    url = t.base.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    before = upstream_stats(upstream)["responses"]
    sampler = LightSampler(t.proc.pid) if t.proc else None
    if sampler:
        sampler.start()
    res = asyncio.run(drive(url, sessions, ramp, seconds))
    if sampler:
        sampler.stop()
    stats = upstream_stats(upstream)
    lo, hi = res["steady"], res["end"]
    down = [lat for s, lat in res["down"] if lo <= s < hi]
    up = [lat for s, lat in stats["received"] if lo <= s < hi]
    cpu, elapsed, peak = sampler.window(lo, hi) if sampler else (0.0, 0.0, 0.0)
    return {"down": down, "up": up, "errors": res["errors"], "window_s": hi - lo,
            "responses": stats["responses"] - before, "cpu_s": cpu, "cpu_elapsed_s": elapsed,
            "rss_peak_mb": peak}


def summary(t: Target, blocks: list[dict], idle_mb: float | None, sessions: int) -> dict:
    up = [x for b in blocks for x in b["up"]]
    down = [x for b in blocks for x in b["down"]]
    window = sum(b["window_s"] for b in blocks)
    errors: dict[str, int] = {}
    for b in blocks:
        errors = merge_errors(errors, b["errors"])
    row = {"sessions": sessions, "offered_frames_per_s": round(2 * sessions / FRAME_S),
           "frames_per_s": round((len(up) + len(down)) / window) if window else None,
           "latency_ms": dist_ms(up + down), "up_ms": dist_ms(up), "down_ms": dist_ms(down),
           "errors": errors, "responses": sum(b["responses"] for b in blocks)}
    if t.proc:
        cpu = sum(b["cpu_s"] for b in blocks)
        wall = sum(b["cpu_elapsed_s"] for b in blocks)
        row["cpu_pct"] = round(100 * cpu / wall, 1) if wall else None
        per = [1e6 * b["cpu_s"] / (len(b["up"]) + len(b["down"])) * (b["window_s"] /
               b["cpu_elapsed_s"]) for b in blocks if b["up"] and b["down"] and b["cpu_elapsed_s"]]
        row["cpu_us_per_frame"] = round(statistics.median(per), 2) if per else None
        peak = max(b["rss_peak_mb"] for b in blocks)
        row["rss_idle_mb"] = round(idle_mb or 0, 1)
        row["rss_peak_mb"] = round(peak, 1)
        row["kib_per_session"] = round((peak - (idle_mb or 0)) * 1024 / sessions, 1)
    return row


def derive(rows: dict) -> dict:
    def over(name: str, base: str, key: str, q: str) -> float | None:
        try:
            return round(rows[name][key][q] - rows[base][key][q], 3)
        except (KeyError, TypeError):
            return None

    d: dict = {f"added_ms.{n}": {q: over(n, "direct", "latency_ms", q) for q in ("p50", "p99")}
               for n in ("bare", "faregate") if n in rows}
    for key in ("latency_ms", "up_ms", "down_ms"):
        d[f"faregate_over_bare.{key}"] = {q: over("faregate", "bare", key, q)
                                          for q in ("p50", "p99")}
    fb, bb = (rows.get(n, {}).get("cpu_us_per_frame") for n in ("faregate", "bare"))
    d["cpu_per_frame_faregate_over_bare"] = round(fb / bb, 3) if fb and bb else None
    return d


def run(args: argparse.Namespace) -> dict:
    procs: list[Proc] = []
    tmp_ctx = tempfile.TemporaryDirectory(prefix="faregate-rt-load-")
    tmp = Path(tmp_ctx.name)
    try:
        log("realtime load: starting the upstream, the bare relay and faregate")
        up, up_proc = start_upstream(procs)
        fg = start_faregate("faregate", up, tmp, "INFO", procs)
        targets = [Target("direct", up, None), start_bare_ws(up, procs), fg]
        pids = [up_proc.pid] + [t.proc.pid for t in targets if t.proc]
        idle: dict[str, float | None] = {}
        whole = 0  # responses faregate relayed to their response.done: each is a ledger row
        for t in targets:  # warm-up: first-call costs; then the idle RSS
            warm = block(t, up, min(10, args.sessions), 0.05, min(0.3, args.seconds))
            whole += warm["responses"] if t is fg else 0
            quiesce(pids)
            idle[t.name] = rss_mb(t.proc.pid) if t.proc else None
        blocks: dict[str, list[dict]] = {t.name: [] for t in targets}
        log(f"realtime load: {args.sessions} sessions x {args.rounds} rounds x {args.seconds}s, "
            f"an audio frame each way every {FRAME_S * 1000:.0f} ms")
        for r in range(args.rounds):
            for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                blocks[t.name].append(block(t, up, args.sessions, args.ramp, args.seconds))
                quiesce(pids)
        rows = {t.name: summary(t, blocks[t.name], idle[t.name], args.sessions)
                for t in targets}
        fg.proc.stop()  # type: ignore[union-attr]  # flushes its ledger
        recorded = ledger_rows(fg.db)  # type: ignore[attr-defined]
        whole += rows["faregate"]["responses"]
        check = {"responses_relayed": whole, "ledger_rows": recorded,
                 "all_recorded": recorded is not None and recorded >= whole}
    finally:
        stop_all(None, procs, tmp_ctx)
    return {"sessions": args.sessions, "seconds": args.seconds, "rounds": args.rounds,
            "frame_ms": FRAME_S * 1000, "frame_bytes": FRAME_BYTES, "targets": rows,
            "derived": derive(rows), "ledger_check": check}


def report(res: dict) -> str:
    lines = [f"\n== Realtime at load: {res['sessions']} sessions, {res['frame_bytes']}-byte "
             f"audio frames each way every {res['frame_ms']:.0f} ms ({res['rounds']} rounds x "
             f"{res['seconds']} s steady) ==",
             f"{'target':10}{'frames/s':>10}{'lat p50':>9}{'p99':>8}{'max':>8}{'up p99':>8}"
             f"{'down p99':>9}{'cpu%':>7}{'µs/frame':>10}{'KiB/sess':>10}{'err':>5}"]
    for name, r in res["targets"].items():
        lt = r["latency_ms"]
        lines.append(f"{name:10}{r['frames_per_s']!s:>10}{lt['p50']!s:>9}{lt['p99']!s:>8}"
                     f"{lt['max']!s:>8}{r['up_ms']['p99']!s:>8}{r['down_ms']['p99']!s:>9}"
                     f"{r.get('cpu_pct', '-')!s:>7}{r.get('cpu_us_per_frame', '-')!s:>10}"
                     f"{r.get('kib_per_session', '-')!s:>10}{sum(r['errors'].values()):>5}")
    lines += [f"{k}: {v}" for k, v in res["derived"].items()]
    lines.append(f"faregate ledger: {res['ledger_check']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.realtime_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=150)
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds to open every session")
    ap.add_argument("--seconds", type=float, default=4.0, help="steady window per block")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if not (1 <= args.sessions <= 2000 and 0 < args.seconds <= 60 and 1 <= args.rounds <= 10
            and 0 < args.ramp <= 30):
        ap.error("bounded: 1-2000 sessions, at most 60 s per block and 30 s of ramp, "
                 "1-10 rounds")
    res = run(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
