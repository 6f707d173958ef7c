"""What a call continuing a response or a conversation carries: recorded tokens.

A Responses call naming `previous_response_id` or `conversation` is billed
for everything before it, which its body does not show. What faregate
charged for that response (its input and output tokens), or for the latest
call in that conversation, is the least the new call carries. Kept here in
memory (bounded, least recently used dropped first) as each call is billed;
a miss — after a restart, or a response another replica served — asks the
ledger (`charges` rows carry the answer's id and conversation), bounded in
time, at most once per id and `NEGATIVE_S`. Only calls naming an id ever pay
for a lookup; the lookup is never on the path of other calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Awaitable, Callable

log = logging.getLogger("faregate.context")

MAX_ENTRIES = 100_000
LOOKUP_TIMEOUT_S = 0.5
NEGATIVE_S = 5.0  # a miss is asked again after this long (another replica's row may land)

Lookup = Callable[..., Awaitable[int | None]]  # (tenant, response_id=, conversation_id=)


class Contexts:
    def __init__(self, lookup: Lookup | None = None) -> None:
        self._lookup = lookup
        self._known: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._missed: dict[tuple[str, str, str], float] = {}

    def note(self, tenant: str, tokens: int, response_id: str | None = None,
             conversation_id: str | None = None) -> None:
        """A call was billed: a call continuing it carries at least `tokens`."""
        for kind, ident in (("response", response_id), ("conversation", conversation_id)):
            if ident:
                key = (tenant, kind, ident)
                self._known[key] = tokens
                self._known.move_to_end(key)
                self._missed.pop(key, None)
        while len(self._known) > MAX_ENTRIES:
            self._known.popitem(last=False)

    async def recall(self, tenant: str, response_id: str | None,
                     conversation_id: str | None) -> tuple[int, bool]:
        """(tokens carried, every named id was found). Unknown ids count 0 tokens."""
        total, found = 0, True
        for kind, ident in (("response", response_id), ("conversation", conversation_id)):
            if not ident:
                continue
            tokens = await self._one(tenant, kind, ident)
            if tokens is None:
                found = False
            else:
                total = max(total, tokens)  # a conversation holds its responses
        return total, found

    async def _one(self, tenant: str, kind: str, ident: str) -> int | None:
        key = (tenant, kind, ident)
        hit = self._known.get(key)
        if hit is not None:
            self._known.move_to_end(key)
            return hit
        missed = self._missed.get(key)
        if self._lookup is None or (missed is not None
                                    and time.monotonic() - missed < NEGATIVE_S):
            return None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                tokens = await self._lookup(tenant, **{f"{kind}_id": ident})
        except Exception as exc:  # slow or down: estimated as unknown
            log.warning("context lookup failed", extra={"kind": kind, "error": str(exc)})
            tokens = None
        if tokens is None:
            if len(self._missed) > MAX_ENTRIES:
                self._missed.clear()
            self._missed[key] = time.monotonic()
            return None
        self.note(tenant, tokens, **{f"{kind}_id": ident})
        return tokens
