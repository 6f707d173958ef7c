"""An in-process stand-in for api.openai.com, for tests.

`FakeUpstream` is a small aiohttp server that speaks enough of the OpenAI
REST API, with payloads shaped like the real ones, that the official `openai`
SDK parses every answer. Every answer is deterministic, so a test can work
out the usage (and so the cost) it should see without a tokenizer:

- chat/completions: prompt_tokens = words in all message texts + 7;
  completion_tokens = min(max_completion_tokens or max_tokens or 20, 20) * n;
  cached_tokens = prompt_tokens // 2 when user/safety_identifier/
  prompt_cache_key is "cache-hit", else 0.
- responses: input_tokens = words in instructions and input texts + 7, plus
  what the named `previous_response_id` or `conversation` carries (its input
  + output tokens, as the real API bills a continuation);
  output_tokens = min(max_output_tokens or 20, 20); same cache-hit rule. With the
  `image_generation` tool, `images_per_response` image_generation_call items (low,
  1024x1024); a stored prompt without `model` runs `prompt_models[prompt.id]`
  (default gpt-4o-mini). Background mode, polls, cancel and the WebSocket mode are
  in tests/fake_responses.py.
- embeddings: prompt_tokens = total_tokens = words in the inputs (for token
  arrays: number of tokens); `dimensions` floats each (default 1536).
- audio transcriptions/translations: whisper-1 -> duration usage with
  seconds = max(1, file_bytes // 16000); gpt-4o(-mini)-transcribe -> token
  usage with audio_tokens = max(1, file_bytes // 1000), text_tokens = words
  in `prompt`, output_tokens = words in the transcript (9).
- audio/speech: len(input) * 100 bytes of audio, no usage; with
  `stream_format: "sse"` the same audio as `speech.audio.delta` events, then
  `speech.audio.done` with usage input_tokens = words in input + 7,
  output_tokens = len(input) * SPEECH_AUDIO_TOKENS_PER_CHAR.
- images/generations: dall-e-* -> no usage; gpt-image-* -> text_tokens =
  words in prompt, output_tokens = n * IMAGE_OUTPUT_TOKENS[size][quality].

Tests steer it through attributes: `usage` (per-path overrides merged into
the computed usage; None drops usage; a reported output never passes the
request's own cap, as the real API's, unless `honours_caps` is False: an
upstream misbehaving), `fail_next`, `delay_s`,
`chunk_delay_s`, `valid_keys`, `embedding_dim`, `gate` (an asyncio.Event
every call waits for once recorded, so a test can look at faregate while
calls are in flight), `gather` (hold each request until that many are in
flight at once, at most 5 s); and read `requests`, `peak_in_flight` and
`stored` (every response made, with the key that made it). The object
endpoints (files, uploads, batches, vector stores, containers, fine-tuning
jobs, conversations, stored responses, Realtime calls) are in
tests/fake_objects.py.

Azure OpenAI mode (`FakeUpstream(azure_deployments={"my-mini": "gpt-4o-mini"})`):
the v1 API under `/openai/v1/...`, the key in the `api-key` header (a bearer
token is refused), the body's `model` naming a deployment (an unknown one is
404 DeploymentNotFound), answers naming the deployed model, as Azure does.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.multipart import MultipartReader
from aiohttp.streams import StreamReader

# Dated snapshot the API reports for an alias; other models are echoed as sent.
SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "o3-mini": "o3-mini-2025-01-31",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
}
PROMPT_OVERHEAD = 7
MAX_COMPLETION = 20
SPEECH_BYTES_PER_CHAR = 100
SPEECH_AUDIO_TOKENS_PER_CHAR = 3
WHISPER_BYTES_PER_SECOND = 16000
AUDIO_BYTES_PER_TOKEN = 1000
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
# gpt-image-1 output tokens per image, by size and quality ("auto" = medium).
IMAGE_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "1024x1024": {"low": 272, "medium": 1056, "high": 4160},
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 400, "medium": 1568, "high": 6208},
}
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
    "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm",
}


def openai_error(message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> dict:
    """An error body in the shape the OpenAI API sends."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake received it."""
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any = None  # parsed body when it was JSON
    form: dict[str, Any] | None = None  # multipart fields; files as UploadedFile

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return (auth[7:].strip() or None) if auth.startswith("Bearer ") else None

    @property
    def azure_key(self) -> str | None:
        return self.headers.get("api-key") or None


