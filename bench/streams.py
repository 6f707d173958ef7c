"""Many busy SSE streams at once, direct, through bare and through faregate (issue #25).

    python -m bench.streams [--streams 500] [--every-ms 50] [--seconds 4] [--rounds 2]
                            [--baseline OTHER/.venv/bin/faregate] [--json FILE]

Processes (127.0.0.1, stopped at the end): the ticking upstream
(bench/stream_upstream.py), the bare pass-through, `faregate serve` (SQLite
ledger, default logging: INFO with the access log) and the load generator.

Per block, one target: `--streams` chat streams are opened evenly over
`--ramp` s and held; each sends a content chunk every `--every-ms` (stamped
with its send instant), relayed and, through faregate, metered and billed.
While all are open (the steady window) every chunk read gives a delivery
latency (read instant minus send instant); a sampler thread reads the
proxy's CPU time and RSS every 50 ms, so CPU per chunk is the CPU over the
steady window divided by the chunks delivered in it, and RSS per open stream
is the window's peak minus the idle RSS (after a small warm-up), divided by
the streams. Targets run in a rotated order for `--rounds` rounds. At the
end faregate is stopped and its ledger must hold a row for every stream it
relayed to its end.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.run import (MODEL, Loadgen, Proc, Target, cpu_seconds, dist_ms, ledger_rows, log,
                       quiesce, rss_mb, start_bare, start_faregate, stop_all)

SETTLE_S = 0.2  # loadgen: the steady window starts this long after the last stream opened


class Sampler(threading.Thread):
    """(perf_counter, CPU seconds, RSS MiB) of one process every `every_s`, until stopped."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), cpu_seconds(self.pid), rss_mb(self.pid)))
            self._done.wait(self.every_s)

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def window(self, start: float, end: float) -> tuple[float, float, float]:
        """CPU seconds, elapsed and peak RSS between the samples nearest `start` and `end`."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0, 0.0
        return (inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0],
                max(s[2] for s in inside))


def start_ticker(every_ms: float, procs: list[Proc]) -> tuple[str, Proc]:
    proc = Proc("stream-upstream", [sys.executable, "-m", "bench.stream_upstream",
                                    "--every-ms", str(every_ms)], stdout=subprocess.PIPE)
    procs.append(proc)
    line = proc.p.stdout.readline().decode().strip()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        raise RuntimeError(f"stream upstream did not start: {line!r}")
    return line.split()[1], proc


def block(lg: Loadgen, t: Target, streams: int, ramp: float, seconds: float,
          every_s: float) -> dict:
    chunks = math.ceil((ramp + SETTLE_S + seconds) / every_s) + 2  # outlast the window
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": chunks, "user": "bench-streams",
            "messages": [{"role": "user", "content": "Stream to the benchmark."}]}
    sampler = Sampler(t.proc.pid) if t.proc else None
    if sampler:
        sampler.start()
    start = time.perf_counter()
    res = lg.run({"op": "ticks", "url": t.base + "/v1/chat/completions", "body": body,
                  "streams": streams, "ramp": ramp, "duration": seconds, "grace": 5.0})
    if sampler:
        sampler.stop()
    steady = start + ramp + SETTLE_S  # the loadgen's window, on the same monotonic clock
    cpu, elapsed, peak = sampler.window(steady, steady + seconds) if sampler else (0, 0, 0)
    return {**res, "cpu_s": cpu, "cpu_elapsed_s": elapsed, "rss_peak_mb": peak}


def summary(t: Target, blocks: list[dict], idle_mb: float | None, streams: int,
            every_s: float) -> dict:
    lat = [x for b in blocks for x in b["lat"]]
    gaps = [x for b in blocks for x in b["gaps"]]
    chunks = sum(b["chunks"] for b in blocks)
    steady = sum(b["steady_s"] for b in blocks)
    errors: dict[str, int] = {}
    for b in blocks:
        for k, v in b["errors"].items():
            errors[k] = errors.get(k, 0) + v
    row = {"streams": streams, "offered_chunks_per_s": round(streams / every_s),
           "chunks_per_s": round(chunks / steady) if steady else None,
           "latency_ms": dist_ms(lat), "gap_ms": dist_ms(gaps), "errors": errors,
           "completed_streams": sum(b["done"] for b in blocks)}
    if t.proc:
        cpu = sum(b["cpu_s"] for b in blocks)
        wall = sum(b["cpu_elapsed_s"] for b in blocks)
        row["cpu_pct"] = round(100 * cpu / wall, 1) if wall else None
        per_chunk = [1e6 * b["cpu_s"] / b["chunks"] * (b["steady_s"] / b["cpu_elapsed_s"])
                     for b in blocks if b["chunks"] and b["cpu_elapsed_s"]]
        row["cpu_us_per_chunk"] = round(statistics.median(per_chunk), 2) if per_chunk else None
        peak = max(b["rss_peak_mb"] for b in blocks)
        row["rss_idle_mb"] = round(idle_mb or 0, 1)
        row["rss_peak_mb"] = round(peak, 1)
        row["kib_per_stream"] = round((peak - (idle_mb or 0)) * 1024 / streams, 1)
    return row


def derive(rows: dict) -> dict:
    def added(name: str, base: str, q: str) -> float | None:
        try:
            return round(rows[name]["latency_ms"][q] - rows[base]["latency_ms"][q], 3)
        except (KeyError, TypeError):
            return None

    d = {f"added_ms.{n}": {q: added(n, "direct", q) for q in ("p50", "p99")}
         for n in ("bare", "faregate") if n in rows}
    d["faregate_over_bare_ms"] = {q: added("faregate", "bare", q) for q in ("p50", "p99")}
    fb, bb = (rows.get(n, {}).get("cpu_us_per_chunk") for n in ("faregate", "bare"))
    d["cpu_per_chunk_faregate_over_bare"] = round(fb / bb, 3) if fb and bb else None
    base = rows.get("faregate-base", {}).get("cpu_us_per_chunk")
    if base:
        d["cpu_per_chunk_faregate_over_base"] = round(fb / base, 3) if fb else None
        d["faregate_over_base_ms"] = {q: added("faregate", "faregate-base", q)
                                      for q in ("p50", "p99")}
    # On a CPU-bound machine a proxy's chunk throughput at saturation goes as 1 / CPU per chunk.
    d["chunk_capacity_vs_bare"] = round(bb / fb, 3) if fb and bb else None
    return d


def run(args: argparse.Namespace) -> dict:
    every_s = args.every_ms / 1000
    procs: list[Proc] = []
    lg: Loadgen | None = None
    tmp_ctx = tempfile.TemporaryDirectory(prefix="faregate-streams-")
    tmp = Path(tmp_ctx.name)
    try:
        up, up_proc = start_ticker(args.every_ms, procs)
        targets = [Target("direct", up, None), start_bare(up, procs)]
        if args.baseline:
            targets.append(start_faregate("faregate-base", up, tmp, "INFO", procs,
                                          [args.baseline]))
        fg = start_faregate("faregate", up, tmp, "INFO", procs)
        targets.append(fg)
        lg = Loadgen(tmp)
        pids = [up_proc.pid] + [t.proc.pid for t in targets if t.proc]
        idle: dict[str, float | None] = {}
        done = 0  # streams faregate answered to their end: each must be one ledger row
        for t in targets:  # warm-up: connections, first-call costs; then the idle RSS
            warm = block(lg, t, min(20, args.streams), 0.05, 0.1, every_s)
            done += warm["done"] if t.name == "faregate" else 0
            quiesce(pids)
            idle[t.name] = rss_mb(t.proc.pid) if t.proc else None
        blocks: dict[str, list[dict]] = {t.name: [] for t in targets}
        log(f"streams: {args.streams} streams x {args.rounds} rounds x {args.seconds}s, "
            f"a chunk every {args.every_ms} ms")
        for r in range(args.rounds):
            for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                blocks[t.name].append(block(lg, t, args.streams, args.ramp, args.seconds,
                                            every_s))
                quiesce(pids)
        rows = {t.name: summary(t, blocks[t.name], idle[t.name], args.streams, every_s)
                for t in targets}
        fg.proc.stop()  # type: ignore[union-attr]  # flushes its ledger
        done += rows["faregate"]["completed_streams"]
        recorded = ledger_rows(fg.db)  # type: ignore[attr-defined]
        check = {"completed_streams": done, "ledger_rows": recorded,
                 "all_recorded": recorded is not None and recorded >= done}
    finally:
        stop_all(lg, procs, tmp_ctx)
    return {"streams": args.streams, "every_ms": args.every_ms, "seconds": args.seconds,
            "rounds": args.rounds, "targets": rows, "derived": derive(rows),
            "ledger_check": check}


def report(res: dict) -> str:
    lines = [f"\n== {res['streams']} busy SSE streams, a chunk every {res['every_ms']} ms "
             f"({res['rounds']} rounds x {res['seconds']} s steady) ==",
             f"{'target':10}{'chunks/s':>10}{'lat p50':>9}{'p99':>8}{'max':>8}{'gap p99':>9}"
             f"{'cpu%':>7}{'µs/chunk':>10}{'KiB/stream':>11}{'err':>5}"]
    for name, r in res["targets"].items():
        lt = r["latency_ms"]
        lines.append(f"{name:10}{r['chunks_per_s']!s:>10}{lt['p50']!s:>9}{lt['p99']!s:>8}"
                     f"{lt['max']!s:>8}{r['gap_ms']['p99']!s:>9}{r.get('cpu_pct', '-')!s:>7}"
                     f"{r.get('cpu_us_per_chunk', '-')!s:>10}{r.get('kib_per_stream', '-')!s:>11}"
                     f"{sum(r['errors'].values()):>5}")
    lines += [f"{k}: {v}" for k, v in res["derived"].items()]
    lines.append(f"faregate ledger: {res['ledger_check']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--every-ms", type=float, default=50.0)
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds to open every stream")
    ap.add_argument("--seconds", type=float, default=4.0, help="steady window per block")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--baseline", metavar="EXE",
                    help="another build's `faregate`, run beside this one (faregate-base)")
    args = ap.parse_args(argv)
    if not (1 <= args.streams <= 5000 and 0 < args.seconds <= 60 and 1 <= args.rounds <= 10):
        ap.error("bounded: 1-5000 streams, at most 60 s per block, 1-10 rounds")
    res = run(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
