"""A property: random request shapes × concurrency × usage inflation never break the bound.

Each example starts the fake upstream and a faregate with one budgeted
tenant, then sends a random crowd of calls at once — chat and Responses,
with or without an output cap, with images, files, `previous_response_id`
and `conversation` — while the upstream reports input inflated far above
what the bodies suggest (never past the model's context window). Whatever
the mix: spent ≤ limit + what one call cost. The example count is small by
default (each is a real gateway); `FAREGATE_FUZZ=1` runs many more.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from decimal import Decimal
from pathlib import Path

import openai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import gateway_config, start_gateway
from fake_upstream import FakeUpstream
from faregate.proxy import parse_settings

FUZZ = os.environ.get("FAREGATE_FUZZ") == "1"
MINI = {"input": "0.15", "output": "0.60"}

call = st.fixed_dictionaries({
    "api": st.sampled_from(["chat", "responses"]),
    "words": st.integers(1, 300),
    "cap": st.one_of(st.none(), st.integers(1, 400)),
    "image": st.sampled_from(["none", "no detail", "low", "high", "auto"]),
    "file": st.booleans(),
    "continue": st.booleans(),
    "conversation": st.booleans(),
})
scenario = st.fixed_dictionaries({
    "limit_micro": st.integers(500, 60_000),  # $0.0005 .. $0.06
    "inflated_input": st.integers(0, 100_000),  # reported input tokens (0: honest)
    "calls": st.lists(call, min_size=1, max_size=40),
})


def _chat(c: dict) -> dict:
    content: list = [{"type": "text", "text": "word " * c["words"]}]
    if c["image"] != "none":
        detail = {} if c["image"] == "no detail" else {"detail": c["image"]}
        content.append({"type": "image_url",
                        "image_url": {"url": "https://example.invalid/i.png", **detail}})
    if c["file"]:
        content.append({"type": "file", "file": {"file_id": "file-abc"}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    if c["cap"] is not None:
        body["max_tokens"] = c["cap"]
    return body


def _responses(c: dict, first: str | None) -> dict:
    content: list = [{"type": "input_text", "text": "word " * c["words"]}]
    if c["image"] != "none":
        detail = {} if c["image"] == "no detail" else {"detail": c["image"]}
        content.append({"type": "input_image", "image_url": "https://example.invalid/i.png",
                        **detail})
    if c["file"]:
        content.append({"type": "input_file", "file_id": "file-abc"})
    body: dict = {"model": "gpt-4o-mini", "input": [{"role": "user", "content": content}]}
    if c["cap"] is not None:
        body["max_output_tokens"] = c["cap"]
    if c["continue"] and first:
        body["previous_response_id"] = first
    if c["conversation"]:
        body["conversation"] = "conv_shared"
    return body


async def run(case: dict, tmp: Path) -> tuple[Decimal, Decimal, Decimal, int]:
    limit = Decimal(case["limit_micro"]).scaleb(-6)
    async with FakeUpstream() as upstream:
        data = gateway_config(upstream.url, tmp, {
            "pricing": {"models": {"gpt-4o-mini": MINI}},
            "keys": [{"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"}],
            "tenants": {"acme": {"daily_usd": str(limit)}}})
        gw = await start_gateway(parse_settings(data))
        try:
            client = gw.client("sk-acme")
            first = None
            try:  # something to continue from, created honestly
                first = (await client.responses.create(
                    model="gpt-4o-mini", input="start", max_output_tokens=5)).id
            except openai.RateLimitError:
                pass
            if case["inflated_input"]:
                upstream.usage["/v1/chat/completions"] = {"prompt_tokens": case["inflated_input"]}
                upstream.usage["/v1/responses"] = {"input_tokens": case["inflated_input"]}

            async def one(c: dict) -> None:
                try:
                    if c["api"] == "chat":
                        await client.post("/chat/completions", body=_chat(c), cast_to=object)
                    else:
                        await client.post("/responses", body=_responses(c, first), cast_to=object)
                except openai.RateLimitError:
                    pass
            await asyncio.gather(*(one(c) for c in case["calls"]))
            await gw.state.ledger.flush()
            rows = [r for r in await gw.state.ledger.logs(limit=1000) if r.tenant == "acme"]
            spent = Decimal(sum(r.cost_nanos for r in rows)).scaleb(-9)
            largest = Decimal(max((r.cost_nanos for r in rows), default=0)).scaleb(-9)
            return spent, limit, largest, len(rows)
        finally:
            await gw.stop()


@settings(max_examples=2_000 if FUZZ else 12, deadline=None, derandomize=not FUZZ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=scenario)
def test_no_mix_of_shapes_concurrency_and_inflation_passes_the_bound(case, tmp_path_factory):
    spent, limit, largest, calls = asyncio.run(run(case, tmp_path_factory.mktemp("bound")))
    assert spent <= limit + largest, (spent, limit, largest, calls)
