"""Budget alert delivery: a webhook receiver and an SMTP server on loopback.

The notifier is driven the way the proxy drives it — `send()` from the
request path, a background worker delivering — and we assert on what the
operator receives: the Slack-style JSON, the email, and the counts.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web

from faregate.proxy import AlertSettings
from faregate.proxy.alerts import Alert, email_subject, headline, level_for
from faregate.proxy.alerts import Notifier, parse_smtp_url

SECRET_PATH = "/services/T000/B000/s3cr3t-token"
FAST = {"attempt_timeout": 0.5, "retry_delays": (0.01, 0.02, 0.04)}


def make_alert(n: int = 0, threshold: str = "0.8", scope: str = "tenant:acme") -> Alert:
    t = Decimal(threshold)
    return Alert(
        id=f"{scope}|month|2026-11|{threshold}#{n}",
        scope=scope,
        period="month",
        period_start="2026-11",
        threshold=t,
        level=level_for(t),
        limit_usd=Decimal("500.00"),
        spent_usd=Decimal("412.500000000"),
        used_ratio=Decimal("0.8250"),
        projected_usd=Decimal("530.104999999"),
        top_models=(("gpt-4o", Decimal("300.000000000")),
                    ("gpt-4o-mini", Decimal("112.5"))),
        at=datetime(2026, 11, 23, 14, 5, 6, tzinfo=timezone.utc),
    )


class Sent:
    """Records on_sent(level, channel, ok) calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(self, level: str, channel: str, ok: bool) -> None:
        self.calls.append((level, channel, ok))


async def eventually(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- a webhook receiver ------------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=list)  # returned in order, then 200
    hang: bool = False
    requests: list[dict] = field(default_factory=list)
    delivered: list[dict] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "content_type": request.content_type})
        if self.hang:
            try:
                await asyncio.wait_for(self.release.wait(), 10)
            except asyncio.TimeoutError:
                pass
            return web.Response(status=200)
        status = self.statuses.pop(0) if self.statuses else 200
        if status < 300:
            self.delivered.append(body)
        return web.Response(status=status, text="ok" if status < 300 else "nope")


@pytest.fixture
async def hook():
    receiver = Receiver()
    app = web.Application()
    app.router.add_post(SECRET_PATH, receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}{SECRET_PATH}"
    yield receiver
    receiver.release.set()
    await asyncio.wait_for(runner.cleanup(), 10)


@pytest.fixture
async def notifiers():
    """Builds notifiers and always closes them."""
    made: list[Notifier] = []

    def build(settings: AlertSettings, sent: Sent, session=None, **kw) -> Notifier:
        n = Notifier(settings, lambda: session, sent, **{**FAST, **kw})
        made.append(n)
        return n

    yield build
    for n in made:
        await n.close(timeout=1.0)


