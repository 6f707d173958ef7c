"""Batch API metering: who created a batch, and its output charged once, at batch rates.

A batch costs nothing when it is created; its usage appears later, line by
line, in its output file. faregate follows the batch through the calls a
client makes anyway:

1. `POST /v1/batches` — the answer names the batch; faregate records who
   created it (tenant, user, key, attribution tags) and for which endpoint.
2. `GET /v1/batches/{id}` and `GET /v1/batches` — the answers name the
   batch's `output_file_id` (and `error_file_id`) once it has them; faregate
   links file to batch.
3. `GET /v1/files/{id}/content` of a linked output file — the body streams
   to the client untouched while faregate reads it line by line and charges
   every successful line (`response.status_code` 200) to the creator, at the
   `batch` service tier, with the batch id as the `batch` tag.

Charged once: each line's ledger id is derived from the batch id and the
line's `custom_id`, so rows can never repeat, and a file is *claimed* in the
ledger (`charged:<file>` row, insert-if-absent) before its lines are charged,
so a second download — here, on another replica or after a restart — adds
nothing to budgets either. Output that is never fetched through faregate
cannot be metered.

Batch calls are asked of the upstream uncompressed (like metered calls), so
the answers can be read as they pass. With several replicas on one
PostgreSQL, a replica that did not see a batch created or linked looks the
batch up in the ledger (one primary-key query, only on such a miss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Awaitable

import orjson

from faregate.pricing import price, usage_for_endpoint
from faregate.storage import BatchEvent

from ._identity import Caller
from ._meter import charge_record, count_charge

if TYPE_CHECKING:
    from ._flow import Flow
    from ._state import State

log = logging.getLogger("faregate.batches")

_BATCH = re.compile(r"/v1/batches/([A-Za-z0-9_-]{1,128})")
_CONTENT = re.compile(r"/v1/files/([A-Za-z0-9_-]{1,128})/content")

#: Batch endpoints whose output lines carry usage, and the usage shape of each.
KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
}
LEDGER_ENDPOINT = "/v1/batches"
MAX_JSON = 4 * 1024 * 1024  # batch objects and lists (100 batches with metadata)
MAX_LINE = 8 * 1024 * 1024  # one output line (a long completion); longer lines are skipped
MAX_TRACKED = 100_000  # batches and files remembered in memory
MAX_PARTIAL = 1_000  # broken-off downloads whose charged lines are remembered
REMEMBER = timedelta(days=35)  # output files are kept 30 days upstream
LEDGER_TIMEOUT_S = 3.0  # a claim or lookup the database does not answer in time is skipped
MAX_LOOKUP = 100  # batch ids looked up in the ledger per list answer
MAX_NAME = 128  # model and endpoint names kept from upstream answers
FILE_FIELDS = ("output_file_id", "error_file_id")


def batch_route(method: str, path: str) -> tuple[str, str | None] | None:
    """("create" | "list" | "retrieve" | "content", id) for a Batch API call, else None."""
    if not (path.startswith("/v1/batches") or path.startswith("/v1/files/")):
        return None
    bare = path.rstrip("/")
    if bare == "/v1/batches":
        return ("create", None) if method == "POST" else ("list", None) if method == "GET" else None
    if method != "GET":
        return None
    if m := _BATCH.fullmatch(bare):
        return "retrieve", m.group(1)
    if m := _CONTENT.fullmatch(bare):
        return "content", m.group(1)
    return None


def line_id(batch_id: str, custom_id: str, created: datetime) -> str:
    """The ledger id of one output line: time-ordered like `new_id`, but deterministic."""
    ms = int(created.timestamp() * 1000)
    digest = int.from_bytes(hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).digest()[:10],
                            "big")
    return f"{(ms << 80) | digest:032x}"


class BatchBook:
    """Batches faregate saw created, their output files, and files already charged."""

    def __init__(self) -> None:
        self.created: OrderedDict[str, BatchEvent] = OrderedDict()
        self.files: OrderedDict[str, str] = OrderedDict()  # output file -> batch
        self.charged: set[str] = set()
        #: file -> line ids a broken-off download already added to budgets here
        self.partial: OrderedDict[str, frozenset[str]] = OrderedDict()

    def load(self, events: list[BatchEvent]) -> None:
        for e in events:
            self._note(e)

    def _note(self, e: BatchEvent) -> None:
        if e.event == "created":
            _put(self.created, e.batch_id, e)
        elif e.event == "output" and e.file_id:
            _put(self.files, e.file_id, e.batch_id)
        elif e.event == "charged" and e.file_id:
            if len(self.charged) >= MAX_TRACKED:
                self.charged.clear()  # the ledger's claim rows still refuse a second charge
            self.charged.add(e.file_id)

    def origin(self, file_id: str) -> BatchEvent | None:
        """The creation of the batch whose output `file_id` is, if faregate saw both."""
        batch = self.files.get(file_id)
        return self.created.get(batch) if batch is not None else None

    async def resolve(self, state: "State", file_id: str) -> BatchEvent | None:
        """`origin`, asking the ledger on a miss when other replicas share it."""
        origin = self.origin(file_id)
        if origin is not None or not _shared(state):
            return origin
        found = await _lookup(state, ["file:" + file_id, "charged:" + file_id])
        links = [e for e in found if e.event == "output"]
        if links:
            found += await _lookup(state, [links[0].batch_id])
        self.load(found)
        return self.origin(file_id)

    # -- what the answers say ----------------------------------------------

    def after_create(self, state: "State", flow: "Flow", body: Any) -> None:
        if not isinstance(body, dict) or flow.caller is None:
            return
        batch_id, endpoint = body.get("id"), body.get("endpoint")
        if not (isinstance(batch_id, str) and _BATCH.fullmatch("/v1/batches/" + batch_id)):
            return
        c = flow.caller
        event = BatchEvent(
            id=batch_id, batch_id=batch_id, event="created", tenant=c.tenant, user=c.user,
            key_id=c.key_id, tier=c.tier, tags=dict(flow.tags),
            endpoint=endpoint[:MAX_NAME] if isinstance(endpoint, str) else "")
        self._note(event)
        state.record(event)

    async def after_read(self, state: "State", body: Any) -> None:
        """A batch object or a list of them: link known batches to their files."""
        links = _file_links(body)
        unknown = list({b for b, _ in links if b not in self.created})[:MAX_LOOKUP]
        if unknown and _shared(state):  # created through another replica?
            self.load([e for e in await _lookup(state, unknown) if e.event == "created"])
        for batch_id, file_id in links:
            if batch_id in self.created and self.files.get(file_id) != batch_id:
                event = BatchEvent(id="file:" + file_id, batch_id=batch_id, event="output",
                                   tenant=self.created[batch_id].tenant, file_id=file_id)
                self._note(event)
                state.record(event)

    async def claim(self, state: "State", file_id: str, origin: BatchEvent) -> bool:
        """True if this download is the one that charges `file_id`."""
        if file_id in self.charged:
            return False
        event = BatchEvent(id="charged:" + file_id, batch_id=origin.batch_id, event="charged",
                           tenant=origin.tenant, file_id=file_id)
        self._note(event)  # at once: a concurrent download in this process charges nothing
        if state.ledger is None:
            return True
        claimed = await _ask_ledger(state.ledger.claim_batch(event),
                                    "batch claim not confirmed; charging", file_id=file_id)
        if claimed is _UNANSWERED:  # database away: charge anyway, line ids keep rows unique
            state.record(event)
            return True
        return claimed

    def unclaim(self, state: "State", file_id: str, spent: frozenset[str]) -> None:
        """Give up a claim whose download broke off: the next download charges the file.

        Lines already charged keep their rows (their ids cannot repeat), and
        `spent` — their ids — keeps a later download here from adding them to
        the budget counters again.
        """
        self.charged.discard(file_id)
        _put(self.partial, file_id, spent, MAX_PARTIAL)
        if state.ledger is not None:
            event_id = "charged:" + file_id
            task = asyncio.get_running_loop().create_task(_ask_ledger(
                state.ledger.unclaim_batch(event_id), "batch claim not released", id=event_id))
            _pending.add(task)
            task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task] = set()
_UNANSWERED = object()


async def _ask_ledger(call: Awaitable[Any], failed: str, **context: Any) -> Any:
    """`call`'s answer, or `_UNANSWERED` (logged as `failed`) if the database
    fails or does not answer within LEDGER_TIMEOUT_S."""
    try:
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            return await call
    except Exception as exc:
        log.warning(failed, extra={**context, "error": type(exc).__name__})
        return _UNANSWERED


def _shared(state: "State") -> bool:
    return state.ledger is not None and state.ledger.shared


async def _lookup(state: "State", ids: list[str]) -> list[BatchEvent]:
    """Batch events by id from the ledger; none if the database does not answer in time."""
    found = await _ask_ledger(state.ledger.batch_events_by_id(ids), "batch lookup failed")
    return [] if found is _UNANSWERED else found


def _file_links(body: Any) -> list[tuple[str, str]]:
    """(batch id, file id) of every output and error file a batch answer names."""
    if not isinstance(body, dict):
        return []
    items = body.get("data") if body.get("object") == "list" else [body]
    links = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        batch_id = item.get("id")
        if not (isinstance(batch_id, str) and _BATCH.fullmatch("/v1/batches/" + batch_id)):
            continue
        for name in FILE_FIELDS:
            file_id = item.get(name)
            if isinstance(file_id, str) and _CONTENT.fullmatch(f"/v1/files/{file_id}/content"):
                links.append((batch_id, file_id))
    return links


def _put(d: OrderedDict, key: str, value: Any, limit: int = MAX_TRACKED) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)


class JsonTap:
    """Collects a small JSON answer (batch object or list) as it is relayed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        if not self.overflow:
            self.buf += chunk
            self.overflow = len(self.buf) > MAX_JSON

    def value(self) -> Any:
        if self.overflow:
            return None
        try:
            return orjson.loads(bytes(self.buf))
        except orjson.JSONDecodeError:
            return None


