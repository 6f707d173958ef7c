"""Budget alert delivery: webhook and email, in the background.

`Alerting` decides *that* an alert fires; this room only delivers it.
`Notifier.send()` is called on the request path, so it is synchronous and
O(1): it puts the alert on a bounded queue (dropping the oldest, loudly, if
the queue is full) and returns. One worker task drains the queue, posting a
Slack-compatible JSON body to `webhook_url` and mailing every `email_to`
address through `smtp_url` (smtplib, in a thread — never on the event loop).
Each attempt is time-boxed and transient failures are retried with backoff.

Secrets stay out of logs: the webhook URL is logged by host only and SMTP by
host:port only (never the user or password in the URL).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import orjson
from yarl import URL

from ._alert import Alert
from ._drift import DriftAlert, render_email, render_webhook
from .._config import AlertSettings

log = logging.getLogger("faregate.notify")

QUEUE_CAPACITY = 1000
ATTEMPT_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # exponential; at most MAX_ATTEMPTS are made
MAX_ATTEMPTS = 4

@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    sender: str | None  # None: faregate@<hostname>

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp://[user:pass@]host[:port][?starttls=true&from=addr], or smtps:// (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("smtp_url must be smtp://host:port or smtps://host:port")
    query = parse_qs(parts.query)
    implicit = parts.scheme == "smtps"
    starttls = query.get("starttls", ["false"])[-1].lower() in ("1", "true", "yes", "on")
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if implicit else 25),
        implicit_tls=implicit,
        starttls=starttls and not implicit,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sender=query.get("from", [None])[-1],
    )


class _Permanent(Exception):
    """A failure that retrying will not fix (HTTP 4xx, SMTP 5xx, bad config)."""


def _send_mail(target: SmtpTarget, recipients: list[str], subject: str, body: str,
               timeout: float) -> dict:
    """Blocking; runs in a worker thread. Returns smtplib's refused-recipients dict."""
    msg = EmailMessage()
    sender = target.sender or f"faregate@{socket.gethostname() or 'localhost'}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="faregate")
    msg.set_content(body)
    context = ssl.create_default_context()
    if target.implicit_tls:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout,
                                              context=context)
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=timeout)
    try:
        smtp.ehlo_or_helo_if_needed()
        if target.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if target.username:
            smtp.login(target.username, target.password or "")
        return smtp.send_message(msg, from_addr=sender, to_addrs=recipients)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _describe(exc: BaseException) -> str:
    """A log-safe description: the exception type and, for some, a code — never a URL."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} {exc.smtp_code}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__} ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__


# -- the notifier --------------------------------------------------------------------------


class Notifier:
    """Queues alerts and delivers them to the configured channels in the background."""

    def __init__(
        self,
        settings: AlertSettings,
        session_factory: Callable[[], aiohttp.ClientSession | None],
        on_sent: Callable[[str, str, bool], None],
        *,
        capacity: int = QUEUE_CAPACITY,
        attempt_timeout: float = ATTEMPT_TIMEOUT_S,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._on_sent = on_sent
        self._attempt_timeout = attempt_timeout
        self._retry_delays = tuple(retry_delays)
        self._max_attempts = max(1, max_attempts)
        self._queue: asyncio.Queue[Alert | DriftAlert] = asyncio.Queue(maxsize=capacity)
        self._worker: asyncio.Task | None = None
        self._private: aiohttp.ClientSession | None = None
        self._closed = False
        self.dropped = 0  # alerts lost to a full queue or to close()

    # -- request-path surface --

    def update(self, settings: AlertSettings) -> None:
        """Hot reload: the next alert delivered uses these channels."""
        self._settings = settings

    def send(self, alert: Alert | DriftAlert) -> None:
        """Enqueue `alert` for delivery; returns at once and never raises."""
        try:
            if not self._channels(self._settings):
                return
            if self._closed:
                self._drop(alert, "notifier closed")
                return
            if self._queue.full():
                oldest = self._queue.get_nowait()
                self._queue.task_done()
                self._drop(oldest, "alert queue full")
            self._queue.put_nowait(alert)
        except Exception:  # noqa: BLE001 - the request path must not see this
            log.exception("could not queue alert", extra={"alert_id": getattr(alert, "id", None)})

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- lifecycle --

    async def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._closed = False
            self._worker = asyncio.create_task(self._run(), name="faregate-notify")

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to `timeout` seconds, then give up on the rest."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except asyncio.TimeoutError:
                pass
            worker.cancel()
            try:
                await asyncio.wait_for(worker, 1.0)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:  # noqa: BLE001
                log.exception("alert worker failed")
        left = 0
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "undelivered at shutdown", quiet=True)
            self._queue.task_done()
            left += 1
        if left:
            log.error("alerts undelivered at shutdown", extra={"alerts": left})
        if self._private is not None:
            await self._private.close()
            self._private = None

    # -- internals --

    @staticmethod
    def _channels(settings: AlertSettings) -> list[str]:
        out = []
        if settings.webhook_url:
            out.append("webhook")
        if settings.email_to and settings.smtp_url:
            out.append("email")
        return out

    def _drop(self, alert: Alert, why: str, quiet: bool = False) -> None:
        self.dropped += 1
        if not quiet:
            log.error(f"{why}; dropped alert", extra={"alert_id": alert.id,
                                                    "dropped_total": self.dropped})
        for channel in self._channels(self._settings):
            self._count(alert.level, channel, False)

    def _count(self, level: str, channel: str, ok: bool) -> None:
        try:
            self._on_sent(level, channel, ok)
        except Exception:  # noqa: BLE001
            log.exception("on_sent callback failed")

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            except Exception:  # noqa: BLE001 - keep the worker alive
                log.exception("alert delivery failed", extra={"alert_id": alert.id})
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        settings = self._settings
        jobs = []
        if settings.webhook_url:
            jobs.append(self._channel(alert, "webhook", self._webhook_once, settings.webhook_url))
        if settings.email_to and settings.smtp_url:
            jobs.append(self._channel(alert, "email", self._email_once, settings))
        if jobs:
            await asyncio.gather(*jobs)

    async def _channel(self, alert: Alert, channel: str, attempt, target) -> None:
        """Run one channel's attempts under the retry policy; count the outcome."""
        ok = False
        why = ""
        try:
            ok, why = await self._attempts(alert, channel, attempt, target)
        except asyncio.CancelledError:
            why = "cancelled at shutdown"
            raise
        finally:
            if ok:
                log.info("alert delivered", extra={"alert_id": alert.id, "channel": channel})
            else:
                log.error("alert not delivered", extra={
                    "alert_id": alert.id, "channel": channel, "error": why,
                    "target": self._where(channel, target)})
            self._count(alert.level, channel, ok)

    async def _attempts(self, alert: Alert, channel: str, attempt, target) -> tuple[bool, str]:
        why = ""
        for n in range(self._max_attempts):
            if n:
                delay = self._retry_delays[min(n - 1, len(self._retry_delays) - 1)] \
                    if self._retry_delays else 0.0
                await asyncio.sleep(delay)
            try:
                await attempt(alert, target)
                return True, ""
            except _Permanent as exc:
                return False, str(exc)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError,
                    smtplib.SMTPException) as exc:
                why = _describe(exc)
                log.info("alert delivery attempt failed", extra={
                    "alert_id": alert.id, "channel": channel, "attempt": n + 1, "error": why})
        return False, why

    @staticmethod
    def _where(channel: str, target) -> str:
        try:
            if channel == "webhook":
                return URL(target).host or "?"
            return parse_smtp_url(target.smtp_url).where
        except Exception:  # noqa: BLE001
            return "?"

    def _session(self) -> aiohttp.ClientSession:
        try:
            shared = self._session_factory()
        except Exception:  # noqa: BLE001
            shared = None
        if shared is not None and not shared.closed:
            return shared
        if self._private is None or self._private.closed:
            self._private = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._private

    async def _webhook_once(self, alert: Alert, url: str) -> None:
        try:
            target = URL(url)
        except (ValueError, TypeError):
            raise _Permanent("invalid webhook_url") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise _Permanent("webhook_url must be http(s)://")
        async with self._session().post(
            target,
            data=orjson.dumps(render_webhook(alert)),
            headers={"Content-Type": "application/json", "User-Agent": "faregate"},
            timeout=aiohttp.ClientTimeout(total=self._attempt_timeout),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            if resp.status < 300:
                return
            if resp.status >= 500 or resp.status == 429:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message="retryable status")
            raise _Permanent(f"HTTP {resp.status}")

    async def _email_once(self, alert: Alert, settings: AlertSettings) -> None:
        try:
            target = parse_smtp_url(settings.smtp_url or "")
        except ValueError as exc:
            raise _Permanent(str(exc)) from None
        recipients = list(settings.email_to)
        subject, body = render_email(alert)
        try:
            refused = await asyncio.wait_for(
                asyncio.to_thread(_send_mail, target, recipients, subject, body,
                                  self._attempt_timeout),
                self._attempt_timeout,
            )
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if any(400 <= c < 500 for c in codes):
                raise
            raise _Permanent("all recipients refused") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise
            raise _Permanent(_describe(exc)) from None
        except (smtplib.SMTPNotSupportedError, ssl.SSLError) as exc:
            raise _Permanent(_describe(exc)) from None
        if refused:
            log.warning("some alert recipients refused", extra={
                "alert_id": alert.id, "refused": sorted(refused)})
