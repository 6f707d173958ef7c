"""A Realtime upstream that talks audio both ways at real-time rate (bench/realtime_load.py).

    python -m bench.rt_upstream [--frame-ms 40] [--frame-bytes 1920] [--response-frames 25]

`GET /v1/realtime` (a bearer key required) answers `session.created`, then
speaks one response after another on a fixed schedule from the handshake:
`response.created`, `--response-frames` `response.output_audio.delta` events
one every `--frame-ms` (each `--frame-bytes` of PCM16, base64), then
`response.done` with usage, for as long as the client stays (at most
MAX_SECONDS). Every delta's `event_id` is `event_t<time.perf_counter()>` at
its write; CLOCK_MONOTONIC is shared by every process on the machine, so the
client reads each frame's delivery latency through any relay. Every
`input_audio_buffer.append` the client sends is stamped the same way by the
client: on receipt the upstream keeps (stamp, latency), and
`GET /bench/stats` hands the pairs over and forgets them. Prints
`READY http://127.0.0.1:PORT`; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import time

from aiohttp import WSMsgType, web

from bench.upstream import serve_until_signalled

MAX_SECONDS = 600.0  # a session that is never closed still ends
MAX_KEPT = 2_000_000  # received stamps held between two /bench/stats reads
STAMP = re.compile(r'"event_id"\s*:\s*"event_t([0-9.]{1,24})"')


class Talker:
    def __init__(self, frame_s: float, frame_bytes: int, response_frames: int) -> None:
        self.frame_s, self.response_frames = frame_s, response_frames
        self.audio = base64.b64encode(b"\x01\x02" * (frame_bytes // 2)).decode()
        self.ids = itertools.count(1)
        self.received: list[tuple[float, float]] = []  # (client stamp, latency), seconds
        self.responses = 0  # response.done events sent

    async def stats(self, request: web.Request) -> web.Response:
        got, self.received = self.received, []
        return web.json_response({"received": got, "responses": self.responses})

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").lower().startswith("bearer "):
            return web.json_response({"error": {"message": "Missing bearer key",
                                                "code": "missing_api_key"}}, status=401)
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = next(self.ids)
        await ws.send_str(json.dumps({
            "event_id": f"event_s{sid}", "type": "session.created", "session": {
                "id": f"sess_{sid}", "object": "realtime.session", "type": "realtime",
                "model": request.query.get("model", "gpt-realtime"),
                "output_modalities": ["audio"], "audio": {"input": {"turn_detection": None}}}}))
        talk = asyncio.create_task(self._talk(ws, sid))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                now = time.perf_counter()
                m = STAMP.search(msg.data, 0, 96) or STAMP.search(msg.data)
                if m and len(self.received) < MAX_KEPT:
                    stamp = float(m.group(1))
                    self.received.append((stamp, now - stamp))
        finally:
            talk.cancel()
        return ws

    async def _talk(self, ws: web.WebSocketResponse, sid: int) -> None:
        start, k, n = time.perf_counter(), 0, 0
        try:
            while time.perf_counter() - start < MAX_SECONDS:
                n += 1
                rid = f"resp_{sid}_{n}"
                await ws.send_str(json.dumps({
                    "event_id": f"event_r{sid}_{n}", "type": "response.created", "response": {
                        "object": "realtime.response", "id": rid, "status": "in_progress",
                        "output": []}}))
                for _ in range(self.response_frames):
                    k += 1
                    wait = start + k * self.frame_s - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await ws.send_str(
                        f'{{"event_id":"event_t{time.perf_counter():.6f}",'
                        f'"type":"response.output_audio.delta","response_id":"{rid}",'
                        f'"item_id":"item_{sid}_{n}","output_index":0,"content_index":0,'
                        f'"delta":"{self.audio}"}}')
                await ws.send_str(json.dumps(self._done(sid, n, rid)))
                self.responses += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass

    def _done(self, sid: int, n: int, rid: str) -> dict:
        seconds = self.response_frames * self.frame_s
        audio_in, audio_out, text_in = round(10 * seconds), round(20 * seconds), 10
        usage = {"total_tokens": text_in + audio_in + audio_out,
                 "input_tokens": text_in + audio_in, "output_tokens": audio_out,
                 "input_token_details": {
                     "text_tokens": text_in, "audio_tokens": audio_in, "image_tokens": 0,
                     "cached_tokens": 0, "cached_tokens_details": {
                         "text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
                 "output_token_details": {"text_tokens": 0, "audio_tokens": audio_out}}
        return {"event_id": f"event_d{sid}_{n}", "type": "response.done", "response": {
            "object": "realtime.response", "id": rid, "status": "completed", "output": [],
            "conversation_id": "conv_1", "usage": usage}}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--frame-ms", type=float, default=40.0)
    p.add_argument("--frame-bytes", type=int, default=1920)
    p.add_argument("--response-frames", type=int, default=25)
    args = p.parse_args()
    talker = Talker(args.frame_ms / 1000, args.frame_bytes, max(1, args.response_frames))
    app = web.Application()
    app.router.add_get("/v1/realtime", talker.realtime)
    app.router.add_get("/bench/stats", talker.stats)
    await serve_until_signalled(app, args.port)


if __name__ == "__main__":
    asyncio.run(main())
