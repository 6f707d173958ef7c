"""The reservation of a batch, read from its input file when it is created.

`POST /v1/batches` names an input file that is already upstream. Before the
batch is forwarded, faregate reads that file from the upstream (with the
caller's own credential, bounded in bytes, lines and time) and adds up the
reservation of every request line, at batch rates — the same estimate a REST
call gets (`meter.estimate`), so a better estimator improves both. A file
faregate cannot read gives None: the batch is then admitted only while the
caller's budget is not spent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Iterable

import aiohttp
import orjson
from yarl import URL

from faregate.pricing import PriceTable, Usage

from ..meter import classify, cost_nanos, dearest_nanos, estimate, facts_from_json
from ..quota import Policy

log = logging.getLogger("faregate.batches")

MAX_INPUT_BYTES = 64 * 1024 * 1024  # read at most this much of an input file
MAX_LINES = 50_000  # the Batch API's own limit per batch
READ_TIMEOUT_S = 30.0
FORWARDED = ("openai-organization", "openai-project")


def lines_reservation(lines: Iterable[bytes], policy: Policy, table: PriceTable,
                     at: datetime) -> int:
    """Nano-USD: the reservation of every request line, summed per model, at batch rates."""
    by_model: dict[str | None, Usage] = {}
    for raw in lines:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # the upstream fails such a line itself
        if not isinstance(line, dict) or not isinstance(line.get("url"), str):
            continue
        endpoint = classify("POST", line["url"].split("?", 1)[0])
        body = line.get("body")
        if endpoint is None or not endpoint.metered or not isinstance(body, dict):
            continue
        facts = facts_from_json(endpoint, body, len(raw))
        usage = estimate(endpoint, facts, body, table=table, at=at, with_worst=False,
                         default_output=policy.default_max_output_tokens).usage
        model = facts.model if facts.model and table.entry(facts.model, at) else None
        by_model[model] = by_model.get(model, Usage()) + usage
    total = 0
    for model, usage in by_model.items():
        if model is None:  # unpriced or no model: the dearest rate the caller may use
            total += dearest_nanos(usage, table, at, policy.models) // 2
        else:
            total += cost_nanos(replace(usage, service_tier="batch"), model, table, at)
    return total


async def read_input_lines(client: aiohttp.ClientSession, upstream: str, file_id: str,
                           headers: dict[str, str]) -> tuple[list[bytes], float] | None:
    """The request lines of an input file and the share of the file they are (1.0: all),
    or None when the upstream does not give the file."""
    url = URL(f"{upstream}/v1/files/{file_id}/content", encoded=True)
    lines: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            async with client.get(url, headers=headers) as answer:
                if answer.status != 200:
                    return None
                whole = answer.content_length
                buf = b""
                async for chunk in answer.content.iter_any():
                    size += len(chunk)
                    buf += chunk
                    *done, buf = buf.split(b"\n")
                    lines.extend(line for line in done if line.strip())
                    if size >= MAX_INPUT_BYTES or len(lines) >= MAX_LINES:
                        share = size / whole if whole else 1.0
                        return lines[:MAX_LINES], min(1.0, share)
                if buf.strip():
                    lines.append(buf)
    except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError) as exc:
        log.warning("batch input file not readable", extra={"file_id": file_id,
                                                            "error": type(exc).__name__})
        return None
    return lines, 1.0


async def ask_upstream(client: aiohttp.ClientSession, url: str, headers: dict[str, str],
                       limit: int = 4 * 1024 * 1024) -> Any:
    """A small JSON answer of the upstream to a GET faregate makes itself, or None."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            async with client.get(URL(url, encoded=True), headers=headers) as answer:
                if answer.status != 200:
                    return None
                body = await answer.content.read(limit + 1)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("upstream lookup failed", extra={"error": type(exc).__name__})
        return None
    if len(body) > limit:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def side_headers(request_headers: "aiohttp.typedefs.LooseHeaders", authorization: str | None
                 ) -> dict[str, str]:
    """Headers for a call faregate makes upstream on the caller's behalf."""
    out = {"Accept-Encoding": "identity"}
    for name in FORWARDED:
        value = request_headers.get(name)  # type: ignore[union-attr]
        if value:
            out[name] = value
    if authorization:
        out["Authorization"] = authorization
    return out
