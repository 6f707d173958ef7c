"""The fake OpenAI upstream in its own process: tests/fake_upstream.py, fixed think time.

    python -m bench.upstream --delay-ms 5 --chunk-delay-ms 5 --chunks 10

Prints `READY http://127.0.0.1:PORT` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_upstream import FakeUpstream  # noqa: E402


class _Forget(list):
    """FakeUpstream records every request for tests; a benchmark must not grow memory."""

    def append(self, item) -> None:  # noqa: D401
        pass


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=5.0, help="think time before answering")
    p.add_argument("--chunk-delay-ms", type=float, default=5.0, help="gap between SSE events")
    p.add_argument("--chunks", type=int, default=10, help="content deltas per stream")
    args = p.parse_args()
    fake = FakeUpstream(stream_chunks=args.chunks)
    fake.requests = _Forget()
    fake.delay_s = args.delay_ms / 1000.0
    fake.chunk_delay_s = args.chunk_delay_ms / 1000.0
    await fake.start(port=args.port)
    print(f"READY {fake.url}", flush=True)
    await until_signalled()
    await fake.stop()


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT (a bench process's way to stop cleanly)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signalled(app: web.Application, port: int = 0) -> None:
    """Serve `app` on 127.0.0.1, print `READY http://127.0.0.1:PORT`, stop on a signal."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    host, bound = runner.addresses[0][:2]
    print(f"READY http://{host}:{bound}", flush=True)
    await until_signalled()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
