"""The baseline: a bare aiohttp reverse proxy, no metering, same shape as faregate's relay.

    python -m bench.bare_proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:UP

One pooled ClientSession, hop-by-hop headers dropped, bodies streamed both ways.
"""

import argparse

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


def build(upstream: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    client_key = web.AppKey("client", aiohttp.ClientSession)

    async def startup(app: web.Application) -> None:
        app[client_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))

    async def cleanup(app: web.Application) -> None:
        await app[client_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        body = await request.read()
        async with app[client_key].request(request.method, upstream + request.rel_url.raw_path_qs,
                                           headers=headers, data=body, allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    web.run_app(build(a.upstream.rstrip("/")), host=host, port=int(port), access_log=None, print=None)
