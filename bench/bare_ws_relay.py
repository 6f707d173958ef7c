"""The Realtime baseline: a bare WebSocket relay, no metering, same stack as faregate's.

    python -m bench.bare_ws_relay --listen 127.0.0.1:PORT --upstream http://127.0.0.1:UP

aiohttp accepts the client's upgrade, `websockets` dials the upstream with the
same path, query and Authorization header (as faregate's relay does), and two
loops copy text and binary frames in order, one per direction, each awaiting
the other side's send. Whichever side closes ends both.
"""

import argparse
import asyncio

import websockets
from aiohttp import WSMsgType, web


def build(upstream: str) -> web.Application:
    base = upstream.replace("http://", "ws://", 1)

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with websockets.connect(base + request.rel_url.raw_path_qs,
                                      additional_headers=headers, max_size=None,
                                      compression=None) as up:
            client = web.WebSocketResponse(max_msg_size=0)
            await client.prepare(request)

            async def to_upstream() -> None:
                async for msg in client:
                    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                        await up.send(msg.data)

            async def to_client() -> None:
                async for frame in up:
                    if isinstance(frame, str):
                        await client.send_str(frame)
                    else:
                        await client.send_bytes(frame)

            tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await client.close()
            return client

    app = web.Application()
    app.router.add_get("/v1/realtime", relay)
    app.router.add_get("/healthz", lambda request: web.json_response({"ok": True}))
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    web.run_app(build(a.upstream.rstrip("/")), host=host, port=int(port), access_log=None,
                print=None, backlog=4096)
