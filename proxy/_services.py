"""What a running faregate holds, built once at startup and wired together.

Each edge receives only the typed collaborators it uses; `Services` owns
them for the app's lifetime (`start` builds, `close` ends them). The config
in force is swapped here on reload; the edges read it through `current()`
once per request, so a reload never half-applies.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web

from faregate.pricing import PriceTable
from faregate.storage import JOURNAL_FAILURES, Ledger, LedgerRecord, LedgerUnavailable

from . import _errors as errors
from ._capture import open_capture
from ._ids import new_request_id
from ._metrics import CONTENT_TYPE, Metrics
from ._runtime import Runtime
from .admin import Admin
from .alerts import Alerting, Notifier
from .caller import SecretBook
from .meter import Biller, Contexts, canonical_path
from .objects import Objects, Owners
from .provider import Delegations, ProviderJobs
from .quota import Leases, Quota, UnseenHolds
from .realtime import Relay, Sessions, SessionServices, is_websocket
from .rest import Background, BatchBook, Batches, Forwarder, OwnQuota, own_route

log = logging.getLogger("faregate.app")

Reload = Callable[[], Awaitable[tuple[bool, str]]]


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def price_table_detail(table: PriceTable) -> dict:
    """The price table in force, for /readyz: version, the shipped table's version and age."""
    return {"version": table.version, "shipped_version": table.shipped_version,
            "shipped_age_days": table.age_days(datetime.now(timezone.utc).date())}