# -- a tiny SMTP server ------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)  # decoded AUTH PLAIN credentials
    sessions: int = 0
    fail_mail: list[str] = field(default_factory=list)  # replies to MAIL, in order, then 250
    rcpt_reply: str = "250 OK"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1

        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        mail_from, rcpts = "", []
        try:
            say("220 localhost ESMTP faregate-test")
            while True:
                raw = await asyncio.wait_for(reader.readline(), 10)
                if not raw:
                    break
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say("250-localhost")
                    say("250-AUTH PLAIN")
                    say("250 8BITMIME")
                elif verb == "HELO":
                    say("250 localhost")
                elif verb == "AUTH":
                    parts = line.split()
                    creds = base64.b64decode(parts[2]).decode() if len(parts) > 2 else ""
                    self.auth.append(creds)
                    say("235 2.7.0 Authentication successful")
                elif verb == "MAIL":
                    if self.fail_mail:
                        say(self.fail_mail.pop(0))
                        continue
                    mail_from = line.split(":", 1)[1].split()[0].strip("<>")
                    rcpts = []
                    say("250 OK")
                elif verb == "RCPT":
                    if self.rcpt_reply.startswith("2"):
                        rcpts.append(line.split(":", 1)[1].strip().strip("<>"))
                    say(self.rcpt_reply)
                elif verb == "DATA":
                    say("354 End data with <CR><LF>.<CR><LF>")
                    lines = []
                    while True:
                        chunk = await asyncio.wait_for(reader.readline(), 10)
                        if chunk in (b".\r\n", b""):
                            break
                        lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    self.mails.append(Mail(mail_from, rcpts, b"".join(lines)))
                    say("250 OK queued")
                elif verb in ("RSET", "NOOP"):
                    say("250 OK")
                elif verb == "QUIT":
                    say("221 Bye")
                    await writer.drain()
                    break
                else:
                    say("502 Command not implemented")
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def smtp():
    server = SmtpServer()
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    yield server
    srv.close()
    await asyncio.wait_for(srv.wait_closed(), 10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pure rendering ----------------------------------------------------------------------


@pytest.mark.parametrize("threshold, level", [
    ("0.5", "warning"), ("0.8", "warning"), ("0.9499", "warning"), ("0.95", "critical"),
    ("0.99", "critical"), ("1.0", "exceeded"), ("1", "exceeded"), ("1.5", "exceeded"),
])
def test_level_for(threshold, level):
    assert level_for(Decimal(threshold)) == level


def test_headline_and_subject_read_well():
    alert = make_alert()
    assert headline(alert) == (
        ":warning: faregate budget 80% — tenant acme, month 2026-11: $412.50 of $500.00 spent "
        "(82.5%), projected $530.10 at period end; top: gpt-4o $300.00, gpt-4o-mini $112.50"
    )
    assert email_subject(alert) == "[faregate] budget 80% — tenant acme (month 2026-11)"
    user = make_alert(threshold="1.0", scope="user:acme/alice")
    assert headline(user).startswith(":no_entry: faregate budget 100% — user acme/alice, month")
    assert email_subject(make_alert(threshold="0.95")).startswith("[faregate] budget 95% — ")


@pytest.mark.parametrize("url, expect", [
    ("smtp://localhost:25", ("localhost", 25, False, False, None, None, None)),
    ("smtp://mail.example", ("mail.example", 25, False, False, None, None, None)),
    ("smtps://mail.example", ("mail.example", 465, True, False, None, None, None)),
    ("smtp://u%40x:p%3Aw@mail.example:587?starttls=true&from=ops%40example.com",
     ("mail.example", 587, False, True, "u@x", "p:w", "ops@example.com")),
])
def test_parse_smtp_url(url, expect):
    t = parse_smtp_url(url)
    assert (t.host, t.port, t.implicit_tls, t.starttls, t.username, t.password, t.sender) == expect


def test_parse_smtp_url_rejects_other_schemes():
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example")


# -- webhook -----------------------------------------------------------------------------


async def test_webhook_body_is_slack_text_plus_machine_fields(hook, notifiers):
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert sent.calls == [("warning", "webhook", True)]
    (req,) = hook.requests
    assert req["content_type"] == "application/json"
    body = req["body"]
    assert body["text"] == headline(make_alert())
    assert isinstance(body.get("attachments", []), list)
    assert body["faregate"] == {
        "id": "tenant:acme|month|2026-11|0.8#0",
        "scope": "tenant:acme",
        "period": "month",
        "period_start": "2026-11",
        "threshold": "0.8",
        "level": "warning",
        "limit_usd": "500.00",
        "spent_usd": "412.500000000",
        "used_ratio": "0.8250",
        "projected_usd": "530.104999999",
        "top_models": [{"model": "gpt-4o", "usd": "300.000000000"},
                       {"model": "gpt-4o-mini", "usd": "112.5"}],
        "implausible_usage": {"charges": 0, "usd": "0"},
        "at": "2026-11-23T14:05:06+00:00",
    }


async def test_webhook_uses_the_shared_session(hook, notifiers):
    # Configured like the proxy's upstream client: no automatic Content-Type.
    shared = aiohttp.ClientSession(skip_auto_headers=("User-Agent", "Content-Type"))
    try:
        sent = Sent()
        n = notifiers(AlertSettings(webhook_url=hook.url), sent, session=shared)
        await n.start()
        n.send(make_alert())
        await eventually(lambda: sent.calls)
        assert sent.calls == [("warning", "webhook", True)]
        assert hook.requests[0]["content_type"] == "application/json"
        await n.close()
        assert not shared.closed  # the notifier closes only its own session
    finally:
        await shared.close()


async def test_webhook_retries_5xx_and_429_then_delivers_once(hook, notifiers):
    hook.statuses = [500, 429, 200]
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent)
    await n.start()
    n.send(make_alert(threshold="0.95"))
    await eventually(lambda: sent.calls)
    assert len(hook.requests) == 3
    assert len(hook.delivered) == 1
    assert sent.calls == [("critical", "webhook", True)]