class LineMeter:
    """Charges the lines of a batch output file as the file streams by."""

    def __init__(self, state: "State", origin: BatchEvent, spent: frozenset[str]) -> None:
        self.state = state
        self.origin = origin
        self.spent = spent  # line ids already in this process's budget counters
        self.charged: set[str] = set()  # line ids this download charged
        self.caller = Caller(tenant=origin.tenant, user=origin.user, tier=origin.tier,
                             key_id=origin.key_id, upstream_authorization=None)
        self.kind = KINDS.get(origin.endpoint)
        self.buf = bytearray()
        self.skipping = False  # inside a line longer than MAX_LINE
        self.counts = {"charged": 0, "failed": 0, "malformed": 0, "too_long": 0}

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return
            self._keep(chunk[start:end])
            if not self.skipping:
                self._line(bytes(self.buf))
            self.buf.clear()
            self.skipping = False
            start = end + 1

    def close(self, complete: bool = True) -> None:
        """The file ended (`complete`) or broke off (its last partial line is dropped)."""
        if complete and self.buf and not self.skipping:
            self._line(bytes(self.buf))
        self.buf.clear()
        metrics = self.state.metrics
        for result, n in self.counts.items():
            if n:
                metrics.batch_lines.labels(result).inc(n)

    def _keep(self, part: bytes) -> None:
        if self.skipping or not part:
            return
        if len(self.buf) + len(part) > MAX_LINE:
            self.skipping = True
            self.buf.clear()
            self.counts["too_long"] += 1
            return
        self.buf += part

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.counts["malformed"] += 1
            return
        response = line.get("response") if isinstance(line, dict) else None
        if not isinstance(response, dict) or response.get("status_code") != 200:
            self.counts["failed" if isinstance(line, dict) else "malformed"] += 1
            return
        body = response.get("body")
        if not isinstance(body, dict) or self.kind is None:
            self.counts["malformed"] += 1
            return
        try:
            self._charge(line, body)
        except Exception:  # a pricing bug must not break the download
            log.exception("batch line not charged", extra={"batch_id": self.origin.batch_id})
            self.counts["malformed"] += 1

    def _charge(self, line: dict, body: dict) -> None:
        """Record one successful line, and add it to budgets unless already added here."""
        state, origin = self.state, self.origin
        rt = state.runtime
        now = datetime.now(timezone.utc)
        reported = usage_for_endpoint(self.kind, body.get("usage"), table=rt.prices)
        usage = dataclasses.replace(reported, service_tier="batch")
        model = body.get("model")
        model = model[:MAX_NAME] if isinstance(model, str) and model else "unknown"
        charge = price(usage, model, now, rt.prices)
        custom = line.get("custom_id")
        request_id = line.get("id") if isinstance(line.get("id"), str) else ""
        key = custom if isinstance(custom, str) and custom else request_id
        record = charge_record(
            charge, self.caller, model=model, endpoint=LEDGER_ENDPOINT, status=200, at=now,
            request_id=request_id[:128], markup=rt.markup(origin.tenant),
            tags={**origin.tags, "batch": origin.batch_id})
        record = dataclasses.replace(record, id=line_id(origin.batch_id, key[:256], origin.at))
        state.record(record)  # a repeated id is ignored by the ledger
        if record.id in self.spent or record.id in self.charged:
            return
        if len(self.charged) < MAX_TRACKED:
            self.charged.add(record.id)
        state.quota.spend(rt.policy(self.caller), record.cost_nanos, now)
        count_charge(state.metrics, origin.tenant, charge, LEDGER_ENDPOINT)
        self.counts["charged"] += 1


