"""The Batch API on the fake upstream: files, batches, and output files.

`FakeBatches(upstream)` adds `POST /v1/files`, `GET /v1/files[/{id}]`,
`POST /v1/batches`, `GET /v1/batches[/{id}]` and `GET /v1/files/{id}/content`
(whole, or one `Range: bytes=a-b` part answered 206) to a `FakeUpstream`.
Uploaded files are kept (purpose, bytes, content), so faregate can read a
batch's input file. A batch completes as soon as it is created; its output
file (purpose `batch_output`) has one line per `lines` entry:
`("ok", prompt, completion, cached)` for a successful chat completion with
that usage, `("error", ...)` for a 400 line, or raw bytes written as they
are (for malformed lines).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from aiohttp import web

OK = ("ok", 100, 20, 40)


class FakeBatches:
    def __init__(self, upstream) -> None:
        self.lines: list[Any] = [OK, OK, ("ok", 1000, 200, 0)]
        self.model = "gpt-4o-mini-2024-07-18"
        self.batches: dict[str, dict] = {}
        self.outputs: dict[str, bytes] = {}
        self.line_delay = 0.0  # seconds between output lines (to let a client leave mid-file)
        self.files: dict[str, dict] = {}  # file id -> file object (with its "content")
        self.upstream = upstream
        self._ids = itertools.count(1)
        upstream.add_route("POST", "/v1/files", self._upload, prefix=True)
        upstream.add_route("POST", "/v1/batches", self._create, prefix=True)
        upstream.add_route("GET", "/v1/batches", self._read, prefix=True)
        upstream.add_route("GET", "/v1/files", self._files, prefix=True)

    async def _upload(self, request: web.Request) -> web.Response:
        n = next(self._ids)
        form = self.upstream.last_request.form or {}
        upload = form.get("file")
        content = getattr(upload, "data", b"")
        meta = {"id": f"file-in{n:04d}", "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": getattr(upload, "filename", "in"),
                "purpose": form.get("purpose", "batch"), "status": "processed"}
        self.files[meta["id"]] = {**meta, "content": content}
        return web.json_response(meta)

    def _public(self, file_id: str) -> dict:
        return {k: v for k, v in self.files[file_id].items() if k != "content"}

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        n = next(self._ids)
        batch_id, out = f"batch_{n:04d}", f"file-out{n:04d}"
        self.outputs[out] = self.output(batch_id)
        self.files[out] = {"id": out, "object": "file", "bytes": len(self.outputs[out]),
                           "created_at": int(time.time()), "filename": "batch_output.jsonl",
                           "purpose": "batch_output", "status": "processed",
                           "content": self.outputs[out]}
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
            "input_file_id": body.get("input_file_id"), "completion_window": "24h",
            "status": "completed", "output_file_id": out, "error_file_id": None,
            "created_at": int(time.time()), "metadata": body.get("metadata"),
            "request_counts": {"total": len(self.lines), "completed": len(self.lines),
                               "failed": 0}}
        return web.json_response({**self.batches[batch_id], "status": "validating",
                                  "output_file_id": None})

    async def _read(self, request: web.Request) -> web.Response:
        batch_id = request.path.rstrip("/").removeprefix("/v1/batches").strip("/")
        if not batch_id:
            return web.json_response({"object": "list", "data": list(self.batches.values()),
                                      "has_more": False})
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "No such batch",
                                                "type": "invalid_request_error"}}, status=404)
        return web.json_response(self.batches[batch_id])

    async def _files(self, request: web.Request) -> web.StreamResponse:
        rest = request.path.rstrip("/").removeprefix("/v1/files").strip("/")
        if not rest:
            return web.json_response({"object": "list", "has_more": False,
                                      "data": [self._public(f) for f in self.files]})
        if rest.endswith("/content"):
            return await self._content(request, rest.removesuffix("/content"))
        if rest not in self.files:
            return web.json_response({"error": {"message": "No such File object",
                                                "type": "invalid_request_error"}}, status=404)
        return web.json_response(self._public(rest))

    async def _content(self, request: web.Request, file_id: str) -> web.StreamResponse:
        known = self.files.get(file_id)
        data = self.outputs.get(file_id)
        if data is None:
            data = known["content"] if known else b'{"note": "not a batch output"}\n'
        status, headers = 200, {"content-type": "application/octet-stream"}
        ask = request.headers.get("Range", "")
        if ask.startswith("bytes=") and "," not in ask:
            first, _, last = ask[6:].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(len(data) - 1, int(last)) if first and last else len(data) - 1
            headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data)
        await resp.prepare(request)
        if self.line_delay:
            for line in data.splitlines(keepends=True):
                await resp.write(line)
                await asyncio.sleep(self.line_delay)
        else:
            for i in range(0, len(data), 4096):  # in pieces, so lines straddle chunks
                await resp.write(data[i:i + 4096])
        await resp.write_eof()
        return resp

    def output(self, batch_id: str) -> bytes:
        out = []
        for i, spec in enumerate(self.lines):
            if isinstance(spec, bytes):
                out.append(spec)
                continue
            kind, prompt, completion, cached = spec
            line = {"id": f"batch_req_{batch_id}_{i}", "custom_id": f"req-{i}", "error": None}
            if kind == "ok":
                line["response"] = {"status_code": 200, "request_id": f"req_{i}", "body": {
                    "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1,
                    "model": self.model, "service_tier": "batch",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion,
                              "prompt_tokens_details": {"cached_tokens": cached}}}}
            else:
                line["response"] = {"status_code": 400, "request_id": f"req_{i}", "body": {
                    "error": {"message": "bad", "type": "invalid_request_error"}}}
            out.append(json.dumps(line).encode())
        return b"\n".join(out) + b"\n"
