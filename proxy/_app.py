"""The aiohttp application: routes, startup and orderly shutdown.

`build_app(settings, config_path)` validates the config and registers the
routes; at startup `Services` opens the ledger and builds the rooms, and
each route hands its request to the edge that answers it (`/metrics` behind
its token, or on its own `metrics_listen` address). On shutdown the relay
drains, then leases, the notifier, capture, the client and the ledger are
closed in that order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from . import _errors as errors
from ._config import Settings, parse_listen
from ._ids import new_request_id
from ._metrics import Metrics
from ._runtime import Reloader, Runtime, log_warnings, restart_only_changes
from ._scrape import elsewhere, metrics_refusal
from ._services import Services
from .admin import Admin

log = logging.getLogger("faregate.app")

SERVICES_KEY = web.AppKey("faregate_services", Services)
RELOADER_KEY = web.AppKey("faregate_reloader", Reloader)
_BOOT_KEY = web.AppKey("faregate_boot", Runtime)
_METRICS_KEY = web.AppKey("faregate_metrics", Metrics)
_METRICS_RUNNER_KEY = web.AppKey("faregate_metrics_runner", web.AppRunner)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(settings: Settings, config_path: Path | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[_BOOT_KEY] = Runtime.build(settings, str(config_path or "<config>"))
    app[_METRICS_KEY] = metrics = Metrics()

    def apply(runtime: Runtime) -> None:
        services = app[SERVICES_KEY]
        changed = restart_only_changes(services.runtime.settings, runtime.settings)
        if changed:
            log.warning("some settings take effect on restart", extra={"settings": changed})
        services.apply(runtime)

    app[RELOADER_KEY] = Reloader(
        config_path, apply, lambda result: metrics.config_reloads.labels(result).inc(),
        table=settings.pricing.table)

    def edge(pick: Callable[[Services], Handler]) -> Handler:
        """A route whose handler is built at startup."""
        async def handler(request: web.Request) -> web.StreamResponse:
            return await pick(app[SERVICES_KEY])(request)
        return handler

    if settings.server.metrics_listen:
        app.router.add_get("/metrics", _metrics_elsewhere)
    else:
        app.router.add_get("/metrics", _metrics_handler(app))
    app.router.add_get("/healthz", edge(lambda s: s.healthz))
    app.router.add_get("/readyz", edge(lambda s: s.readyz))
    for method, path, name in Admin.ROUTES:
        app.router.add_route(method, path, edge(lambda s, n=name: s.admin.handler(n)))
    app.router.add_route("*", r"/v1/{tail:[\s\S]*}", edge(lambda s: s.v1))  # newlines too
    app.router.add_route("*", r"/{tail:[\s\S]*}", _elsewhere)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _elsewhere(request: web.Request) -> web.Response:
    """Anything outside /v1 and faregate's own routes: an OpenAI-shaped 404 that says
    where the API is (an SDK whose base URL lacks /v1 lands here)."""
    return errors.openai_error(
        404, "invalid_request_error", "unknown_url",
        f"faregate serves the OpenAI API under /v1: {request.method} {request.path[:200]!r} "
        "is not a route here. Set the client's base URL to http://HOST:PORT/v1.",
        request_id=new_request_id())


def _metrics_handler(app: web.Application) -> Handler:
    """`/metrics`, behind the metrics token when one is configured."""
    async def handler(request: web.Request) -> web.StreamResponse:
        services = app[SERVICES_KEY]
        refused = metrics_refusal(request, services.runtime.settings.server)
        return refused or await services.metrics_page(request)
    return handler


async def _metrics_elsewhere(_: web.Request) -> web.Response:
    return elsewhere()


async def _metrics_site(app: web.Application) -> None:
    """`[server] metrics_listen`: `/metrics` on its own address."""
    where = app[_BOOT_KEY].settings.server.metrics_listen
    if not where:
        return
    host, port = parse_listen(where)
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", _metrics_handler(app))
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    app[_METRICS_RUNNER_KEY] = runner
    log.info("metrics served on their own address", extra={"metrics_listen": where})


async def _startup(app: web.Application) -> None:
    reloader = app[RELOADER_KEY]
    app[SERVICES_KEY] = await Services.start(app[_BOOT_KEY], app[_METRICS_KEY], reloader.reload)
    log_warnings(app[_BOOT_KEY], str(reloader.path or "built-in defaults"))
    await _metrics_site(app)
    reloader.start()
    try:
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(reloader.reload()))
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread (tests) or no SIGHUP on this platform


async def _shutdown(app: web.Application) -> None:
    services = app.get(SERVICES_KEY)
    if services is not None:
        services.draining = True  # new sessions are refused from now on
    await app[RELOADER_KEY].stop()
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    if services is not None:
        await services.drain()


async def _cleanup(app: web.Application) -> None:
    runner = app.get(_METRICS_RUNNER_KEY)
    if runner is not None:
        await runner.cleanup()
    services = app.get(SERVICES_KEY)
    if services is not None:
        await services.close()
