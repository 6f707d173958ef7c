"""A ticking SSE upstream for many busy streams (bench/streams.py), in its own process.

    python -m bench.stream_upstream --every-ms 50

`POST /v1/chat/completions` with `"stream": true` answers a chat completion
stream of `max_tokens` content chunks (at most 10,000), one every `--every-ms`
on a fixed schedule from the first, then the finish chunk, the usage chunk and
`[DONE]`. Each content delta is `@<time.perf_counter() at the write>`: the
clock is CLOCK_MONOTONIC, shared by every process on the machine, so a reader
measures each chunk's delivery latency through any proxy. Prints
`READY http://127.0.0.1:PORT`; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

from bench.upstream import serve_until_signalled

MAX_CHUNKS = 10_000
SNAPSHOT = "gpt-4o-mini-2024-07-18"


def _event(data: dict | str) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


class Ticker:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.ids = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"error": {"message": "this upstream only streams"}},
                                     status=400)
        chunks = max(1, min(int(body.get("max_tokens") or 1), MAX_CHUNKS))
        self.ids += 1
        head = {"id": f"chatcmpl-tick{self.ids}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": SNAPSHOT, "service_tier": "default",
                "system_fingerprint": "fp_tick0001", "usage": None}
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        start = time.perf_counter()
        try:
            await resp.write(_event({**head, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}))
            for k in range(chunks):
                wait = start + (k + 1) * self.every_s - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                stamp = f"@{time.perf_counter():.6f}"
                await resp.write(_event({**head, "choices": [
                    {"index": 0, "delta": {"content": stamp}, "logprobs": None,
                     "finish_reason": None}]}))
            prompt = 20
            usage = {"prompt_tokens": prompt, "completion_tokens": chunks,
                     "total_tokens": prompt + chunks,
                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
            await resp.write(_event({**head, "choices": [
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]}))
            await resp.write(_event({**head, "choices": [], "usage": usage}))
            await resp.write(_event("[DONE]"))
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):  # the reader went away
            pass
        return resp


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--every-ms", type=float, default=50.0)
    args = p.parse_args()
    ticker = Ticker(args.every_ms / 1000)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", ticker.chat)
    await serve_until_signalled(app, args.port)


if __name__ == "__main__":
    asyncio.run(main())