def upstream_client(runtime: Runtime) -> aiohttp.ClientSession:
    """The one pooled client every forwarded call uses."""
    server = runtime.settings.server
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=server.connect_timeout_s, sock_read=server.idle_timeout_s
        ),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class Services:
    def __init__(self, runtime: Runtime, metrics: Metrics, ledger: Ledger,
                 client: aiohttp.ClientSession, reload: Reload) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.metrics = metrics
        self.ledger = ledger
        self.client = client
        self.draining = False
        self.alerting = Alerting(lambda: self.runtime.settings.alerts.thresholds)
        self.quota = Quota(metrics, self.alerting.on_spend)
        if ledger.shared:
            self.quota.share(Leases(
                ledger, max_fraction=float(settings.storage.lease_max_fraction)))
        self.contexts = Contexts(ledger.recorded_context)
        self.secrets = SecretBook()
        self.unseen_holds = UnseenHolds(self.quota)
        self.delegations = Delegations(self.current, self.secrets, self.unseen_holds,
                                       ledger.record)
        self.sessions = Sessions()
        self.notifier = Notifier(
            settings.alerts, lambda: self.client,
            lambda level, channel, ok: metrics.alerts_sent.labels(level, channel).inc()
            if ok else None)
        self.capture = open_capture(settings, metrics)
        self.biller = Biller(self.current, self._record, metrics, self.quota, self.alerting,
                             journal=ledger, contexts=self.contexts)
        self.batches = BatchBook(ledger)
        self.background = Background(self.current, ledger, self.quota, self.biller, client,
                                     metrics)
        # Another replica's new object row reaches the database within a flush or two.
        self.objects = Objects(
            Owners(ledger, settle_s=min(2.0, 3 * settings.storage.flush_interval_ms / 1000)),
            self.current)
        self.forwarder = Forwarder(
            self.current, client, self.quota, self.biller,
            Batches(self.batches, self.biller, self.current, metrics, self.quota, client),
            self.background, self.delegations, metrics, self.capture, self.objects,
            self.contexts)
        self.relay = Relay(
            SessionServices(self.current, self.biller, metrics, self.sessions, ledger.record,
                            self.capture),
            self.quota, self.secrets, lambda: self.draining, self.delegations, self.objects)
        self.own_quota = OwnQuota(self.current, self.quota, self.secrets, self.sessions.active,
                                  client)
        self.admin = Admin(self.current, ledger, self.sessions, self.quota, self.capture,
                           reload)
        self.provider = ProviderJobs(self.current, ledger, self.biller, metrics,
                                     self.notifier.send)
        self._purge: asyncio.Task | None = None
        self._replayed: asyncio.Task | None = None

    def current(self) -> Runtime:
        """The config in force (read once per request)."""
        return self.runtime

    def _record(self, *records: LedgerRecord) -> None:
        self.ledger.record(*records)  # queue depth is read when /metrics is scraped

    @classmethod
    async def start(cls, runtime: Runtime, metrics: Metrics, reload: Reload) -> "Services":
        """Open the ledger, seed budgets and alerts from it, start the background work."""
        storage = runtime.settings.storage
        try:
            ledger = await Ledger.open(
                storage.url,
                flush_interval_ms=storage.flush_interval_ms,
                batch_size=storage.batch_size,
                on_written=lambda n, result: metrics.ledger_records.labels(result).inc(n),
                journal_dir=storage.journal_dir,
                queue_limit=storage.queue_limit,
                keep_charges_days=storage.keep_charges_days,
            )
        except LedgerUnavailable as exc:
            log.error("the ledger cannot be opened", extra={"reason": str(exc)})
            raise
        services = cls(runtime, metrics, ledger, upstream_client(runtime), reload)
        await services._load()
        return services

    async def _load(self) -> None:
        ledger = self.ledger
        rebuilt = await ledger.rebuild_sessions()
        if rebuilt:
            log.warning("rebuilt sessions cut off by an earlier crash",
                        extra={"sessions": rebuilt})
        now = datetime.now(timezone.utc)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        self.quota.book.seed_spend(await ledger.spend_since(month, day), now)
        self.alerting.seed(a.id for a in await ledger.alerts(since=month, limit=100_000))
        await self.batches.load()
        followed = await self.background.load()
        if followed:
            log.info("following up background responses of an earlier run",
                     extra={"responses": followed})
        self.background.start()
        await self.notifier.start()
        self.alerting.attach(ledger.record, self.notifier.send,
                             ledger.claim_alert if ledger.shared else None)
        if self.capture is not None:
            self._purge = asyncio.get_running_loop().create_task(self._purge_hourly())
        self.provider.start()  # daily reconcile / limit sync, when [provider] turns them on
        self._replayed = asyncio.get_running_loop().create_task(self._after_replay())

    async def _after_replay(self) -> None:
        """Once an earlier run's journal is in (calls a crash cut off charged from their
        start markers), the sessions those charges belong to get their rows too."""
        await self.ledger.flush()
        rebuilt = await self.ledger.rebuild_sessions()
        if rebuilt:
            log.warning("rebuilt sessions cut off by an earlier crash",
                        extra={"sessions": rebuilt})

    async def _purge_hourly(self) -> None:
        capture = self.capture
        assert capture is not None
        while True:
            removed = await asyncio.to_thread(capture.purge)
            if removed:
                log.info("capture retention purge", extra={"days_removed": removed})
            await asyncio.sleep(3600)

    def apply(self, runtime: Runtime) -> None:
        """A reloaded config takes over (counters live in the quota: they survive)."""
        self.runtime = runtime
        self.notifier.update(runtime.settings.alerts)
        self.provider.start()  # turned on by this config: starts now (idempotent)

    # -- the routes faregate answers itself -----------------------------------

    async def v1(self, request: web.Request) -> web.StreamResponse:
        path = canonical_path(request.raw_path)
        if path is None:
            return errors.invalid_request(
                "faregate cannot give this request path one unambiguous form: it may not hold "
                "'..' segments, escaped slashes, backslashes, ';', control characters or "
                "escapes other than of plain letters, digits and -._~:@!$&'()*+,=.",
                "invalid_path", new_request_id())
        own = own_route(path)
        if own is not None:  # /v1/faregate/…: faregate's own, never forwarded
            return await self.own_quota.handle(request, own)
        if is_websocket(request):
            return await self.relay.handle(request, path)
        return await self.forwarder.handle(request, path)

    async def metrics_page(self, _: web.Request) -> web.Response:
        ledger, m = self.ledger, self.metrics
        m.ledger_queue_depth.set(ledger.queue_depth)
        m.ledger_journal_bytes.set(ledger.journal_bytes)
        m.ledger_oldest_unwritten.set(ledger.oldest_unwritten_seconds)
        age = self.runtime.prices.age_days(datetime.now(timezone.utc).date())
        if age is not None:
            m.price_table_age.set(age)
        failing = ledger.journal_failing
        for reason in JOURNAL_FAILURES:
            m.ledger_journal_failing.labels(reason).set(1 if reason == failing else 0)
        m.ledger_accepting.set(1 if ledger.accepting else 0)
        return web.Response(body=m.render(), headers={"content-type": CONTENT_TYPE})

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        problems = self.ledger.problems()
        checks = {
            "ledger": not problems,
            "ledger_accepting": self.ledger.accepting,
            "upstream_client": not self.client.closed,
            "accepting": not self.draining,
        }
        ok = all(checks.values())
        body: dict = {"status": "ready" if ok else "degraded", "checks": checks,
                      "prices": price_table_detail(self.runtime.prices)}
        if problems:  # in words: which part, which backend at which address, what went wrong
            body["reasons"] = {"ledger": "; ".join(problems.values()), **problems}
        return _json(body, 200 if ok else 503)

    # -- the end ----------------------------------------------------------------

    async def drain(self) -> None:
        """Stop taking sessions; let open ones end within the grace period."""
        self.draining = True
        await self.relay.shutdown(self.runtime.settings.server.shutdown_grace_s)

    async def close(self) -> None:
        if self.quota.leases is not None:
            returned = await self.quota.leases.release()
            if returned:
                log.info("returned unspent budget leases", extra={"nanos": returned})
        await self.provider.close()
        self.unseen_holds.release_all()
        await self.notifier.close()
        await self.background.close()
        if self._purge is not None:
            self._purge.cancel()
        if self._replayed is not None and not self._replayed.done():
            await asyncio.wait({self._replayed}, timeout=2.0)  # a short replay: let it end
            self._replayed.cancel()
        if self.capture is not None:
            await asyncio.to_thread(self.capture.close)
        await self.client.close()
        await self.ledger.close()
