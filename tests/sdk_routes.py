"""Every REST route the installed `openai` SDK can call, found by calling it.

Each public method of each resource of an `openai.OpenAI` client is called
once with placeholder arguments over a transport that records the request
and answers 500 (so nothing retries, loops or polls). The recorded method
and path, with the placeholders put back as `{name}`, is the route. Helpers
that only poll or stream other methods (`create_and_poll`, `stream`, …) are
skipped; their requests are the routes of the methods they wrap.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass

import openai
from openai._resource import SyncAPIResource

try:  # the SDK's HTTP client package (httpx, or its fork httpx2 in newer SDKs)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

SKIP = {"with_raw_response", "with_streaming_response", "connect", "poll", "create_and_poll",
        "upload_and_poll", "stream", "create_and_stream", "create_and_run_poll",
        "submit_tool_outputs_and_poll", "upload_file_chunked", "wait_for_processing", "unwrap",
        "verify_signature", "parse", "create_and_run_stream", "submit_tool_outputs_stream"}
#: WebSocket sessions the SDK opens (`connect()` methods), by the path they upgrade.
WEBSOCKETS = ("/v1/realtime", "/v1/realtime/translations", "/v1/responses",
              "/v1/live/sessions", "/v1/live/sessions/{session_id}/attach")


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. "/v1/responses/{response_id}"
    call: str  # e.g. "responses.retrieve"

    def path(self) -> str:
        """The template with placeholder ids (what a request to it looks like)."""
        out = self.template
        while "{" in out:
            start, end = out.index("{"), out.index("}")
            out = out[:start] + "x_" + out[start + 1:end] + out[end + 1:]
        return out


def _placeholder(name: str, param: inspect.Parameter) -> object:
    ann = str(param.annotation)
    if "FileTypes" in ann or name in ("file", "image", "audio"):
        return b"data"
    if "int" in ann and "str" not in ann:
        return 1
    if "bool" in ann:
        return True
    if "Iterable" in ann or "List" in ann or "SequenceNotStr" in ann:
        return []
    if name.endswith("_id") or "str" in ann:
        return "x_" + name
    if "Dict" in ann or "Mapping" in ann or "Param" in ann:
        return {}
    return "x_" + name


def _methods(resource: SyncAPIResource, path: list[str], out: list, depth: int = 0) -> None:
    for name in dir(type(resource)):
        if name.startswith("_") or name in SKIP:
            continue
        attr = getattr(type(resource), name, None)
        if isinstance(attr, property) or type(attr).__name__ == "cached_property":
            sub = getattr(resource, name)
            if isinstance(sub, SyncAPIResource) and depth < 6:
                _methods(sub, path + [name], out, depth + 1)
        elif callable(attr):
            out.append((".".join(path + [name]), getattr(resource, name)))


@functools.lru_cache(maxsize=1)
def sdk_routes() -> tuple[Route, ...]:
    seen: list[tuple[str, str]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode().split("?", 1)[0]))
        return httpx.Response(500, json={"error": {"message": "recorded"}})

    client = openai.OpenAI(api_key="sk-x", admin_api_key="sk-admin-x", max_retries=0,
                           base_url="http://127.0.0.1:9/v1",
                           http_client=httpx.Client(transport=httpx.MockTransport(record)))
    calls: list = []
    for name in dir(client):
        if name.startswith("_"):
            continue
        try:
            resource = getattr(client, name)
        except Exception:
            continue
        if isinstance(resource, SyncAPIResource):
            _methods(resource, [name], calls)
    routes: dict[tuple[str, str], Route] = {}
    for call, fn in calls:
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        kwargs = {n: _placeholder(n, p) for n, p in signature.parameters.items()
                  if p.default is inspect.Parameter.empty
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        seen.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                answer = fn(**kwargs)
                if hasattr(answer, "__iter__") and not isinstance(answer, (bytes, str, dict)):
                    next(iter(answer), None)
            except Exception:
                pass
        for method, raw in seen[:1]:
            template = raw
            for key, value in kwargs.items():
                if isinstance(value, str) and value in template:
                    template = template.replace(value, "{" + key + "}")
            routes.setdefault((method, template), Route(method, template, call))
    return tuple(sorted(routes.values(), key=lambda r: (r.template, r.method)))
