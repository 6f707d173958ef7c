"""The aiohttp application: routes, startup and orderly shutdown.

`build_app(settings, config_path)` wires the rooms together: the runtime
snapshot (config, keys, prices), the ledger, the pooled upstream client,
the metrics registry and the config watcher.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from faregate.storage import Ledger

from ._config import Settings
from . import _errors as errors
from ._admin import Admin
from ._batches import BatchBook, load_batches
from ._capture import Capture, Redactor, load_key
from ._flow import new_request_id
from ._forward import Forwarder
from ._alerting import Alerting
from ._leases import Leases
from ._metrics import CONTENT_TYPE
from ._notify import Notifier
from ._relay import Relay, is_websocket
from ._runtime import Reloader, Runtime
from ._state import State

log = logging.getLogger("faregate.app")

STATE_KEY = web.AppKey("faregate_state", State)
RELOADER_KEY = web.AppKey("faregate_reloader", Reloader)
RELAY_KEY = web.AppKey("faregate_relay", Relay)
PURGE_KEY = web.AppKey("faregate_capture_purge", asyncio.Task)


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


#: In the raw path (lowercased): dot segments, plain or encoded, encoded slashes, backslashes.
_UNSAFE = re.compile(r"/\.\.|/\.%2e|%2e%2e|%2e\.|%2f|%5c|\\")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_path(request: web.Request) -> bool:
    """Only plain `/v1/...` paths go upstream: no `..` (plain or encoded), no encoded
    slash or backslash that could make the upstream see a path outside /v1/, and no
    control characters (a decoded `%0A` must not reach a request line)."""
    path = request.path
    raw = request.raw_path.split("?", 1)[0].lower()
    return (path.startswith("/v1/") and _UNSAFE.search(raw) is None
            and _CONTROL.search(path) is None)


def build_app(settings: Settings, config_path: Path | None = None) -> web.Application:
    state = State(Runtime.build(settings))
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[STATE_KEY] = state

    def apply(runtime: Runtime) -> None:
        old = state.runtime.settings
        new = runtime.settings
        if old.server.listen != new.server.listen or old.storage != new.storage:
            log.warning("[server] listen and [storage] changes take effect on restart")
        state.runtime = runtime  # counters live in state.quota: they survive the swap
        if state.notifier is not None:
            state.notifier.update(new.alerts)

    app[RELOADER_KEY] = Reloader(
        config_path, apply, lambda r: state.metrics.config_reloads.labels(r).inc()
    )

    async def metrics(_: web.Request) -> web.Response:
        if state.ledger is not None:
            state.metrics.ledger_queue_depth.set(state.ledger.queue_depth)
            state.metrics.ledger_journal_bytes.set(state.ledger.journal_bytes)
            state.metrics.ledger_oldest_unwritten.set(state.ledger.oldest_unwritten_seconds)
        return web.Response(body=state.metrics.render(), headers={"content-type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = {
            "ledger": state.ledger is not None and state.ledger.healthy,
            "upstream_client": state.client is not None and not state.client.closed,
            "accepting": not state.draining,
        }
        ok = all(checks.values())
        body: dict = {"status": "ready" if ok else "degraded", "checks": checks}
        if state.ledger is not None and not state.ledger.healthy:
            body["reasons"] = {"ledger": state.ledger.last_error}
        return _json(body, 200 if ok else 503)

    Admin(state, lambda: app[RELOADER_KEY].reload()).add_routes(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    forwarder, relay = Forwarder(state), Relay(state)
    app[RELAY_KEY] = relay

    async def v1(request: web.Request) -> web.StreamResponse:
        if not safe_path(request):
            return errors.invalid_request(
                "The request path may not contain dot segments, encoded slashes or "
                "backslashes.", "invalid_path", new_request_id())
        if is_websocket(request):
            return await relay.handle(request)
        return await forwarder.handle(request)

    app.router.add_route("*", r"/v1/{tail:[\s\S]*}", v1)  # any tail, newlines too
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    state = app[STATE_KEY]
    settings = state.runtime.settings
    server = settings.server

    def counted(n: int, result: str) -> None:
        state.metrics.ledger_records.labels(result).inc(n)

    state.ledger = await Ledger.open(
        settings.storage.url,
        flush_interval_ms=settings.storage.flush_interval_ms,
        batch_size=settings.storage.batch_size,
        on_written=counted,
        journal_dir=settings.storage.journal_dir,
        queue_limit=settings.storage.queue_limit,
        keep_charges_days=settings.storage.keep_charges_days,
    )
    rebuilt = await state.ledger.rebuild_sessions()
    if rebuilt:
        log.warning("rebuilt sessions cut off by an earlier crash", extra={"sessions": rebuilt})
    await _seed_budgets(state)
    state.batches = BatchBook()
    await load_batches(state)
    if state.ledger.shared:
        state.quota.leases = Leases(state.ledger, state.quota,
                                    max_fraction=float(settings.storage.lease_max_fraction))
    state.client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=server.connect_timeout_s, sock_read=server.idle_timeout_s
        ),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    state.notifier = Notifier(
        settings.alerts, lambda: state.client,
        lambda level, channel, ok: state.metrics.alerts_sent.labels(level, channel).inc()
        if ok else None,
    )
    await state.notifier.start()
    _start_capture(app, state)
    state.alerting.attach(state.ledger.record, state.notifier.send,
                          state.ledger.claim_alert if state.ledger.shared else None)
    reloader = app[RELOADER_KEY]
    reloader.start()
    try:
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(reloader.reload()))
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread (tests) or no SIGHUP on this platform


def _start_capture(app: web.Application, state: State) -> None:
    """Conversation capture runs only with its key; without one, nothing is written."""
    settings = state.runtime.settings
    cfg = settings.capture
    key = load_key(cfg.key_env)
    if key is None:
        if any(t.capture for t in settings.tenants.values()):
            log.error("capture is on for some tenants but $%s holds no 32-byte key: "
                      "nothing will be captured", cfg.key_env)
        return
    state.capture = Capture(
        cfg.directory, key, Redactor(cfg.redact, cfg.redact_builtin), cfg.retention_days,
        cfg.queue_limit, lambda result: state.metrics.capture_records.labels(result).inc())

    async def purge_hourly() -> None:
        while True:
            removed = await asyncio.to_thread(state.capture.purge)
            if removed:
                log.info("capture retention purge", extra={"days_removed": removed})
            await asyncio.sleep(3600)

    app[PURGE_KEY] = asyncio.get_running_loop().create_task(purge_hourly())


async def _seed_budgets(state: State) -> None:
    """Spend so far this month/today, and alerts already sent, from the ledger."""
    now = datetime.now(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    book = state.quota.book
    dkey, mkey = day.strftime("%Y-%m-%d"), month.strftime("%Y-%m")
    for tenant, user, m_cost, m_req, m_img, d_cost, d_req, d_img in (
        await state.ledger.spend_since(month, day)
    ):
        scopes = [(f"tenant:{tenant}", True)]
        if user:
            scopes.append((f"user:{tenant}/{user}", False))
        for scope, counts in scopes:
            book.seed(scope, "month", mkey, int(m_cost or 0),
                      int(m_req or 0) if counts else 0, int(m_img or 0) if counts else 0)
            book.seed(scope, "day", dkey, int(d_cost or 0),
                      int(d_req or 0) if counts else 0, int(d_img or 0) if counts else 0)
    state.alerting = Alerting(lambda: state.runtime.settings.alerts.thresholds)
    state.alerting.seed(a.id for a in await state.ledger.alerts(since=month, limit=100_000))


async def _shutdown(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.draining = True
    await app[RELOADER_KEY].stop()
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    await app[RELAY_KEY].shutdown(state.runtime.settings.server.shutdown_grace_s)


async def _cleanup(app: web.Application) -> None:
    state = app[STATE_KEY]
    if state.quota.leases is not None:
        returned = await state.quota.leases.release()
        if returned:
            log.info("returned unspent budget leases", extra={"nanos": returned})
    if state.notifier is not None:
        await state.notifier.close()
    purge = app.get(PURGE_KEY)
    if purge is not None:
        purge.cancel()
    if state.capture is not None:
        await asyncio.to_thread(state.capture.close)
    if state.client is not None:
        await state.client.close()
    if state.ledger is not None:
        await state.ledger.close()
