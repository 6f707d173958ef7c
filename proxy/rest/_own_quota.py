"""`GET /v1/faregate/quota`: a caller reads its own quota, answered by faregate itself.

Everything under `/v1/faregate/` belongs to faregate and is never forwarded,
however the path is spelled: the route is matched on the canonical path
(percent-decoded, `.` and empty segments removed, case folded), so
`/v1//faregate/./QUOTA/` is this endpoint and an unknown `/v1/faregate/…`
is faregate's own 404. The caller is identified like any call (its
faregate key in keys mode; passthrough identity otherwise; an ephemeral
Realtime key minted through faregate counts as its minting tenant) and sees
only its tenant's and its own user's limits (`quota.quota_report`).

In passthrough mode faregate does not know the caller's key: any call is
authenticated by the upstream. So is this one — the key must be accepted by
the upstream's `GET /v1/models` (free; remembered for `KEY_TTL_S` by its
digest, never the key), or a caller without a valid key could read the
default tenant's numbers.

Query parameters (all optional, anything else is a 400): `model` — price
the typical call at this model; `max_output_tokens` — its output cap.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Callable

import aiohttp
import orjson
from aiohttp import web

from .. import _errors as errors
from .._ids import new_request_id
from .._runtime import Runtime
from ..caller import Caller, IdentityError, SecretBook, bearer_token, digest
from ..quota import Quota, quota_report

NAMESPACE = ("v1", "faregate")
QUOTA = NAMESPACE + ("quota",)
MAX_MODEL_NAME = 128
MAX_OUTPUT_TOKENS = 10_000_000
_PARAMS = frozenset({"model", "max_output_tokens"})
_HEADERS = {"cache-control": "no-store"}
KEY_TTL_S = 300.0  # how long an upstream-accepted passthrough key is remembered
MAX_KEYS = 10_000


class AcceptedKeys:
    """Passthrough keys the upstream accepted lately, by digest (bounded, expiring)."""

    def __init__(self, client: aiohttp.ClientSession) -> None:
        self.client = client
        self._until: OrderedDict[str, float] = OrderedDict()

    async def accepted(self, caller: Caller, token: str, rt: Runtime) -> bool | None:
        """True/False as the upstream says; None when it gave no verdict (unreachable,
        or an answer other than 2xx, 401, 403)."""
        key = digest(token)
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return True
        server = rt.settings.server
        headers = {"Authorization": caller.upstream_authorization or "",
                   "Accept-Encoding": "identity"}
        try:
            async with asyncio.timeout(server.connect_timeout_s + 10):
                async with self.client.get(server.upstream + "/v1/models", headers=headers,
                                           allow_redirects=False) as answer:
                    status = answer.status
        except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError):
            return None
        if status in (401, 403):
            return False
        if not 200 <= status < 300:  # not a verdict on the key: do not guess
            return None
        self._until[key] = now + KEY_TTL_S
        self._until.move_to_end(key)
        while len(self._until) > MAX_KEYS:
            self._until.popitem(last=False)
        return True


def own_route(path: str) -> tuple[str, ...] | None:
    """The canonical segments of a path under `/v1/faregate`, or None for any other path."""
    if "faregate" not in path.lower():  # the common case, cheaply
        return None
    segments = tuple(s.lower() for s in path.split("/") if s not in ("", "."))
    return segments if segments[:2] == NAMESPACE else None


class BadQuery(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _query(request: web.Request) -> tuple[str | None, int | None]:
    """(model, max_output_tokens) from the query, checked."""
    for name in request.query:
        if name not in _PARAMS:
            raise BadQuery(name, f"Unknown query parameter {name[:64]!r}; this endpoint "
                                 "takes model and max_output_tokens.")
        if len(request.query.getall(name)) > 1:
            raise BadQuery(name, f"{name} may be given once.")
    model = request.query.get("model")
    if model is not None and not (0 < len(model) <= MAX_MODEL_NAME and model.isprintable()):
        raise BadQuery("model", f"model must be 1 to {MAX_MODEL_NAME} printable characters.")
    raw = request.query.get("max_output_tokens")
    if raw is None:
        return model, None
    if not (raw.isdigit() and 0 < int(raw) <= MAX_OUTPUT_TOKENS):
        raise BadQuery("max_output_tokens",
                       f"max_output_tokens must be an integer from 1 to {MAX_OUTPUT_TOKENS}.")
    return model, int(raw)


class OwnQuota:
    """The handler of `/v1/faregate/*`."""

    def __init__(self, runtime: Callable[[], Runtime], quota: Quota, secrets: SecretBook,
                 active_sessions: Callable[[str], int], client: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.quota = quota
        self.secrets = secrets
        self.active_sessions = active_sessions
        self.keys = AcceptedKeys(client)

    async def handle(self, request: web.Request, route: tuple[str, ...]) -> web.Response:
        rid = new_request_id()
        if route != QUOTA:
            return errors.openai_error(
                404, "invalid_request_error", "unknown_url",
                "faregate answers GET /v1/faregate/quota under /v1/faregate/; "
                "nothing else there exists.", request_id=rid)
        if request.method != "GET":
            return errors.openai_error(
                405, "invalid_request_error", "method_not_allowed",
                "/v1/faregate/quota answers GET only.", headers={"allow": "GET"},
                request_id=rid)
        rt = self.runtime()
        try:
            model, output_tokens = _query(request)
        except BadQuery as exc:
            return errors.openai_error(400, "invalid_request_error", "invalid_parameter",
                                       str(exc), param=exc.param, request_id=rid)
        caller = await self._caller(request, rt, rid)
        if isinstance(caller, web.Response):
            return caller
        body = quota_report(self.quota, rt.policy(caller), rt.prices, datetime.now(timezone.utc),
                            rt.settings.alerts.thresholds, self.active_sessions(caller.tenant),
                            model=model, output_tokens=output_tokens)
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers={**_HEADERS, "x-faregate-request-id": rid})

    async def _caller(self, request: web.Request, rt: Runtime, rid: str
                      ) -> Caller | web.Response:
        """Who is asking, authenticated like any call; or the refusal."""
        token = bearer_token(request.headers)
        minted = self.secrets.caller(token) if token else None
        if minted is not None:
            return minted
        try:
            caller = rt.directory.identify(token, request.headers, None)
        except IdentityError as exc:
            return errors.identity_refused(exc, rid)
        if rt.settings.identity.mode == "keys":
            return caller  # a faregate key: faregate itself knows it
        if not token:
            return errors.openai_error(401, "invalid_request_error", "invalid_api_key",
                                       "You didn't provide an API key.", request_id=rid)
        accepted = await self.keys.accepted(caller, token, rt)
        if accepted is None:
            return errors.upstream_unavailable("the key could not be checked", rid)
        if not accepted:
            return errors.openai_error(401, "invalid_request_error", "invalid_api_key",
                                       "Incorrect API key provided: the upstream does not "
                                       "accept it.", request_id=rid)
        return caller
