"""Batch API metering: who created a batch, and its output charged once, at batch rates.

A batch costs nothing when it is created; its usage appears later, line by
line, in its output file. faregate follows the batch through the calls a
client makes anyway:

1. `POST /v1/batches` — admitted first: faregate reads the input file from
   the upstream and holds the worst case of its lines at batch rates (a file
   it cannot read: admitted only while the budget is not spent); the hold
   stays until the output is charged (or two days pass). The answer names
   the batch; faregate records who created it (tenant, user, key,
   attribution tags) and for which endpoint.
2. `GET /v1/batches/{id}` and `GET /v1/batches` — the answers name the
   batch's `output_file_id` (and `error_file_id`) once it has them; faregate
   links file to batch.
3. `GET /v1/files/{id}/content` of a linked output file — the body streams
   to the client untouched while faregate reads it line by line and charges
   every successful line (`response.status_code` 200) to the creator, at the
   `batch` service tier, with the batch id as the `batch` tag.

Charged once: see `_batch_book` (claims) and `meter.line_id` (deterministic
line ids). Output that is never fetched through faregate cannot be metered.
Batch calls are asked of the upstream uncompressed (like metered calls), so
the answers can be read as they pass.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable

import aiohttp
from aiohttp import web

from faregate.storage import BatchEvent

from .. import _errors as errors
from .._metrics import Metrics
from .._runtime import Runtime
from ..caller import Caller
from ..meter import Account, Biller, Flow, HoldLast, JsonCollector, LineMeter, Metered
from ..quota import Admission, Ask, Policy, Quota, Refusal
from ._batch_book import BATCH_PATH, CONTENT_PATH, MAX_TRACKED, BatchBook, _put
from ._batch_input import ask_upstream, lines_reservation, read_input_lines, side_headers
from ._intake import Refused

LEDGER_ENDPOINT = "/v1/batches"
FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
HOLD_S = 2 * 24 * 3600.0  # a creation hold lapses after the 24 h window and a day more


def batch_route(method: str, path: str) -> tuple[str, str | None] | None:
    """("create" | "list" | "retrieve" | "content", id) for a Batch API call, else None."""
    lowered = path.lower()
    if not (lowered.startswith("/v1/batches") or lowered.startswith("/v1/files/")):
        return None
    bare = path.rstrip("/")
    if bare.lower() == "/v1/batches":
        return ("create", None) if method == "POST" else ("list", None) if method == "GET" else None
    if method != "GET":
        return None
    if m := BATCH_PATH.fullmatch(bare):
        return "retrieve", m.group(1)
    if m := CONTENT_PATH.fullmatch(bare):
        return "content", m.group(1)
    return None


class BatchMeter(HoldLast):
    """The meter of a Batch API answer: a batch object read whole, or an output
    file whose lines are billed to the batch's creator as they stream by."""

    def __init__(self, batches: "Batches", flow: Flow, route: str,
                 lines: LineMeter | None = None, origin: BatchEvent | None = None,
                 spent: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.batches, self.flow, self.route = batches, flow, route
        self.json = JsonCollector() if lines is None else None
        self.lines = lines
        self.origin = origin
        self.spent = spent  # line ids already in this process's budget counters
        self.charged: set[str] = set()  # line ids this download charged

    def feed(self, chunk: bytes) -> bytes:
        if self.json is not None:
            self.json.feed(chunk)
        elif self.lines is not None:
            self._bill(self.lines.feed(chunk))
        return super().feed(chunk)

    def close(self) -> bytes:
        if self.lines is not None:
            self._bill(self.lines.close())
            self._count()
            if self.origin is not None:  # the output is charged: its creation hold ends
                self.batches.release_hold(self.origin.batch_id)
        elif self.json is not None and self.route == "create":
            batch_id = self.batches.book.after_create(self.flow.caller, self.flow.tags,
                                                      self.json.value())
            if batch_id is not None and self.flow.admission is not None:
                self.batches.keep_hold(batch_id, self.flow.admission)
                self.flow.hold_open = True  # not settled with the create call
        return super().close()

    async def finish(self) -> None:
        if self.json is not None and self.route != "create":
            await self.batches.book.after_read(self.json.value())

    def abort(self) -> None:
        """A partly read output file stays chargeable by the next download."""
        if self.lines is not None and self.flow.batch is not None:
            self._bill(self.lines.close(complete=False))
            self._count()
            self.batches.book.unclaim(self.flow.batch[1] or "",
                                      self.spent | frozenset(self.charged))
            self.lines = None

    def _bill(self, lines: list[Metered]) -> None:
        origin = self.origin
        if not lines or origin is None:
            return
        caller = Caller(tenant=origin.tenant, user=origin.user, tier=origin.tier,
                        key_id=origin.key_id, upstream_authorization=None)
        account = Account(caller, LEDGER_ENDPOINT, "", {**origin.tags, "batch": origin.batch_id})
        policy = self.batches.runtime().policy(caller)
        for line in lines:
            fresh = line.record_id not in self.spent and line.record_id not in self.charged
            if fresh and len(self.charged) < MAX_TRACKED:
                self.charged.add(line.record_id or "")
            self.batches.biller.bill(line, account, policy=policy, spend=fresh)
            if fresh:
                self.lines.counts["charged"] += 1  # type: ignore[union-attr]

    def _count(self) -> None:
        if self.lines is None:
            return
        for result, n in self.lines.counts.items():
            if n:
                self.batches.metrics.batch_lines.labels(result).inc(n)
                self.lines.counts[result] = 0


class Batches:
    """The Batch API steps of the REST edge: admit and resolve before forwarding,
    meter after."""

    def __init__(self, book: BatchBook, biller: Biller, runtime: Callable[[], Runtime],
                 metrics: Metrics, quota: Quota, client: aiohttp.ClientSession) -> None:
        self.book = book
        self.biller = biller
        self.runtime = runtime
        self.metrics = metrics
        self.quota = quota
        self.client = client
        #: batch id -> (its creation's hold, when the hold lapses)
        self.holds: OrderedDict[str, tuple[Admission, float]] = OrderedDict()
        self.not_outputs: OrderedDict[str, bool] = OrderedDict()  # files that are no batch's

    async def admit_create(self, flow: Flow, parsed: Any, policy: Policy, rt: Runtime,
                           request: web.Request) -> None:
        """`POST /v1/batches`: hold the worst case of its input file's lines (or, if the file
        cannot be read, refuse it while a budget is spent)."""
        now = datetime.now(timezone.utc)
        file_id = parsed.get("input_file_id") if isinstance(parsed, dict) else None
        amount = 1
        if isinstance(file_id, str) and FILE_ID.fullmatch(file_id):
            assert flow.caller is not None
            read = await read_input_lines(self.client, rt.settings.server.upstream, file_id,
                                          side_headers(request.headers,
                                                       flow.caller.upstream_authorization))
            if read is not None:
                lines, share = read
                amount = max(1, int(lines_reservation(lines, policy, rt.prices, now) / share))
        ask = Ask(amount, shared=rt.settings.upstream_limits, wait=False)  # held for hours
        result = await self.quota.reserve(policy, ask, now, rt.settings.server.admission_wait_s)
        if isinstance(result, Refusal):
            raise Refused(errors.refused(result, flow.request_id))
        flow.admission = result

    def keep_hold(self, batch_id: str, admission: Admission) -> None:
        """The batch exists: its creation's hold stays until its output is charged."""
        now = time.monotonic()
        while self.holds:  # lapsed holds first (batches whose output was never read here)
            oldest, (held, until) = next(iter(self.holds.items()))
            if until > now and len(self.holds) < MAX_TRACKED:
                break
            self.quota.release(held)
            del self.holds[oldest]
        self.holds[batch_id] = (admission, now + HOLD_S)

    def release_hold(self, batch_id: str) -> None:
        held = self.holds.pop(batch_id, None)
        if held is not None:
            self.quota.release(held[0])

    async def resolve(self, flow: Flow, request: web.Request) -> None:
        """Before forwarding: is this download a batch output file still to be charged?

        However the file id was found (a batch lookup, any listing), a file faregate
        has not linked yet is looked up: its upstream metadata says whether it is a
        batch output (`purpose: batch_output`); if so, the recent batches are listed
        to find its creator, else the caller downloading it is charged. A file that
        is not a batch output, or is charged already, is forwarded as any other call
        (unmetered, with the client's own Accept-Encoding and Range).
        """
        if flow.batch is None or flow.batch[0] != "content":
            return
        file_id = flow.batch[1]
        if not file_id or file_id in self.book.charged or file_id in self.not_outputs:
            flow.batch = None
            return
        if await self.book.resolve(file_id) is None and not await self._discover(
                file_id, flow, request):
            flow.batch = None

    async def _discover(self, file_id: str, flow: Flow, request: web.Request) -> bool:
        """An output file faregate did not see linked: find and note its batch."""
        assert flow.caller is not None
        upstream = self.runtime().settings.server.upstream
        headers = side_headers(request.headers, flow.caller.upstream_authorization)
        meta = await ask_upstream(self.client, f"{upstream}/v1/files/{file_id}", headers)
        if not isinstance(meta, dict) or meta.get("purpose") != "batch_output":
            if isinstance(meta, dict):  # not a batch output: never asked again
                _put(self.not_outputs, file_id, True)
            return False
        listing = await ask_upstream(self.client, f"{upstream}/v1/batches?limit=100", headers)
        await self.book.after_read(listing)
        if self.book.origin(file_id) is None:  # created elsewhere: the downloader pays
            self.book.adopt(file_id, flow.caller, flow.tags, meta.get("created_at"))
        return True

    async def meter(self, flow: Flow, status: int) -> BatchMeter | None:
        """The meter for a successful Batch API answer, or None when there is nothing
        to meter (an error, or an output file another download is charging)."""
        if flow.batch is None or not 200 <= status < 300:
            return None
        route, ident = flow.batch
        if route != "content":
            return BatchMeter(self, flow, route)
        origin = self.book.origin(ident) if ident else None
        if origin is None or ident is None or not await self.book.claim(ident, origin):
            return None
        spent = self.book.partial.pop(ident, frozenset())
        lines = LineMeter(origin.endpoint, origin.batch_id, origin.at, self.runtime().prices)
        return BatchMeter(self, flow, route, lines, origin, spent)