def words(value: Any) -> int:
    """Whitespace-separated words in every text found in a request fragment."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        return sum(words(value.get(k)) for k in ("content", "text", "output") if k in value)
    return 0


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _pieces(text: str, n: int) -> list[str]:
    return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\x10\x80\xf0")) + chunk(b"IEND", b""))


PNG_B64 = base64.b64encode(_tiny_png()).decode()


class FakeUpstream:
    """A fake OpenAI API on 127.0.0.1; use `async with FakeUpstream() as fake`."""

    def __init__(self, *, embedding_dim: int = 1536, stream_chunks: int = 5,
                 azure_deployments: dict[str, str] | None = None) -> None:
        self.azure_deployments = azure_deployments  # deployment -> model; None: OpenAI
        self.requests: list[RecordedRequest] = []
        self.usage: dict[str, dict | None] = {}  # path -> override merged into usage
        self.honours_caps = True  # False: overrides may report more output than the cap
        self.fail_next: list[tuple] = []  # (status, body[, headers]) per next call
        self.delay_s = 0.0
        self.chunk_delay_s = 0.0
        self.gate: asyncio.Event | None = None  # calls wait for it once recorded
        self.valid_keys: set[str] | None = None  # None: any non-empty key works
        self.embedding_dim = embedding_dim
        self.stream_chunks = stream_chunks
        self.images_per_response = 1  # image_generation_call items per Responses call with the tool
        self.prompt_models: dict[str, str] = {}  # stored prompt id -> the model it runs
        #: response id -> (api key, response object) of every response made (store on),
        #: kept only with `keep_responses` (tests/fake_objects.py sets it)
        self.stored: dict[str, tuple[str | None, dict]] = {}
        self.keep_responses = False
        #: checks a request's object references first (tests/fake_objects.py)
        self.check_refs: Any = None
        self._ids = itertools.count(1)
        self.carried: dict[str, int] = {}  # response or conversation id -> tokens it carries
        self.gather = 0
        self.in_flight = self.peak_in_flight = 0
        self._gathered = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._prefix_routes: list[tuple[str, str, Any]] = []
        self._routes = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/audio/transcriptions"): self._transcribe,
            ("POST", "/v1/audio/translations"): self._transcribe,
            ("POST", "/v1/audio/speech"): self._speech,
            ("POST", "/v1/images/generations"): self._images,
            ("GET", "/v1/models"): self._models,
        }

    def add_route(self, method: str, path: str, handler, *, prefix: bool = False) -> None:
        """Serve `method path` with `handler(request)` (e.g. FakeSessions.realtime).

        With `prefix`, every path starting with `path` goes to the handler, and
        no `model` is required in a POST body (files, batches).
        """
        if prefix:
            self._prefix_routes.append((method, path, handler))
        else:
            self._routes[(method, path)] = lambda request, _params: handler(request)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    # -- plumbing ------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}fake"

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-processing-ms": str(int(self.delay_s * 1000) + 12),
            "openai-version": "2020-10-01",
            "openai-organization": "user-fake",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
        }
        headers.update(extra or {})
        return headers

    def _json(self, body: Any, status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                            headers=self._headers(extra))

    def _usage(self, path: str, computed: dict, cap: int | None = None) -> dict | None:
        if path not in self.usage:
            return computed
        override = self.usage[path]
        if override is None:
            return None
        merged = _merge(computed, override)
        for key in ("completion_tokens", "output_tokens"):  # the upstream honours a cap
            if cap and self.honours_caps and isinstance(merged.get(key), int) \
                    and merged[key] > cap:
                merged[key] = cap
        if "total_tokens" in computed and "total_tokens" not in override:
            if "prompt_tokens" in merged:
                merged["total_tokens"] = merged["prompt_tokens"] + merged.get("completion_tokens", 0)
            else:
                merged["total_tokens"] = merged["input_tokens"] + merged["output_tokens"]
        return merged

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        rec = RecordedRequest(request.method, request.path, dict(request.query),
                              {k.lower(): v for k, v in request.headers.items()}, body)
        if request.content_type == "application/json" and body:
            try:
                rec.json = json.loads(body)
            except ValueError:
                pass
        elif request.content_type == "multipart/form-data":
            rec.form = await self._parse_multipart(request, body)
        return rec

    @staticmethod
    async def _parse_multipart(request: web.Request, body: bytes) -> dict[str, Any]:
        # The body is already read (to record it), so feed it to a fresh stream
        # large enough that the reader never asks the transport to pause.
        stream = StreamReader(request.protocol, limit=max(2 ** 16, len(body) + 1))
        stream.feed_data(body)
        stream.feed_eof()
        form: dict[str, Any] = {}
        reader = MultipartReader(request.headers, stream)
        while (part := await reader.next()) is not None:
            data = await part.read(decode=True)
            if part.filename:
                value: Any = UploadedFile(part.filename, part.headers.get("Content-Type", ""), bytes(data))
            else:
                value = data.decode(part.get_charset("utf-8"))
            if part.name in form:  # repeated fields such as include[]
                prior = form[part.name]
                form[part.name] = (prior if isinstance(prior, list) else [prior]) + [value]
            else:
                form[part.name] = value
        return form

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._receive(request)
        finally:
            self.in_flight -= 1

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        self.requests.append(rec)
        if self.gather:
            if self.in_flight >= self.gather:
                self._gathered.set()
            try:
                await asyncio.wait_for(self._gathered.wait(), 5)
            except (TimeoutError, asyncio.TimeoutError):
                pass
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()
        if self.azure_deployments is not None:
            return await self._azure(request, rec)
        if not rec.path.startswith("/v1/"):
            return self._json(openai_error(f"Invalid URL ({rec.method} {rec.path})"), 404)
        return await self._serve(request, rec, rec.path, rec.api_key)

    async def _azure(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        """Azure OpenAI's v1 API: `/openai/v1/...`, `api-key`, deployments for models."""
        if not rec.path.startswith("/openai/v1/"):
            return self._json({"error": {"code": "404", "message": "Resource not found"}}, 404)
        if not rec.azure_key:
            return self._json({"error": {"code": "401", "message": (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.")}}, 401)
        params = rec.form if rec.form is not None else rec.json
        if rec.method == "POST" and isinstance(params, dict) and params.get("model"):
            deployed = self.azure_deployments.get(params["model"])
            if deployed is None:
                return self._json({"error": {"code": "DeploymentNotFound", "message": (
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try "
                    "again.")}}, 404)
            params["model"] = deployed
        return await self._serve(request, rec, rec.path[len("/openai"):], rec.azure_key)

    async def _serve(self, request: web.Request, rec: RecordedRequest, path: str,
                     key: str | None) -> web.StreamResponse:
        if not key:
            return self._json(openai_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."), 401)
        if self.valid_keys is not None and key not in self.valid_keys:
            return self._json(openai_error(
                f"Incorrect API key provided: {key[:3]}*****{key[-4:]}.", code="invalid_api_key"), 401)
        if self.fail_next:
            status, body, *extra = self.fail_next.pop(0)
            return self._json(body, status, extra[0] if extra else None)
        for method, prefix, routed in self._prefix_routes:
            if rec.method == method and path.startswith(prefix):
                return await routed(request)
        handler = self._routes.get((rec.method, path))
        if handler is None:
            return self._json(openai_error(f"Invalid URL ({rec.method} {rec.path})"), 404)
        params = rec.form if rec.form is not None else rec.json
        if self.check_refs is not None:
            refused = self.check_refs(rec)
            if refused is not None:
                return refused
        if rec.method == "POST":
            if not isinstance(params, dict):
                return self._json(openai_error("We could not parse the JSON body of your request."), 400)
            stored_prompt = rec.path == "/v1/responses" and isinstance(params.get("prompt"), dict)
            if not params.get("model") and not stored_prompt:
                return self._json(openai_error("you must provide a model parameter", param="model"), 400)
        return await handler(request, params or {})

    async def _sse(self, request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers=self._headers({
            "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}))
        try:
            await resp.prepare(request)
            for i, (event, data) in enumerate(events):
                if i and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                payload = data if isinstance(data, str) else json.dumps(data)
                head = f"event: {event}\n" if event else ""
                await resp.write(f"{head}data: {payload}\n\n".encode())
            await resp.write_eof()
        except ConnectionResetError:  # the client went away mid-stream
            pass
        return resp

    # -- endpoints -----------------------------------------------------------

    async def _chat(self, request: web.Request, p: dict) -> web.StreamResponse:
        messages = p.get("messages") or []
        n = int(p.get("n") or 1)
        limit = p.get("max_completion_tokens") or p.get("max_tokens") or MAX_COMPLETION
        per_choice = min(limit, MAX_COMPLETION)
        finish = "length" if limit < MAX_COMPLETION else "stop"
        prompt = words(messages) + PROMPT_OVERHEAD
        cache_hit = "cache-hit" in (p.get("user"), p.get("safety_identifier"), p.get("prompt_cache_key"))
        usage = self._usage(request.path, {
            "prompt_tokens": prompt,
            "completion_tokens": per_choice * n,
            "total_tokens": prompt + per_choice * n,
            "prompt_tokens_details": {"cached_tokens": prompt // 2 if cache_hit else 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }, (p.get("max_completion_tokens") or p.get("max_tokens") or 0) * n)
        text = f"Echo: your last message was {len(_last_user_text(messages))} characters long."
        base = {"id": self._next_id("chatcmpl-"), "created": int(time.time()),
                "model": SNAPSHOTS.get(p["model"], p["model"]), "service_tier": "default",
                "system_fingerprint": "fp_fake00001"}
        if not p.get("stream"):
            choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None,
                                                "annotations": []},
                        "logprobs": None, "finish_reason": finish} for i in range(n)]
            body = {**base, "object": "chat.completion", "choices": choices}
            if usage is not None:
                body["usage"] = usage
            return self._json(body)
        options = p.get("stream_options") or {}
        with_usage = bool(options.get("include_usage"))

        def chunk(choices: list[dict]) -> dict:
            c = {**base, "object": "chat.completion.chunk", "choices": choices}
            if with_usage:
                c["usage"] = None
            if options.get("include_obfuscation", True):
                c["obfuscation"] = "x" * (len(json.dumps(choices)) % 7 + 1)
            return c

        def choice(i: int, delta: dict, reason: str | None = None) -> dict:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}

        events: list[tuple[str | None, Any]] = []
        for i in range(n):
            events.append((None, chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})])))
        for piece in _pieces(text, self.stream_chunks):
            events.extend((None, chunk([choice(i, {"content": piece})])) for i in range(n))
        events.extend((None, chunk([choice(i, {}, finish)])) for i in range(n))
        if with_usage and usage is not None:
            final = chunk([])
            final["usage"] = usage
            events.append((None, final))
        events.append((None, "[DONE]"))
        return await self._sse(request, events)

    async def _responses(self, request: web.Request, p: dict) -> web.StreamResponse:
        response, events = self.response_parts(request.path, p)
        self.keep(request, p, response)
        if not p.get("stream"):
            return self._json(response)
        return await self._sse(request, [(e["type"], e) for e in events])

    def keep(self, request: web.Request, p: dict, response: dict) -> None:
        """With `keep_responses`: the response made, and the key that made it."""
        if self.keep_responses and p.get("store") is not False:
            self.stored[response["id"]] = (request.headers.get("Authorization", "")[7:] or None,
                                           response)

    def response_parts(self, path: str, p: dict) -> tuple[dict, list[dict]]:
        """A Responses API answer to `p`: the final response object and its stream events
        (with sequence numbers)."""
        items = p.get("input") or []
        prompt = words(items) + words(p.get("instructions")) + PROMPT_OVERHEAD
        conversation = p.get("conversation")
        conversation = conversation.get("id") if isinstance(conversation, dict) else conversation
        prompt += max(self.carried.get(p.get("previous_response_id") or "", 0),
                      self.carried.get(conversation or "", 0))
        output = min(p.get("max_output_tokens") or MAX_COMPLETION, MAX_COMPLETION)
        cache_hit = "cache-hit" in (p.get("user"), p.get("safety_identifier"), p.get("prompt_cache_key"))
        usage = self._usage(path, {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": prompt // 2 if cache_hit else 0, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        }, p.get("max_output_tokens"))
        text = f"Echo: your last message was {len(_last_user_text(items))} characters long."
        msg_id = self._next_id("msg_")
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        message = {"id": msg_id, "type": "message", "status": "completed", "role": "assistant",
                   "content": [part]}
        created = int(time.time())
        model = p.get("model") or self.prompt_models.get((p.get("prompt") or {}).get("id"), "gpt-4o-mini")
        images = [{"id": self._next_id("ig_"), "type": "image_generation_call", "status": "completed",
                   "quality": "low", "size": "1024x1024", "result": PNG_B64}
                  for tool in (p.get("tools") or []) if tool.get("type") == "image_generation"
                  for _ in range(self.images_per_response)]
        rid = self._next_id("resp_")
        if usage is not None:  # what a continuation of this response, or its conversation, carries
            self.carried[rid] = usage["input_tokens"] + usage["output_tokens"]
            if conversation:
                self.carried[conversation] = self.carried[rid]
        response = {
            "id": rid, "object": "response", "created_at": created,
            "status": "completed", "background": bool(p.get("background")), "error": None,
            "incomplete_details": None,
            "instructions": p.get("instructions"), "max_output_tokens": p.get("max_output_tokens"),
            "model": SNAPSHOTS.get(model, model), "output": [*images, message],
            "parallel_tool_calls": True, "previous_response_id": p.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto", "tools": p.get("tools") or [], "top_p": 1.0, "truncation": "disabled",
            "usage": usage, "user": p.get("user"), "metadata": p.get("metadata") or {},
            "completed_at": created,
        }
        pending = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
        where = {"item_id": msg_id, "output_index": len(images), "content_index": 0}
        events: list[dict] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
            *({"type": "response.output_item.done", "output_index": i, "item": item}
              for i, item in enumerate(images)),
            {"type": "response.output_item.added", "output_index": len(images),
             "item": {**message, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        ]
        events += [{"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
                   for piece in _pieces(text, self.stream_chunks)]
        events += [
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": len(images), "item": message},
            {"type": "response.completed", "response": response},
        ]
        return response, [{**e, "sequence_number": i} for i, e in enumerate(events)]

    async def _embeddings(self, request: web.Request, p: dict) -> web.StreamResponse:
        raw = p.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            inputs = [raw]
        else:
            inputs = list(raw or [])
        tokens = sum(len(x) if isinstance(x, list) else words(x) for x in inputs)
        dim = int(p.get("dimensions") or self.embedding_dim)
        as_b64 = p.get("encoding_format") == "base64"
        data = []
        for index in range(len(inputs)):
            # Multiples of 1/16 survive float32, so float and base64 agree exactly.
            vector = [((j * 31 + index * 7) % 17 - 8) / 16 for j in range(dim)]
            encoded: Any = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_b64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        body: dict[str, Any] = {"object": "list", "data": data, "model": p["model"]}
        usage = self._usage(request.path, {"prompt_tokens": tokens, "total_tokens": tokens})
        if usage is not None:
            body["usage"] = usage
        return self._json(body)

    async def _transcribe(self, request: web.Request, p: dict) -> web.StreamResponse:
        upload = p.get("file")
        if not isinstance(upload, UploadedFile):
            return self._json(openai_error("you must provide a file parameter", param="file"), 400)
        size = len(upload.data)
        fmt = p.get("response_format") or "json"
        if fmt in ("text", "srt", "vtt"):
            return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain", headers=self._headers())
        if p["model"].startswith("whisper"):
            seconds = max(1, size // WHISPER_BYTES_PER_SECOND)
            computed: dict[str, Any] = {"type": "duration", "seconds": seconds}
        else:
            audio, text_tokens, out = max(1, size // AUDIO_BYTES_PER_TOKEN), words(p.get("prompt")), words(TRANSCRIPT)
            computed = {"type": "tokens", "input_tokens": audio + text_tokens,
                        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio},
                        "output_tokens": out, "total_tokens": audio + text_tokens + out}
        body: dict[str, Any] = {"text": TRANSCRIPT}
        if fmt == "verbose_json":
            seconds = max(1, size // WHISPER_BYTES_PER_SECOND)
            body = {"task": "translate" if request.path.endswith("translations") else "transcribe",
                    "language": "english", "duration": float(seconds), "text": TRANSCRIPT,
                    "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": float(seconds), "text": TRANSCRIPT,
                                  "tokens": [440, 2068, 7600], "temperature": 0.0, "avg_logprob": -0.2,
                                  "compression_ratio": 0.9, "no_speech_prob": 0.01}]}
        usage = self._usage(request.path, computed)
        if usage is not None:
            body["usage"] = usage
        return self._json(body)

    async def _speech(self, request: web.Request, p: dict) -> web.StreamResponse:
        length = len(p.get("input") or "") * SPEECH_BYTES_PER_CHAR
        audio = (b"ID3" + bytes((i * 7) % 256 for i in range(max(length - 3, 0))))[:length]
        if p.get("stream_format") == "sse":
            return await self._speech_sse(request, p, audio)
        kind = SPEECH_CONTENT_TYPES.get(p.get("response_format") or "mp3", "audio/mpeg")
        return web.Response(body=audio, content_type=kind, headers=self._headers())

    async def _speech_sse(self, request: web.Request, p: dict, audio: bytes) -> web.StreamResponse:
        text = p.get("input") or ""
        computed = {"input_tokens": words(text) + PROMPT_OVERHEAD,
                    "output_tokens": len(text) * SPEECH_AUDIO_TOKENS_PER_CHAR}
        computed["total_tokens"] = computed["input_tokens"] + computed["output_tokens"]
        events: list[tuple[str | None, Any]] = [
            (None, {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
            for piece in _pieces(audio, self.stream_chunks) if piece
        ]
        done: dict[str, Any] = {"type": "speech.audio.done"}
        usage = self._usage(request.path, computed)
        if usage is not None:
            done["usage"] = usage
        return await self._sse(request, events + [(None, done)])

    async def _images(self, request: web.Request, p: dict) -> web.StreamResponse:
        model, n = p["model"], int(p.get("n") or 1)
        body: dict[str, Any] = {"created": int(time.time())}
        if model.startswith("gpt-image"):
            size = p.get("size") if p.get("size") in IMAGE_OUTPUT_TOKENS else "1024x1024"
            quality = p.get("quality") if p.get("quality") in ("low", "medium", "high") else "medium"
            out, text_tokens = n * IMAGE_OUTPUT_TOKENS[size][quality], words(p.get("prompt"))
            body.update(background="opaque", output_format=p.get("output_format") or "png",
                        quality=quality, size=size, data=[{"b64_json": PNG_B64} for _ in range(n)])
            usage = self._usage(request.path, {
                "input_tokens": text_tokens, "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                "output_tokens": out, "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
                "total_tokens": text_tokens + out})
            if usage is not None:
                body["usage"] = usage
        else:
            as_b64 = p.get("response_format") == "b64_json"
            data = []
            for _ in range(n):
                image: dict[str, Any] = ({"b64_json": PNG_B64} if as_b64 else
                                         {"url": f"https://fake-upstream.invalid/{self._next_id('img-')}.png"})
                if model == "dall-e-3":
                    image["revised_prompt"] = p.get("prompt", "")
                data.append(image)
            body["data"] = data
        return self._json(body)

    async def _models(self, request: web.Request, p: dict) -> web.StreamResponse:
        ids = sorted({*SNAPSHOTS, *SNAPSHOTS.values(), "text-embedding-3-small", "text-embedding-3-large",
                      "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "tts-1", "gpt-4o-mini-tts",
                      "dall-e-2", "dall-e-3", "gpt-image-1"})
        return self._json({"object": "list", "data": [
            {"id": i, "object": "model", "created": 1700000000, "owned_by": "system"} for i in ids]})
