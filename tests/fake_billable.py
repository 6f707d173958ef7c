"""Billable objects on the fake upstream: fine-tuning jobs, containers, vector stores,
uploads and WebRTC calls.

`FakeBillable(upstream)` answers `POST` (create), `GET` (retrieve or list) and
`DELETE` under each prefix in `KINDS` with objects shaped like the real ones
(an id with the API's prefix, `object`, `created_at`, the request's fields).
`POST /v1/realtime/calls` answers an SDP body, as the real endpoint does.
`created` lists every object made, so a test can tell what reached the
upstream.
"""

from __future__ import annotations

import itertools
import time

from aiohttp import web

#: path prefix -> (id prefix, object name)
KINDS = {
    "/v1/fine_tuning/jobs": ("ftjob-", "fine_tuning.job"),
    "/v1/containers": ("cntr_", "container"),
    "/v1/vector_stores": ("vs_", "vector_store"),
    "/v1/uploads": ("upload_", "upload"),
    "/v1/realtime/calls": ("rtc_", "realtime.call"),
}
SDP_ANSWER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class FakeBillable:
    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.created: list[dict] = []
        self._ids = itertools.count(1)
        for prefix in KINDS:
            for method in ("POST", "GET", "DELETE"):
                upstream.add_route(method, prefix, self._handle, prefix=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        prefix = next(p for p in KINDS if request.path.startswith(p))
        id_prefix, name = KINDS[prefix]
        rest = request.path.removeprefix(prefix).strip("/")
        if request.method == "GET" and not rest:
            return web.json_response({"object": "list", "has_more": False,
                                      "data": [o for o in self.created if o["object"] == name]})
        if request.method == "DELETE":
            return web.json_response({"id": rest, "object": f"{name}.deleted", "deleted": True})
        if request.method == "GET":
            found = [o for o in self.created if o["id"] == rest.split("/")[0]]
            return web.json_response(found[0] if found else {"error": {
                "message": "not found", "type": "invalid_request_error"}},
                status=200 if found else 404)
        fields = self.upstream.last_request.json or {}
        obj = {**(fields if isinstance(fields, dict) else {}),
               "id": f"{id_prefix}{next(self._ids):06d}", "object": name,
               "created_at": int(time.time()), "status": "created", "path": request.path}
        self.created.append(obj)
        if prefix == "/v1/realtime/calls" and not rest:
            return web.Response(text=SDP_ANSWER, content_type="application/sdp",
                                headers={"location": f"/v1/realtime/calls/{obj['id']}"})
        return web.json_response(obj)
