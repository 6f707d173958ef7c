"""What faregate knows of batches: who created each, its files, and files charged.

In memory (bounded), mirrored in the ledger's `batches` rows so a restart
or another replica knows too. A file is *claimed* in the ledger
(`charged:<file>` row, insert-if-absent) before its lines are charged, so a
second download — here, on another replica or after a restart — adds
nothing to budgets. With several replicas on one PostgreSQL, a replica that
did not see a batch created or linked looks it up in the ledger (one
primary-key query, only on such a miss). A database that does not answer
in time is skipped: claims then charge anyway (line ids keep rows unique).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable

from faregate.storage import BatchEvent, Ledger

from ..caller import Caller

log = logging.getLogger("faregate.batches")

# Any letter case of the API's own words (as the metered classes are matched).
BATCH_PATH = re.compile(r"/v1/batches/([A-Za-z0-9_-]{1,128})", re.IGNORECASE)
CONTENT_PATH = re.compile(r"/v1/files/([A-Za-z0-9_-]{1,128})/content", re.IGNORECASE)
MAX_TRACKED = 100_000  # batches and files remembered in memory
MAX_PARTIAL = 1_000  # broken-off downloads whose charged lines are remembered
REMEMBER = timedelta(days=35)  # output files are kept 30 days upstream
LEDGER_TIMEOUT_S = 3.0  # a claim or lookup the database does not answer in time is skipped
MAX_LOOKUP = 100  # batch ids looked up in the ledger per list answer
MAX_NAME = 128  # endpoint names kept from upstream answers
FILE_FIELDS = ("output_file_id", "error_file_id")

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


def _put(d: OrderedDict, key: str, value: Any, limit: int = MAX_TRACKED) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)


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
        if not (isinstance(batch_id, str) and BATCH_PATH.fullmatch("/v1/batches/" + batch_id)):
            continue
        for name in FILE_FIELDS:
            file_id = item.get(name)
            if isinstance(file_id, str) and CONTENT_PATH.fullmatch(f"/v1/files/{file_id}/content"):
                links.append((batch_id, file_id))
    return links


class BatchBook:
    """Batches faregate saw created, their output files, and files already charged."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.created: OrderedDict[str, BatchEvent] = OrderedDict()
        self.files: OrderedDict[str, str] = OrderedDict()  # output file -> batch
        self.charged: set[str] = set()
        #: file -> line ids a broken-off download already added to budgets here
        self.partial: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._pending: set[asyncio.Task] = set()

    async def load(self) -> None:
        """What the ledger knows of recent batches (at start)."""
        self._load(await self.ledger.batch_events(datetime.now(timezone.utc) - REMEMBER))

    def _load(self, events: list[BatchEvent]) -> None:
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

    async def _lookup(self, ids: list[str]) -> list[BatchEvent]:
        """Batch events by id from the ledger; none if the database does not answer in time."""
        found = await _ask_ledger(self.ledger.batch_events_by_id(ids), "batch lookup failed")
        return [] if found is _UNANSWERED else found

    async def resolve(self, file_id: str) -> BatchEvent | None:
        """`origin`, asking the ledger on a miss when other replicas share it."""
        origin = self.origin(file_id)
        if origin is not None or not self.ledger.shared:
            return origin
        found = await self._lookup(["file:" + file_id, "charged:" + file_id])
        links = [e for e in found if e.event == "output"]
        if links:
            found += await self._lookup([links[0].batch_id])
        self._load(found)
        return self.origin(file_id)

    # -- what the answers say ----------------------------------------------

    def after_create(self, caller: Caller | None, tags: dict[str, str], body: Any
                     ) -> str | None:
        """A `POST /v1/batches` answer: remember (and record) who created the batch;
        its id, or None when the answer names none."""
        if not isinstance(body, dict) or caller is None:
            return None
        batch_id, endpoint = body.get("id"), body.get("endpoint")
        if not (isinstance(batch_id, str) and BATCH_PATH.fullmatch("/v1/batches/" + batch_id)):
            return None
        c = caller
        event = BatchEvent(
            id=batch_id, batch_id=batch_id, event="created", tenant=c.tenant, user=c.user,
            key_id=c.key_id, tier=c.tier, tags=dict(tags),
            endpoint=endpoint[:MAX_NAME] if isinstance(endpoint, str) else "")
        self._note(event)
        self.ledger.record(event)
        return batch_id

    def adopt(self, file_id: str, caller: Caller, tags: dict[str, str], created: Any) -> None:
        """A batch output file whose batch faregate never saw created: its lines are
        charged to the caller downloading it, the file standing in for the batch."""
        at = (datetime.fromtimestamp(created, timezone.utc)
              if isinstance(created, int) and created > 0 else datetime.now(timezone.utc))
        batch_id = "adopted:" + file_id
        c = caller
        for event in (
            BatchEvent(id=batch_id, batch_id=batch_id, event="created", tenant=c.tenant,
                       user=c.user, key_id=c.key_id, tier=c.tier, tags=dict(tags), at=at),
            BatchEvent(id="file:" + file_id, batch_id=batch_id, event="output",
                       tenant=c.tenant, file_id=file_id),
        ):
            self._note(event)
            self.ledger.record(event)

    async def after_read(self, body: Any) -> None:
        """A batch object or a list of them: link known batches to their files."""
        links = _file_links(body)
        unknown = list({b for b, _ in links if b not in self.created})[:MAX_LOOKUP]
        if unknown and self.ledger.shared:  # created through another replica?
            self._load([e for e in await self._lookup(unknown) if e.event == "created"])
        for batch_id, file_id in links:
            if batch_id in self.created and self.files.get(file_id) != batch_id:
                event = BatchEvent(id="file:" + file_id, batch_id=batch_id, event="output",
                                   tenant=self.created[batch_id].tenant, file_id=file_id)
                self._note(event)
                self.ledger.record(event)

    async def claim(self, file_id: str, origin: BatchEvent) -> bool:
        """True if this download is the one that charges `file_id`."""
        if file_id in self.charged:
            return False
        event = BatchEvent(id="charged:" + file_id, batch_id=origin.batch_id, event="charged",
                           tenant=origin.tenant, file_id=file_id)
        self._note(event)  # at once: a concurrent download in this process charges nothing
        claimed = await _ask_ledger(self.ledger.claim_batch(event),
                                    "batch claim not confirmed; charging", file_id=file_id)
        if claimed is _UNANSWERED:  # database away: charge anyway, line ids keep rows unique
            self.ledger.record(event)
            return True
        return claimed

    def unclaim(self, file_id: str, spent: frozenset[str]) -> None:
        """Give up a claim whose download broke off: the next download charges the file.

        Lines already charged keep their rows (their ids cannot repeat), and
        `spent` — their ids — keeps a later download here from adding them to
        the budget counters again.
        """
        self.charged.discard(file_id)
        _put(self.partial, file_id, spent, MAX_PARTIAL)
        event_id = "charged:" + file_id
        task = asyncio.get_running_loop().create_task(_ask_ledger(
            self.ledger.unclaim_batch(event_id), "batch claim not released", id=event_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
