"""The load generator: its own process, driven by JSON lines on stdin.

    python -m bench.loadgen        (started by bench/run; one command per line)

Each command runs one bounded block against one target and answers one JSON
line on stdout with raw samples (seconds), so the orchestrator can pool blocks
of the same target across interleaved rounds. Commands:

- `{"op": "open", "url", "body", "rps", "duration", "max_requests", "grace"}`:
  open loop. Request i is *scheduled* at t0 + i/rps and its latency is
  measured from that scheduled instant, not from when it was actually sent,
  so a slow target cannot hide its queueing (no coordinated omission).
- `{"op": "closed", "url", "body", "concurrency", "duration", "max_requests", "grace"}`:
  saturation: `concurrency` workers send back to back until the deadline.
- `{"op": "sse", "url", "body", "rps", "duration", "max_requests", "grace"}`:
  open-loop streams; per stream the time to first body byte (from the
  scheduled instant), every gap between body reads, reads and events.
- `{"op": "ticks", "url", "body", "streams", "ramp", "duration", "grace"}`:
  many busy streams (bench/streams.py): `streams` streams opened evenly over
  `ramp` s and held; each content chunk carries its upstream send instant
  (`@<perf_counter>`, bench/stream_upstream.py), so every chunk read once all
  are open gives a delivery latency; plus the gaps between reads.
- `{"op": "quit"}`.

Any command may carry `"headers"`: sent with every request beside the bench's
key (a peer that is routed by headers, like the Portkey gateway).

Every block is bounded in count (max_requests) and time (duration + grace:
whatever is still in flight then is cancelled and counted as a timeout).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import aiohttp

# Same key as run.API_KEY: forwarded by faregate (passthrough), LiteLLM's master key.
HEADERS = {"Authorization": "Bearer sk-b3nch5a1f0e2d4c6b8a0f1e3d5c7b9a1f0e2d4c6b8a0f1e3d5c7b9",
           "Content-Type": "application/json"}


def request_headers(cmd: dict) -> dict[str, str]:
    """HEADERS plus a target's own (`"headers"`: e.g. the Portkey gateway's routing)."""
    extra = cmd.get("headers") or {}
    return {**HEADERS, **{str(k)[:100]: str(v)[:500] for k, v in list(extra.items())[:16]}}


STAMP = re.compile(rb'"content":\s*"@([0-9.]+)"')


async def _refused(r: aiohttp.ClientResponse, errors: dict[str, int]) -> bool:
    """A non-200 answer: its body read, counted by status."""
    if r.status == 200:
        return False
    await r.read()
    errors[str(r.status)] = errors.get(str(r.status), 0) + 1
    return True


class Loadgen:
    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, url: str) -> aiohttp.ClientSession:
        base = url.split("/v1/", 1)[0]
        s = self.sessions.get(base)
        if s is None:
            s = self.sessions[base] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
                auto_decompress=False,
            )
        return s

    async def close(self) -> None:
        for s in self.sessions.values():
            await s.close()

    @staticmethod
    async def _bounded(tasks: list[asyncio.Task], deadline: float) -> int:
        """Wait for tasks until `deadline` (perf_counter); cancel the rest, return how many."""
        pending = [t for t in tasks if not t.done()]
        if pending:
            _, pending_set = await asyncio.wait(pending, timeout=max(0.0, deadline - time.perf_counter()))
            for t in pending_set:
                t.cancel()
            if pending_set:
                await asyncio.gather(*pending_set, return_exceptions=True)
            return len(pending_set)
        return 0

    async def open(self, cmd: dict) -> dict:
        session, url = self.session(cmd["url"]), cmd["url"]
        headers = request_headers(cmd)
        body = json.dumps(cmd["body"]).encode()
        rps, duration = float(cmd["rps"]), float(cmd["duration"])
        n = min(int(rps * duration), int(cmd["max_requests"]))
        lat: list[float] = []
        errors: dict[str, int] = {}

        async def one(sched: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
                lat.append(time.perf_counter() - sched)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter() + 0.005
        tasks = []
        for i in range(n):
            sched = t0 + i / rps
            delay = sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sched)))
        timeouts = await self._bounded(tasks, t0 + duration + float(cmd.get("grace", 5.0)))
        if timeouts:
            errors["timeout"] = errors.get("timeout", 0) + timeouts
        elapsed = time.perf_counter() - t0
        return {"lat": lat, "errors": errors, "sent": n, "elapsed": elapsed}

    async def closed(self, cmd: dict) -> dict:
        session, url = self.session(cmd["url"]), cmd["url"]
        headers = request_headers(cmd)
        body = json.dumps(cmd["body"]).encode()
        duration, cap = float(cmd["duration"]), int(cmd["max_requests"])
        lat: list[float] = []
        errors: dict[str, int] = {}
        sent = 0
        t0 = time.perf_counter()
        stop_at = t0 + duration

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < stop_at and sent < cap:
                sent += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                        if not ok:
                            errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if ok:
                    lat.append(time.perf_counter() - start)

        tasks = [asyncio.create_task(worker()) for _ in range(int(cmd["concurrency"]))]
        timeouts = await self._bounded(tasks, stop_at + float(cmd.get("grace", 5.0)))
        if timeouts:
            errors["timeout"] = errors.get("timeout", 0) + timeouts
        # Throughput over the loaded window: completions / time until the last one.
        elapsed = time.perf_counter() - t0
        return {"lat": lat, "errors": errors, "sent": sent, "elapsed": elapsed}

    async def sse(self, cmd: dict) -> dict:
        session, url = self.session(cmd["url"]), cmd["url"]
        headers = request_headers(cmd)
        body = json.dumps(cmd["body"]).encode()
        rps, duration = float(cmd["rps"]), float(cmd["duration"])
        n = min(int(rps * duration), int(cmd["max_requests"]))
        ttfb: list[float] = []
        gaps: list[float] = []
        total: list[float] = []
        reads: list[int] = []
        events: list[int] = []
        errors: dict[str, int] = {}

        async def one(sched: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    if await _refused(r, errors):
                        return
                    last = None
                    count = ev = 0
                    tail = b""
                    async for chunk in r.content.iter_any():
                        now = time.perf_counter()
                        if last is None:
                            ttfb.append(now - sched)
                        else:
                            gaps.append(now - last)
                        last = now
                        count += 1
                        ev += (tail + chunk).count(b"\n\n")
                        tail = chunk[-1:]
                total.append(time.perf_counter() - sched)
                reads.append(count)
                events.append(ev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter() + 0.005
        tasks = []
        for i in range(n):
            sched = t0 + i / rps
            delay = sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sched)))
        timeouts = await self._bounded(tasks, t0 + duration + float(cmd.get("grace", 5.0)))
        if timeouts:
            errors["timeout"] = errors.get("timeout", 0) + timeouts
        return {"ttfb": ttfb, "gaps": gaps, "total": total, "reads": reads, "events": events,
                "errors": errors, "sent": n, "elapsed": time.perf_counter() - t0}


    async def ticks(self, cmd: dict) -> dict:
        session, url = self.session(cmd["url"]), cmd["url"]
        headers = request_headers(cmd)
        body = json.dumps(cmd["body"]).encode()
        streams, ramp = int(cmd["streams"]), float(cmd["ramp"])
        lat: list[float] = []
        gaps: list[float] = []
        errors: dict[str, int] = {}
        counts = {"chunks": 0, "done": 0}
        t0 = time.perf_counter() + 0.005
        steady = t0 + ramp + 0.2  # every stream open (and past its first chunk)
        stop_at = steady + float(cmd["duration"])

        async def one() -> None:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    if await _refused(r, errors):
                        return
                    last = None
                    async for chunk in r.content.iter_any():
                        now = time.perf_counter()
                        if steady <= now < stop_at:
                            for m in STAMP.finditer(chunk):
                                lat.append(now - float(m.group(1)))
                                counts["chunks"] += 1
                            if last is not None:
                                gaps.append(now - last)
                        last = now
                counts["done"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        tasks = []
        for i in range(streams):
            delay = t0 + i * ramp / streams - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        timeouts = await self._bounded(tasks, stop_at + float(cmd.get("grace", 5.0)))
        if timeouts:
            errors["timeout"] = errors.get("timeout", 0) + timeouts
        return {"lat": lat, "gaps": gaps, "chunks": counts["chunks"], "done": counts["done"],
                "errors": errors, "sent": streams, "steady_s": stop_at - steady,
                "elapsed": time.perf_counter() - t0}


async def main() -> None:
    gen = Loadgen()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            result = await getattr(gen, cmd["op"])(cmd)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        await gen.close()


if __name__ == "__main__":
    asyncio.run(main())