async def test_webhook_gives_up_after_four_attempts(hook, notifiers):
    hook.statuses = [503] * 10
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert len(hook.requests) == 4
    assert sent.calls == [("warning", "webhook", False)]


async def test_webhook_4xx_is_not_retried(hook, notifiers):
    hook.statuses = [400, 200]
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert len(hook.requests) == 1
    assert hook.delivered == []
    assert sent.calls == [("warning", "webhook", False)]


async def test_unreachable_webhook_logs_only_its_host(notifiers, caplog):
    caplog.set_level(logging.DEBUG, logger="faregate.notify")
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=url), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert sent.calls == [("warning", "webhook", False)]
    attempts = [r for r in caplog.records if r.getMessage() == "alert delivery attempt failed"]
    assert len(attempts) == 4
    final = [r for r in caplog.records if r.getMessage() == "alert not delivered"]
    assert final and final[0].target == "127.0.0.1"
    for record in caplog.records:
        assert "s3cr3t" not in str(record.__dict__)


# -- email -------------------------------------------------------------------------------


async def test_email_reaches_every_recipient(smtp, notifiers):
    sent = Sent()
    settings = AlertSettings(email_to=["ops@example.com", "cfo@example.com"],
                             smtp_url=f"smtp://127.0.0.1:{smtp.port}")
    n = notifiers(settings, sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert sent.calls == [("warning", "email", True)]
    (mail,) = smtp.mails
    assert sorted(mail.rcpt_to) == ["cfo@example.com", "ops@example.com"]
    assert mail.mail_from == f"faregate@{socket.gethostname()}"
    msg = mail.message
    assert msg["Subject"] == "[faregate] budget 80% — tenant acme (month 2026-11)"
    assert msg["From"] == mail.mail_from
    assert "ops@example.com" in msg["To"] and "cfo@example.com" in msg["To"]
    body = msg.get_content()
    for needle in ("tenant:acme", "month 2026-11", "$412.50", "$500.00", "82.5%", "$530.10",
                   "412.500000000", "gpt-4o", "$300.00", "gpt-4o-mini", "$112.50",
                   "tenant:acme|month|2026-11|0.8#0", "warning", "2026-11-23T14:05:06"):
        assert needle in body, needle


async def test_email_login_and_from_override_never_log_the_password(smtp, notifiers, caplog):
    caplog.set_level(logging.DEBUG, logger="faregate.notify")
    sent = Sent()
    settings = AlertSettings(
        email_to=["ops@example.com"],
        smtp_url=f"smtp://alerts:hunter2pw@127.0.0.1:{smtp.port}?from=budget%40example.com",
    )
    n = notifiers(settings, sent)
    await n.start()
    n.send(make_alert(threshold="1.0"))
    await eventually(lambda: sent.calls)
    assert sent.calls == [("exceeded", "email", True)]
    assert smtp.auth == ["\0alerts\0hunter2pw"]
    assert smtp.mails[0].mail_from == "budget@example.com"
    assert smtp.mails[0].message["Subject"].startswith("[faregate] budget 100% — tenant acme")
    for record in caplog.records:
        assert "hunter2pw" not in str(record.__dict__)


async def test_email_transient_4xx_is_retried(smtp, notifiers):
    smtp.fail_mail = ["451 4.3.0 Try again later"]
    sent = Sent()
    n = notifiers(AlertSettings(email_to=["ops@example.com"],
                                smtp_url=f"smtp://127.0.0.1:{smtp.port}"), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert sent.calls == [("warning", "email", True)]
    assert smtp.sessions == 2
    assert len(smtp.mails) == 1


async def test_email_permanent_5xx_is_not_retried(smtp, notifiers):
    smtp.rcpt_reply = "550 5.1.1 No such user"
    sent = Sent()
    n = notifiers(AlertSettings(email_to=["nobody@example.com"],
                                smtp_url=f"smtp://127.0.0.1:{smtp.port}"), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls)
    assert sent.calls == [("warning", "email", False)]
    assert smtp.sessions == 1
    assert smtp.mails == []


async def test_both_channels_for_one_alert(hook, smtp, notifiers):
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url, email_to=["ops@example.com"],
                                smtp_url=f"smtp://127.0.0.1:{smtp.port}"), sent)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: len(sent.calls) == 2)
    assert sorted(sent.calls) == [("warning", "email", True), ("warning", "webhook", True)]
    assert len(hook.delivered) == 1 and len(smtp.mails) == 1


