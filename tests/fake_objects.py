"""The object endpoints on the fake upstream, each object kept in its key's project.

`FakeObjects(upstream, projects={"sk-a": "proj_a", ...})` adds files,
uploads, batches, vector stores, containers, fine-tuning jobs,
conversations, stored responses (`GET /v1/responses/{id}`, made by the
fake's own `POST /v1/responses`) and Realtime calls to a `FakeUpstream`.
Like OpenAI, an object belongs to the project of the key that made it:
another project's key gets 404 for it, its lists leave it out, and a
request naming it (`previous_response_id`, `file_id`, `input_file_id`,
`vector_store_ids`, …) is refused. A key missing from `projects` is its own
project; with one shared key every tenant shares one project — exactly the
case faregate must isolate by itself. Lists page like OpenAI's (`limit`,
`after`; `first_id`, `last_id`, `has_more`). `make(kind, key)` creates an
object directly at the upstream (as if made outside faregate).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from fake_upstream import RecordedRequest, openai_error

PREFIX = {"file": "file-", "upload": "upload_", "batch": "batch_", "vector_store": "vs_",
          "container": "cntr_", "fine_tuning_job": "ftjob-", "conversation": "conv_",
          "realtime_call": "rtc_"}
OBJECT = {"file": "file", "upload": "upload", "batch": "batch", "vector_store": "vector_store",
          "container": "container", "fine_tuning_job": "fine_tuning.job",
          "conversation": "conversation", "realtime_call": "realtime.call"}
REF_FIELDS = ("previous_response_id", "conversation", "file_id", "input_file_id",
              "training_file", "validation_file", "file_ids", "vector_store_ids", "container")


def _refs(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in REF_FIELDS:
                if isinstance(v, str):
                    out.append(v)
                elif isinstance(v, dict) and isinstance(v.get("id"), str):
                    out.append(v["id"])
                elif isinstance(v, list):
                    out.extend(x for x in v if isinstance(x, str))
            _refs(v, out)
    elif isinstance(value, list):
        for v in value:
            _refs(v, out)
    return out


class FakeObjects:
    def __init__(self, upstream, projects: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.projects = projects or {}
        self.objects: dict[str, tuple[str, dict]] = {}  # id -> (project, object)
        self._ids = itertools.count(1)
        upstream.check_refs = self._check_request
        upstream.keep_responses = True
        for method in ("GET", "POST", "DELETE"):
            for prefix in ("/v1/files", "/v1/uploads", "/v1/batches", "/v1/vector_stores",
                           "/v1/containers", "/v1/fine_tuning/jobs", "/v1/conversations",
                           "/v1/realtime/calls"):
                upstream.add_route(method, prefix, self._handle, prefix=True)
        upstream.add_route("GET", "/v1/responses/", self._response, prefix=True)

    # -- plumbing ----------------------------------------------------------------

    def project(self, key: str | None) -> str:
        return self.projects.get(key or "", key or "")

    def make(self, kind: str, key: str, **fields: Any) -> dict:
        """Create an object straight at the upstream (outside faregate)."""
        n = next(self._ids)
        obj = {"id": f"{PREFIX[kind]}{n:04d}fake", "object": OBJECT[kind],
               "created_at": int(time.time()) + n, **fields}
        self.objects[obj["id"]] = (self.project(key), obj)
        return obj

    def visible(self, ident: str, key: str | None) -> dict | None:
        hit = self.objects.get(ident)
        if hit is not None and hit[0] == self.project(key):
            return hit[1]
        stored = self.upstream.stored.get(ident)
        if stored is not None and self.project(stored[0]) == self.project(key):
            return stored[1]
        return None

    def _missing(self, ident: str, param: str | None = "id") -> web.Response:
        return web.json_response(openai_error(f"No such object: {ident}", param=param),
                                 status=404)

    def _check(self, body: Any, key: str | None) -> web.Response | None:
        for ident in _refs(body, []):
            if self.visible(ident, key) is None:
                return self._missing(ident, None)
        return None

    def _check_request(self, rec: RecordedRequest) -> web.Response | None:
        """The fake's own endpoints (responses, chat) refuse another project's objects."""
        if rec.method == "POST" and isinstance(rec.json, dict):
            return self._check(rec.json, rec.api_key)
        return None

    # -- endpoints -----------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.Response:
        rec: RecordedRequest = self.upstream.requests[-1]
        ident = request.path.removeprefix("/v1/responses/").split("/")[0]
        found = self.visible(ident, rec.api_key)
        return web.json_response(found) if found else self._missing(ident)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec: RecordedRequest = self.upstream.requests[-1]
        key = rec.api_key
        path = rec.path.rstrip("/")
        for kind, prefix in (("fine_tuning_job", "/v1/fine_tuning/jobs"),
                             ("file", "/v1/files"), ("upload", "/v1/uploads"),
                             ("batch", "/v1/batches"), ("vector_store", "/v1/vector_stores"),
                             ("container", "/v1/containers"),
                             ("conversation", "/v1/conversations"),
                             ("realtime_call", "/v1/realtime/calls")):
            if path == prefix:
                if rec.method == "POST":
                    return self._create(kind, rec)
                return self._list(kind, rec)
            if path.startswith(prefix + "/"):
                ident, _, rest = path[len(prefix) + 1:].partition("/")
                obj = self.visible(ident, key)
                if obj is None:
                    return self._missing(ident)
                return await self._use(kind, obj, rest, rec, request)
        return web.json_response(openai_error("Invalid URL"), status=404)

    def _create(self, kind: str, rec: RecordedRequest) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        refused = self._check(body, rec.api_key)
        if refused is not None:
            return refused
        if kind == "realtime_call":
            call = self.make("realtime_call", rec.api_key or "")
            return web.Response(status=201, text="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
                                content_type="application/sdp",
                                headers={"Location": f"/v1/realtime/calls/{call['id']}"})
        fields: dict[str, Any] = {}
        if kind == "file":
            fields = {"purpose": (rec.form or {}).get("purpose", "assistants"),
                      "filename": "upload.jsonl", "bytes": len(rec.body)}
        elif kind == "batch":
            out = self.make("file", rec.api_key or "", purpose="batch_output")
            fields = {"input_file_id": body.get("input_file_id"), "status": "completed",
                      "endpoint": body.get("endpoint"), "output_file_id": out["id"],
                      "error_file_id": None}
        elif kind == "fine_tuning_job":
            result = self.make("file", rec.api_key or "", purpose="fine-tune-results")
            fields = {"training_file": body.get("training_file"), "status": "succeeded",
                      "model": body.get("model"), "result_files": [result["id"]]}
        elif kind in ("vector_store", "container"):
            fields = {"name": body.get("name"), "file_ids": body.get("file_ids") or []}
        elif kind == "upload":
            fields = {"filename": body.get("filename"), "status": "pending"}
        return web.json_response(self.make(kind, rec.api_key or "", **fields))

    def _list(self, kind: str, rec: RecordedRequest) -> web.Response:
        project = self.project(rec.api_key)
        items = [o for p, o in self.objects.values()
                 if p == project and o["object"] == OBJECT[kind]]
        items.sort(key=lambda o: o["id"])
        after = rec.query.get("after")
        if after:
            items = [o for o in items if o["id"] > after]
        limit = int(rec.query.get("limit", "20"))
        page = items[:limit]
        return web.json_response({
            "object": "list", "data": page, "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None})

    async def _use(self, kind: str, obj: dict, rest: str, rec: RecordedRequest,
                   request: web.Request) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        refused = self._check(body, rec.api_key)
        if refused is not None:
            return refused
        if kind == "file" and rest == "content":
            return web.Response(body=json.dumps({"file": obj["id"]}).encode() + b"\n",
                                content_type="application/octet-stream")
        if kind == "upload" and rest == "complete":
            made = self.make("file", rec.api_key or "", purpose=obj.get("purpose", "batch"))
            return web.json_response({**obj, "status": "completed", "file": made})
        if kind == "conversation" and rest == "items":
            return web.json_response({"object": "list", "data": body.get("items") or [],
                                      "has_more": False})
        if kind == "vector_store" and rest == "search":
            return web.json_response({"object": "vector_store.search_results.page",
                                      "data": [], "has_more": False})
        if kind == "realtime_call":
            return web.Response(status=200)
        if rec.method == "DELETE":
            return web.json_response({"id": obj["id"], "object": obj["object"],
                                      "deleted": True})
        return web.json_response(obj)
