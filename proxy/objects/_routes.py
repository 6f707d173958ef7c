"""Which upstream object a request creates, lists or uses — read from its path.

Objects live in collections under `/v1`: stored responses, conversations,
files, uploads, batches, vector stores, containers, fine-tuning jobs,
Realtime calls and stored chat completions. A `POST` to a collection creates
one (its id is in the answer), a `GET` of a collection lists them, and any
request below `<collection>/<id>` uses that object (and whatever lives under
it: a conversation's items, a vector store's files, a job's events). Paths
arrive without dot segments or encoded slashes (the edge refuses those first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Upstream object ids: letters, digits, `_` and `-` (resp_…, file-…, ftjob-…).
OBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class Collection:
    prefix: str  # "/v1/files"
    kind: str  # ledger `objects.kind`
    noun: str  # as OpenAI's not-found message names it
    ids: tuple[str, ...]  # how its ids begin (other path words are operations: input_tokens)
    lists: bool = True  # GET <prefix> lists (and is filtered to the caller's own)
    creates: bool = True  # POST <prefix> creates one (its id in the answer)


COLLECTIONS: tuple[Collection, ...] = (
    Collection("/v1/responses", "response", "Response", ("resp_",), lists=False),
    Collection("/v1/conversations", "conversation", "Conversation", ("conv_",), lists=False),
    Collection("/v1/files", "file", "File", ("file-", "file_")),
    Collection("/v1/uploads", "upload", "Upload", ("upload_",), lists=False),
    Collection("/v1/batches", "batch", "Batch", ("batch_",)),
    Collection("/v1/vector_stores", "vector_store", "VectorStore", ("vs_",)),
    Collection("/v1/containers", "container", "Container", ("cntr_",)),
    Collection("/v1/fine_tuning/jobs", "fine_tuning_job", "FineTuningJob", ("ftjob-",)),
    Collection("/v1/realtime/calls", "realtime_call", "RealtimeCall", ("rtc_",),
               lists=False),
    # Stored chat completions (`store: true`); a create is every chat call, bound only if stored.
    Collection("/v1/chat/completions", "chat_completion", "ChatCompletion", ("chatcmpl-",)),
)
#: Where an id says what it is (`previous_response_id` is always a response's id).
KIND_OF_PREFIX = {p: c.kind for c in COLLECTIONS for p in c.ids}
BY_KIND = {c.kind: c for c in COLLECTIONS}
#: The longest prefixes first, so /v1/fine_tuning/jobs wins over shorter ones.
_ORDERED = sorted(COLLECTIONS, key=lambda c: -len(c.prefix))
_FIRST = tuple({c.prefix[:8] for c in COLLECTIONS})  # a cheap first test for every call
_EXACT = {c.prefix: c for c in COLLECTIONS}


@dataclass(frozen=True, slots=True)
class ObjectRoute:
    """What a request does to an object: create one, list them, or use `object_id`."""

    action: str  # "create" | "list" | "use"
    collection: Collection
    object_id: str | None = None

    @property
    def kind(self) -> str:
        return self.collection.kind

    def readable(self, store: bool | None) -> bool:
        """Can what this call creates be read back? (A chat completion only when
        stored, `store: true`; a response unless `store: false`.)"""
        if self.kind == "chat_completion":
            return store is True
        return not (self.kind == "response" and store is False)


_SLASHES = re.compile(r"/{2,}")


def object_route(method: str, path: str) -> ObjectRoute | None:
    """The object a request creates, lists or uses; None for every other call.

    Doubled slashes are read as one, as the upstream reads them, so
    `/v1//files/file-…` is checked like `/v1/files/file-…`.
    """
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if not path.startswith(_FIRST):
        return None
    bare = path.rstrip("/")
    c = _EXACT.get(bare)
    if c is not None:
        if method == "POST" and c.creates:
            return ObjectRoute("create", c)
        if method == "GET" and c.lists:
            return ObjectRoute("list", c)
        return None
    for c in _ORDERED:
        if bare.startswith(c.prefix + "/"):
            ident = bare[len(c.prefix) + 1:].split("/", 1)[0]
            if ident.startswith(c.ids) and OBJECT_ID.fullmatch(ident):
                return ObjectRoute("use", c, ident)
            return None
    return None
