"""The ownership steps of a REST call: check before forwarding, bind after, filter lists.

Before forwarding (`check`): the object in the path and every object the
body names must be the caller's tenant's — or, for an object faregate never
saw created, the caller must be allowed objects from outside faregate
(`[tenants.X] shared_objects = true`, or passthrough identity, where the
caller's own key is what the upstream checks). Anything else is a `Denial`:
404 in OpenAI's not-found shape, as if the object did not exist.

After the answer (`bind_created`, `after_answer`): an object the call
created belongs to the caller's tenant, and so do the files an owned
upload, batch or fine-tuning job produced. List answers keep only what the
caller may see (`visible`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import orjson

from faregate.storage import ObjectRecord

from .._runtime import Runtime
from ..caller import Caller
from ._owners import LookupFailed, Owners
from ._refs import mentions, references
from ._routes import BY_KIND, OBJECT_ID, ObjectRoute

#: Answers of these kinds name files that belong to the object's owner too.
DERIVED_FILES = {
    "upload": lambda body: [_dig(body, "file", "id")],
    "batch": lambda body: [body.get("output_file_id"), body.get("error_file_id")],
    "fine_tuning_job": lambda body: list(body.get("result_files") or [])[:64],
}
#: Answers kept (bounded) to read the ids they name.
KEEP_BYTES = 256 * 1024


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a call may not touch an object: the answer's status and OpenAI error fields."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"
    retry_after: str | None = None


def not_found(kind: str, ident: str, field: str | None) -> Denial:
    """The upstream's own answer for an object that does not exist."""
    if field == "previous_response_id":
        return Denial(404, f"Previous response with id '{ident}' not found.", field,
                      "previous_response_not_found")
    template = _NOT_FOUND.get(kind)
    if template is None:
        noun = BY_KIND[kind].noun if kind in BY_KIND else "object"
        template = f"No such {noun} object: {{}}"
    return Denial(404, template.format(ident), field or "id")


#: OpenAI's own wording where it is not "No such <Noun> object: <id>".
_NOT_FOUND = {
    "response": "Response with id '{}' not found.",
    "conversation": "Conversation with id '{}' not found.",
    "batch": "No batch found with id '{}'.",
    "vector_store": "No vector store found with id '{}'.",
    "container": "Container with id '{}' not found.",
    "fine_tuning_job": "Could not find fine-tuning job: {}",
}


UNREADABLE = Denial(400, "faregate cannot check the objects this request body names "
                         "(nested too deep or too many values).", None, "invalid_request_body")
UNANSWERED = Denial(503, "faregate cannot check who owns this object right now "
                         "(its ledger does not answer); try again shortly.", None,
                    "ledger_unavailable", "api_error", "5")


class Objects:
    """The REST edge's ownership steps, over `Owners`."""

    def __init__(self, owners: Owners, runtime: Callable[[], Runtime]) -> None:
        self.owners = owners
        self.runtime = runtime

    def unowned_ok(self, caller: Caller) -> bool:
        """May `caller` reach objects faregate never saw created?"""
        rt = self.runtime()
        if rt.settings.identity.mode == "passthrough":
            return True  # the caller's own key: the upstream decides what it may see
        tenant = rt.settings.tenants.get(caller.tenant)
        return tenant is not None and tenant.shared_objects

    async def check(self, route: ObjectRoute | None, caller: Caller, parsed: Any,
                    raw: bytes | None) -> Denial | None:
        """Before forwarding: may `caller` touch the object of the path and those the body names?"""
        wanted: list[tuple[str | None, str, str]] = []
        if route is not None and route.action == "use" and route.object_id:
            wanted.append((None, route.kind, route.object_id))
        if raw and parsed is not None and mentions(raw):
            refs, complete = references(parsed)
            if not complete:
                return UNREADABLE
            wanted.extend(refs)
        if not wanted:
            return None
        tenant = caller.tenant
        if all(self.owners.known(i) == tenant for _, _, i in wanted):
            return None  # the common case: the caller's own, known objects
        unowned_ok = self.unowned_ok(caller)
        try:
            owners = await self.owners.owners([i for _, _, i in wanted], again=not unowned_ok)
        except LookupFailed:
            return UNANSWERED
        for field, kind, ident in wanted:
            owner = owners.get(ident)
            if owner != tenant and not (owner is None and unowned_ok):
                return not_found(kind, ident, field)
        return None

    def bind_created(self, route: ObjectRoute | None, caller: Caller | None,
                     object_id: str | None, store: bool | None,
                     later: list[ObjectRecord] | None = None) -> None:
        """An answer names the object this call created: the caller's tenant owns it.
        `store`: the request's `store` field (stored chat completions, unstored
        responses); `later`: collects the ledger record (see `Owners.bind`)."""
        if route is None or route.action != "create" or caller is None or not object_id:
            return
        if not OBJECT_ID.fullmatch(object_id) or not object_id.startswith(route.collection.ids):
            return
        if route.readable(store):
            self.owners.bind(object_id, route.kind, caller, later)

    def after_answer(self, route: ObjectRoute | None, caller: Caller | None,
                     answer: bytes | None, store: bool | None,
                     location: str | None = None) -> None:
        """A successful answer to an object call: bind what it created or produced."""
        if route is None or caller is None:
            return
        body = _json(answer)
        if route.action == "create":
            object_id = body.get("id") if isinstance(body, dict) else None
            if route.kind == "realtime_call" and location:
                object_id = location.rstrip("/").rsplit("/", 1)[-1]
            self.bind_created(route, caller, object_id if isinstance(object_id, str) else None,
                              store)
        files = DERIVED_FILES.get(route.kind)
        if files is None or not isinstance(body, dict):
            return
        parent = body.get("id") if route.action == "create" else route.object_id
        if not isinstance(parent, str) or self.owners.known(parent) != caller.tenant:
            return  # only an object the caller owns passes its files on
        for file_id in files(body):
            if isinstance(file_id, str) and file_id.startswith(("file-", "file_")) \
                    and OBJECT_ID.fullmatch(file_id):
                self.owners.bind(file_id, "file", caller)

    def visible(self, caller: Caller, owners: dict[str, str], item: Any,
                unowned_ok: bool) -> bool:
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str):
            return unowned_ok
        owner = owners.get(ident)
        return owner == caller.tenant or (owner is None and unowned_ok)

    async def keep_own(self, caller: Caller, page: dict) -> tuple[dict, str | None]:
        """A list page with only what `caller` may see, and the upstream's last id on it
        (where the next page starts). Raises `LookupFailed` if the ledger cannot answer."""
        data = page.get("data")
        if not isinstance(data, list):
            return page, None
        ids = [item["id"] for item in data
               if isinstance(item, dict) and isinstance(item.get("id"), str)]
        owners = await self.owners.owners(ids)
        unowned_ok = self.unowned_ok(caller)
        kept = [item for item in data if self.visible(caller, owners, item, unowned_ok)]
        out = {**page, "data": kept}
        for key, item in (("first_id", kept[0] if kept else None),
                          ("last_id", kept[-1] if kept else None)):
            if key in page:
                out[key] = item.get("id") if isinstance(item, dict) else None
        return out, (ids[-1] if ids else None)


def _json(answer: bytes | None) -> Any:
    if not answer or len(answer) >= KEEP_BYTES:
        return None
    try:
        return orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