# -- never blocking, bounded ---------------------------------------------------------------


async def test_send_returns_at_once_while_the_webhook_hangs(hook, notifiers):
    hook.hang = True
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent, attempt_timeout=0.2)
    await n.start()
    started = time.perf_counter()
    for i in range(20):
        n.send(make_alert(i))
    assert time.perf_counter() - started < 0.05
    await eventually(lambda: hook.requests)  # the worker is stuck on the first alert
    started = time.monotonic()
    await n.close(timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert n.pending == 0
    # Every alert is accounted for: the in-flight one and the undelivered ones failed.
    assert len(sent.calls) == 20
    assert all(call == ("warning", "webhook", False) for call in sent.calls)


async def test_timeouts_are_retried_per_attempt(hook, notifiers):
    hook.hang = True
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent, attempt_timeout=0.1)
    await n.start()
    n.send(make_alert())
    await eventually(lambda: sent.calls, timeout=3)
    assert sent.calls == [("warning", "webhook", False)]
    assert len(hook.requests) == 4


async def test_full_queue_drops_the_oldest(hook, notifiers, caplog):
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent, capacity=3)
    for i in range(5):  # not started yet: everything queues
        n.send(make_alert(i))
    assert n.pending == 3
    assert n.dropped == 2
    assert sent.calls == [("warning", "webhook", False)] * 2
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR and "queue full" in
               r.getMessage()]
    assert [r.alert_id for r in dropped] == [make_alert(0).id, make_alert(1).id]
    await n.start()
    await eventually(lambda: len(hook.delivered) == 3)
    assert [b["faregate"]["id"] for b in hook.delivered] == [make_alert(i).id for i in (2, 3, 4)]


async def test_no_channels_is_a_no_op(notifiers):
    sent = Sent()
    n = notifiers(AlertSettings(), sent)
    n.send(make_alert())
    assert n.pending == 0
    n2 = notifiers(AlertSettings(email_to=["ops@example.com"]), sent)  # no smtp_url
    n2.send(make_alert())
    assert n2.pending == 0
    await n.start()
    await n.close()
    assert sent.calls == []


async def test_update_applies_to_the_next_alert(hook, smtp, notifiers):
    sent = Sent()
    n = notifiers(AlertSettings(), sent)
    await n.start()
    n.send(make_alert(0))
    n.update(AlertSettings(webhook_url=hook.url))
    n.send(make_alert(1))
    await eventually(lambda: sent.calls)
    assert [b["faregate"]["id"] for b in hook.delivered] == [make_alert(1).id]
    n.update(AlertSettings(email_to=["ops@example.com"],
                           smtp_url=f"smtp://127.0.0.1:{smtp.port}"))
    n.send(make_alert(2))
    await eventually(lambda: len(sent.calls) == 2)
    assert sent.calls[1] == ("warning", "email", True)
    assert len(hook.delivered) == 1 and len(smtp.mails) == 1


async def test_a_failing_counter_does_not_stop_delivery(hook, notifiers):
    def explode(level, channel, ok):
        raise RuntimeError("boom")

    n = notifiers(AlertSettings(webhook_url=hook.url), explode)
    await n.start()
    n.send(make_alert(0))
    n.send(make_alert(1))
    await eventually(lambda: len(hook.delivered) == 2)


async def test_send_after_close_is_dropped_quietly(hook, notifiers):
    sent = Sent()
    n = notifiers(AlertSettings(webhook_url=hook.url), sent)
    await n.start()
    await n.close()
    n.send(make_alert())
    assert n.pending == 0
    assert sent.calls == [("warning", "webhook", False)]
    assert hook.requests == []