class BatchTap:
    """What the relay feeds a Batch API answer to; one per call."""

    def __init__(self, book: BatchBook, state: "State", flow: "Flow", route: str,
                 meter: LineMeter | None) -> None:
        self.book, self.state, self.flow, self.route = book, state, flow, route
        self.json = JsonTap() if route in ("create", "list", "retrieve") else None
        self.meter = meter

    def feed(self, chunk: bytes) -> None:
        if self.json is not None:
            self.json.feed(chunk)
        elif self.meter is not None:
            self.meter.feed(chunk)

    def abort(self) -> None:
        """The answer was cut short: a partly read output file stays chargeable."""
        if self.meter is not None and self.flow.batch is not None:
            meter = self.meter
            meter.close(complete=False)
            self.book.unclaim(self.state, self.flow.batch[1] or "",
                              meter.spent | frozenset(meter.charged))

    async def finish(self) -> None:
        """The whole answer was relayed (all but its last bytes)."""
        if self.json is not None:
            body = self.json.value()
            if self.route == "create":
                self.book.after_create(self.state, self.flow, body)
            else:
                await self.book.after_read(self.state, body)
        elif self.meter is not None:
            self.meter.close()


async def prepare(state: "State", flow: "Flow") -> None:
    """Before forwarding: a file faregate cannot attribute is not a batch call at all.

    Such a download is forwarded as any other call (unmetered, and with the
    client's own Accept-Encoding); every other batch call is read on its way.
    """
    if flow.batch is None or flow.batch[0] != "content":
        return
    file_id = flow.batch[1]
    if state.batches is None or not file_id or await state.batches.resolve(
            state, file_id) is None:
        flow.batch = None


async def open_tap(state: "State", flow: "Flow", status: int) -> BatchTap | None:
    """A tap for a successful Batch API answer, or None when there is nothing to meter."""
    if flow.batch is None or state.batches is None or not 200 <= status < 300:
        return None
    route, ident = flow.batch
    book = state.batches
    if route != "content":
        return BatchTap(book, state, flow, route, None)
    origin = book.origin(ident) if ident else None
    if origin is None or ident is None or not await book.claim(state, ident, origin):
        return None
    spent = book.partial.pop(ident, frozenset())
    return BatchTap(book, state, flow, route, LineMeter(state, origin, spent))


async def load_batches(state: "State") -> None:
    """What the ledger knows of recent batches (at start)."""
    if state.ledger is not None:
        state.batches.load(await state.ledger.batch_events(datetime.now(timezone.utc) - REMEMBER))
