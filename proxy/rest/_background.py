"""Background responses: reserved at create, charged exactly once when they are final.

A Responses call with `background: true` answers at once (`queued`,
`in_progress`) and is billed upstream later, when it finishes. faregate
keeps the call's reservation held and the response *pending* — in memory and
in the ledger (`background_responses`), so a restart follows it up too —
until one of these shows it final (`completed`, `failed`, `cancelled`,
`incomplete`):

* a client poll through faregate (`GET /v1/responses/{id}`), a stream
  resume (`?stream=true`) or a cancel (`POST /v1/responses/{id}/cancel`):
  the answer is metered on its way;
* faregate's own follow-up: it polls each pending response (first after
  2 s, then doubling up to `[server] background_poll_s`), so a response
  nobody polls is charged within that long of finishing.

The charge is the usage the final response reports (a cancelled or failed
one settles to what it reports), once: the pending entry is taken out
before the charge, the `final:` row is claimed in the ledger (across
replicas), and the ledger row's id is derived from the response id.
A response faregate can no longer read (deleted, or pending for a day) is
charged its reservation, flagged `estimated`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import aiohttp
from yarl import URL

from faregate.pricing import TOKEN_CLASSES, Usage
from faregate.storage import BackgroundEvent, Ledger

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..caller import Caller
from ..meter import (
    Account,
    Biller,
    Flow,
    JsonMeter,
    Metered,
    Reading,
    RequestFacts,
    ResponseMeter,
    SseMeter,
    answer_usage,
    find_status,
    line_id,
)
from ..quota import Admission, Quota
from ._batch_input import side_headers
from ._intake import Refused

log = logging.getLogger("faregate.background")

FINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
RESPONSE_PATH = re.compile(r"/v1/responses/([A-Za-z0-9_-]{1,128})(/cancel)?", re.IGNORECASE)
ENDPOINT = "/v1/responses"
FIRST_POLL_S = 2.0
MAX_AGE = timedelta(hours=24)  # then it is charged its reservation, estimated
MAX_PENDING = 10_000
MAX_POLLS = 8  # follow-up polls in flight at once
POLL_TIMEOUT_S = 30.0
LEDGER_TIMEOUT_S = 3.0


@dataclass(eq=False)
class Pending:
    response_id: str
    caller: Caller
    created: datetime
    admission: Admission | None
    hold_nanos: int
    reserved: Usage
    model: str = ""
    request_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)  # the request's tool options (fees)
    headers: dict[str, str] = field(default_factory=dict)  # for follow-ups; memory only
    next_poll: float = 0.0
    interval: float = FIRST_POLL_S

    def event(self, kind: str) -> BackgroundEvent:
        c = self.caller
        return BackgroundEvent(
            id=f"{kind}:{self.response_id}", response_id=self.response_id, event=kind,
            tenant=c.tenant, user=c.user, key_id=c.key_id, tier=c.tier, tags=dict(self.tags),
            model=self.model, request_id=self.request_id, hold_nanos=self.hold_nanos,
            reserved={k: v for k, v in self.reserved.tokens().items() if v},
            at=self.created if kind == "pending" else datetime.now(timezone.utc))


class FollowMeter(ResponseMeter):
    """The meter of an answer about a pending response (a poll, a stream resume, a
    cancel): the bytes pass as the inner meter passes them; once the answer is whole,
    a final response is charged before its last bytes go out."""

    __slots__ = ("background", "response_id", "inner")

    def __init__(self, background: "Background", response_id: str, inner: ResponseMeter):
        self.background, self.response_id, self.inner = background, response_id, inner

    @property
    def rewrites(self) -> bool:  # type: ignore[override]
        return self.inner.rewrites

    @property
    def read_on(self) -> bool:  # type: ignore[override]
        return self.inner.read_on

    def feed(self, chunk: bytes) -> bytes:
        return self.inner.feed(chunk)

    def close(self) -> bytes:
        return self.inner.close()

    async def finish(self) -> None:
        reading = self.inner.reading()
        if reading is not None and is_final(self.inner):
            await self.background.settle(self.response_id, reading)

    def abort(self) -> None:
        self.inner.abort()


def is_final(meter: ResponseMeter) -> bool:
    """Does a (whole) answer show its response in a final state?"""
    if isinstance(meter, SseMeter):
        return meter.done
    if isinstance(meter, JsonMeter):
        return find_status(meter.sample) in FINAL
    return False


class Background:
    """Pending background responses: tracked at create, charged once when final."""

    def __init__(self, runtime: Callable[[], Runtime], ledger: Ledger, quota: Quota,
                 biller: Biller, client: aiohttp.ClientSession, metrics: Metrics) -> None:
        self.runtime, self.ledger, self.quota = runtime, ledger, quota
        self.biller, self.client, self.metrics = biller, client, metrics
        self.pending: dict[str, Pending] = {}
        self._task: asyncio.Task | None = None
        self._polls: set[asyncio.Task] = set()

    # -- the calls that create and read them ----------------------------------

    def admit(self, flow: Flow) -> None:
        """A background create is refused while `MAX_PENDING` responses are pending."""
        if flow.facts.background and len(self.pending) >= MAX_PENDING:
            raise Refused(errors.openai_error(
                429, "rate_limit_exceeded", "rate_limit_exceeded",
                "Too many background responses are in flight through this faregate; try "
                "again when some have finished.", headers={"retry-after": "30"},
                request_id=flow.request_id))

    def track(self, flow: Flow, request_headers: "aiohttp.typedefs.LooseHeaders") -> bool:
        """A background create whose answer is not final yet: keep its hold, follow it up."""
        facts, reading, caller = flow.facts, flow.reading, flow.caller
        if not (facts.background and flow.endpoint is not None
                and flow.endpoint.kind == "responses" and flow.path.lower() == ENDPOINT
                and 200 <= flow.status < 300 and reading.usage is None
                and reading.response_id and caller is not None):
            return False
        rid = reading.response_id
        amount = flow.admission.hold.amount if flow.admission is not None else 0
        pending = Pending(
            rid, caller, datetime.now(timezone.utc), flow.admission, amount,
            flow.reserved or Usage(), model=flow.model or "", request_id=flow.request_id,
            tags=dict(flow.tags), tools=dict(facts.tools),
            headers=side_headers(request_headers, caller.upstream_authorization),
            next_poll=time.monotonic() + self._first_poll())
        self.pending[rid] = pending
        self.ledger.record(pending.event("pending"))
        flow.hold_open = True
        return True

    def route(self, method: str, path: str) -> str | None:
        """The pending response a call reads (GET) or cancels (POST …/cancel), if any."""
        m = RESPONSE_PATH.fullmatch(path)
        if m is None or m.group(1) not in self.pending:
            return None
        cancel = m.group(2) is not None
        return m.group(1) if (method == "POST") == cancel and method in ("GET", "POST") else None

    def meter(self, flow: Flow, status: int, content_type: str) -> ResponseMeter | None:
        """The meter of a successful answer about a pending response, else None."""
        rid = flow.follow
        if rid is None or not 200 <= status < 300 or rid not in self.pending:
            return None
        facts = RequestFacts(tools=self.pending[rid].tools)
        inner = (SseMeter("responses", facts=facts) if content_type == "text/event-stream"
                 else JsonMeter("responses", facts))
        return FollowMeter(self, rid, inner)

    # -- charging ---------------------------------------------------------------

    async def settle(self, rid: str, reading: Reading) -> None:
        """A final answer: charge what it reports, once."""
        pending = self.pending.pop(rid, None)  # at once: a concurrent poll charges nothing
        if pending is None:
            return
        if not await self._claim(pending):
            if pending.admission is not None:  # another replica charged it
                self.quota.release(pending.admission)
            return
        self._charge(pending, answer_usage("responses", reading, self.runtime().prices),
                     reading.model)

    async def _give_up(self, pending: Pending, why: str) -> None:
        """faregate can no longer read the response: charge its reservation, estimated."""
        if self.pending.pop(pending.response_id, None) is None:
            return
        log.warning("background response charged its reservation",
                    extra={"response_id": pending.response_id, "reason": why,
                           "tenant": pending.caller.tenant})
        if await self._claim(pending):
            usage = Usage(**pending.reserved.tokens(), estimated=True,
                          flags=("background_unconfirmed",))
            self._charge(pending, usage, None)
        elif pending.admission is not None:
            self.quota.release(pending.admission)

    def _charge(self, pending: Pending, usage: Usage, model: str | None) -> None:
        rid = pending.response_id
        account = Account(pending.caller, ENDPOINT, pending.request_id,
                          {**pending.tags, "background": rid[:128]})
        metered = Metered(usage, model or pending.model or None, rid, kind="background",
                          record_id=line_id("background", rid, pending.created),
                          request_id=pending.request_id)
        self.biller.bill(metered, account, policy=self.runtime().policy(pending.caller),
                         hold=pending.admission)
        self.metrics.background_responses.labels("charged").inc()

    async def _claim(self, pending: Pending) -> bool:
        """Write the `final:` row; False if another process wrote it first."""
        event = pending.event("final")
        if not self.ledger.shared:  # one process owns the ledger: the journal is enough
            self.ledger.record(event)
            return True
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                return await self.ledger.claim_background(event)
        except Exception as exc:  # database away: charge anyway (the row id stays unique)
            log.warning("background claim not confirmed; charging",
                        extra={"response_id": pending.response_id, "error": type(exc).__name__})
            self.ledger.record(event)
            return True

    # -- after a restart, and the follow-up -------------------------------------

    async def load(self) -> int:
        """Pending responses of an earlier run: their holds again, their follow-up."""
        rt = self.runtime()
        now = datetime.now(timezone.utc)
        for e in await self.ledger.background_pending(now - MAX_AGE - timedelta(hours=1)):
            authorization = rt.directory.server_authorization(e.tenant)
            caller = Caller(e.tenant, e.user, e.tier, e.key_id, authorization)
            policy = rt.policy(caller)
            admission = self.quota.hold(policy, e.hold_nanos, now) if e.hold_nanos else None
            reserved = Usage(**{k: int(v) for k, v in e.reserved.items()
                                if k in TOKEN_CLASSES})
            self.pending[e.response_id] = Pending(
                e.response_id, caller, e.at, admission, e.hold_nanos, reserved, e.model,
                e.request_id, e.tags, headers=side_headers({}, authorization),
                next_poll=time.monotonic() + self._first_poll())
        return len(self.pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        for task in (self._task, *self._polls):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, *self._polls) if t is not None),
                             return_exceptions=True)

    def _first_poll(self) -> float:
        return min(FIRST_POLL_S, self.runtime().settings.server.background_poll_s)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._first_poll()))
            now = time.monotonic()
            for pending in list(self.pending.values()):
                if len(self._polls) >= MAX_POLLS:
                    break
                if pending.next_poll <= now:
                    pending.next_poll = math.inf  # in flight
                    task = asyncio.get_running_loop().create_task(self._poll(pending))
                    self._polls.add(task)
                    task.add_done_callback(self._polls.discard)

    async def _poll(self, pending: Pending) -> None:
        """Ask the upstream once; charge if final, else poll again later."""
        rt = self.runtime()
        try:
            if datetime.now(timezone.utc) - pending.created > MAX_AGE:
                await self._give_up(pending, "pending_too_long")
                return
            status = await self._ask(rt, pending) if "Authorization" in pending.headers else None
            if status == 404:
                await self._give_up(pending, "not_found")
                return
        except Exception:  # a bug must not end the follow-up of this response
            log.exception("background follow-up failed",
                          extra={"response_id": pending.response_id})
        pending.interval = min(max(pending.interval, self._first_poll()) * 2,
                               rt.settings.server.background_poll_s)
        pending.next_poll = time.monotonic() + pending.interval

    async def _ask(self, rt: Runtime, pending: Pending) -> int | None:
        url = URL(f"{rt.settings.server.upstream}{ENDPOINT}/{pending.response_id}",
                  encoded=True)
        meter = JsonMeter("responses", RequestFacts(tools=pending.tools))
        try:
            async with asyncio.timeout(POLL_TIMEOUT_S):
                async with self.client.get(url, headers=pending.headers) as answer:
                    if answer.status != 200:
                        return answer.status
                    async for chunk in answer.content.iter_any():
                        meter.feed(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.info("background follow-up failed", extra={
                "response_id": pending.response_id, "error": type(exc).__name__})
            return None
        meter.close()
        self.metrics.background_responses.labels("polled").inc()
        if is_final(meter):
            await self.settle(pending.response_id, meter.reading())
        return 200
