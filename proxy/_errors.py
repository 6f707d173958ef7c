"""Refusals in the OpenAI error shape, so SDKs raise the right exception.

Every error faregate itself produces goes through `openai_error`: quota
`Refusal`s and caller `IdentityError`s are turned into answers here, the
same way on the REST and the WebSocket edge. The table of cases lives in
DESIGN §5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import orjson
from aiohttp import web

from .caller import IdentityError, bearer_matches
from .quota import Refusal

if TYPE_CHECKING:
    from .objects import Denial


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def openai_error(
    status: int,
    type_: str,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    param: str | None = None,
    null_code: bool = False,
) -> web.Response:
    """A JSON error response faregate produced (not the upstream); `null_code`: the
    `code` is JSON null, as in the upstream's own not-found answers."""
    h = {"content-type": "application/json"}
    if headers:
        h.update(headers)
    if request_id:
        h["x-faregate-request-id"] = request_id
    body = error_body(message, type_, None if null_code else code, param)
    return web.Response(status=status, body=body, headers=h)


def refused(refusal: Refusal, request_id: str) -> web.Response:
    """The answer to a call a limit refused."""
    return openai_error(refusal.status, refusal.type, refusal.code, refusal.message,
                        headers=refusal.headers, request_id=request_id)


def identity_refused(exc: IdentityError, request_id: str) -> web.Response:
    """The answer to a caller faregate cannot serve (unknown key, no upstream key)."""
    return openai_error(exc.status, exc.type, exc.code, str(exc), request_id=request_id)


def request_too_large(limit: int, request_id: str) -> web.Response:
    return openai_error(
        413,
        "invalid_request_error",
        "request_too_large",
        f"Request body exceeds this faregate's limit of {limit} bytes.",
        request_id=request_id,
    )


def upstream_unavailable(detail: str, request_id: str) -> web.Response:
    return openai_error(
        502,
        "api_error",
        "upstream_unavailable",
        f"faregate could not reach the upstream API: {detail}",
        request_id=request_id,
    )


def upstream_timeout(detail: str, request_id: str) -> web.Response:
    return openai_error(
        504,
        "api_error",
        "upstream_timeout",
        f"The upstream API did not answer in time: {detail}",
        request_id=request_id,
    )


def model_not_allowed(message: str, request_id: str) -> web.Response:
    return openai_error(
        403, "invalid_request_error", "model_not_allowed", message, request_id=request_id
    )


def invalid_request(message: str, code: str, request_id: str, status: int = 400) -> web.Response:
    return openai_error(status, "invalid_request_error", code, message, request_id=request_id)


def model_not_priced(model: str, request_id: str) -> web.Response:
    """A model faregate cannot price, for a caller with a USD limit (DESIGN §5)."""
    return openai_error(
        403, "invalid_request_error", "model_not_priced",
        f"faregate has no price for the model {model!r}, and calls it cannot price are "
        f"refused for callers with a budget. Add [pricing.models.\"{model}\"] with its "
        "rates (USD per 1M tokens) to the config, or set unknown_model = \"record\" for this "
        "tier or tenant.", request_id=request_id, param="model")


def endpoint_not_allowed(path: str, request_id: str) -> web.Response:
    """A path outside the caller's `endpoints` allowlist (DESIGN §5)."""
    return openai_error(
        403, "invalid_request_error", "endpoint_not_allowed",
        f"This caller may not use {path[:200]} (its tier's or tenant's `endpoints`).",
        request_id=request_id)
def ledger_unavailable(request_id: str, retry_after_s: int = 5) -> web.Response:
    """`[storage] on_ledger_failure = "refuse"`: no charge could be kept now."""
    return openai_error(
        503, "api_error", "ledger_unavailable",
        "faregate cannot record charges right now (neither its journal nor its database "
        "takes writes), so metered calls are refused; try again shortly.",
        headers={"retry-after": str(retry_after_s)}, request_id=request_id)


def denied(denial: "Denial", request_id: str) -> web.Response:
    """Another tenant's object (or one faregate cannot check): OpenAI's own answer."""
    headers = {"retry-after": denial.retry_after} if denial.retry_after else None
    return openai_error(denial.status, denial.type, denial.code or "", denial.message,
                        headers=headers, request_id=request_id, param=denial.param,
                        null_code=denial.code is None)


def wrong_token(headers: Mapping[str, str], token: str, what: str) -> web.Response | None:
    """None if `Authorization: Bearer` carries the operator's `token`; else the 401
    (`invalid_<what>_token`). Compared in constant time."""
    if bearer_matches(headers, token):
        return None
    return openai_error(401, "invalid_request_error", f"invalid_{what}_token",
                        f"A valid {what} bearer token is required.",
                        headers={"www-authenticate": f'Bearer realm="faregate-{what}"'})
