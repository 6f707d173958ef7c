"""Every billing dimension, priced to the nano-dollar: service tiers, long context,
built-in tool fees, price history, snapshots priced by family, the table check.

The first half is table-driven over `price()` with real-shaped usage; each row
carries its expected amount computed by hand from the published prices (in the
comment next to it). The second half sends the same shapes through faregate
with the official SDK, from an upstream that answers with exactly those
bodies, and reads the charge back from the ledger.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from aiohttp import web

from test_cli import faregate
from faregate.pricing import (
    ToolScan,
    Usage,
    check_price_table,
    load_price_table,
    loads_price_table,
    price,
    usage_for_endpoint,
)

AT = datetime(2026, 11, 20, tzinfo=timezone.utc)
SHIPPED = load_price_table()
M = 1_000_000


def chat_usage(prompt: int, completion: int, cached: int = 0) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def responses_usage(inp: int, out: int, cached: int = 0) -> dict:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out}


def tiered(kind: str, raw: dict, tier: str | None, tools=()) -> Usage:
    u = usage_for_endpoint(kind, raw, table=SHIPPED)
    return Usage(**{**{f: getattr(u, f) for f in u.__slots__}, "service_tier": tier,
                    "tool_calls": tuple(tools)})


# (id, usage, model, expected cost, expected price_version suffix, expected flags)
CASES = [
    # gpt-5 standard: 1,000 uncached x 1.25 + 1,000 cached x 0.125 + 500 x 10.00, per 1M
    ("default", tiered("chat", chat_usage(2000, 500, 1000), "default"), "gpt-5",
     D("0.006375"), "gpt-5@2025-08-07", ()),
    # priority (openai.com/api-priority-processing): 2.50 / 0.25 / 20.00
    ("priority", tiered("chat", chat_usage(2000, 500, 1000), "priority"), "gpt-5",
     D("0.01275"), "gpt-5@2025-08-07:priority", ()),
    # flex: half of standard: 0.625 / 0.0625 / 5.00
    ("flex", tiered("responses", responses_usage(2000, 500, 1000), "flex"), "gpt-5",
     D("0.0031875"), "gpt-5@2025-08-07:flex", ()),
    # batch, gpt-4o-mini: half of 0.15 / 0.075 / 0.60 -> 1,000 x 0.075 + 1,000 x 0.0375 + 500 x 0.30
    ("batch", tiered("chat", chat_usage(2000, 500, 1000), "batch"), "gpt-4o-mini",
     D("0.0002625"), "gpt-4o-mini@2024-07-18:batch", ()),
    # "fast" is priority's newer name; gpt-4o priority 4.25 / 2.125 / 17.00
    ("fast alias", tiered("chat", chat_usage(2000, 500, 1000), "fast"), "gpt-4o",
     D("0.014875"), "gpt-4o@2024-08-06:priority", ()),
    # ultrafast, gpt-6-astra: 6x standard = 60 / 6 / 300: 1,000 x 60 + 100 x 300
    ("ultrafast", tiered("responses", responses_usage(1000, 100), "ultrafast"), "gpt-6-astra",
     D("0.09"), "gpt-6-astra@2026-09-03:ultrafast", ()),
    # flex on long context, gpt-6-sol: half of 2.00 / 0.20 / 10.00, then x2 input, x1.5 output:
    # 200,000 x 2.00 + 100,000 x 0.20 + 1,000 x 7.50
    ("flex long", tiered("responses", responses_usage(300_000, 1000, 100_000), "flex"),
     "gpt-6-sol", D("0.4275"), "gpt-6-sol@2026-09-22:flex:long_context", ()),
    # a tier the table does not price: base rates, flagged
    ("scale", tiered("chat", chat_usage(2000, 500, 1000), "scale"), "gpt-4o-mini",
     D("0.000525"), "gpt-4o-mini@2024-07-18", ("tier_unpriced",)),
    # gpt-5.4 at 272,000 prompt tokens: still short context: 272,000 x 2.50 + 1,000 x 15
    ("at threshold", tiered("responses", responses_usage(272_000, 1000), None), "gpt-5.4",
     D("0.695"), "gpt-5.4@2026-03-05", ()),
    # above 272K: input x2 (5.00, cached 0.50), output x1.5 (22.50):
    # 200,000 x 5.00 + 100,000 x 0.50 + 1,000 x 22.50
    ("long context", tiered("responses", responses_usage(300_000, 1000, 100_000), None),
     "gpt-5.4", D("1.0725"), "gpt-5.4@2026-03-05:long_context", ()),
    # priority and long context together: priority 5.00 / 0.50 / 30.00, then x2 / x1.5
    ("priority long", tiered("responses", responses_usage(300_000, 1000, 100_000), "priority"),
     "gpt-5.4", D("2.145"), "gpt-5.4@2026-03-05:priority:long_context", ()),
    # tools: web search 2 x $10/1k, file search 1 x $2.50/1k, one 4 GB container $0.12,
    # one high-quality 1024x1536 image $0.25, plus 1,000 x 1.25 + 100 x 10.00 tokens
    ("tools", tiered("responses", responses_usage(1000, 100), None, [
        ("web_search", 2), ("file_search", 1), ("code_interpreter:4g", 1),
        ("image_generation:high:1024x1536", 1)]),
     "gpt-5", D("0.00225") + D("0.02") + D("0.0025") + D("0.12") + D("0.25"),
     "gpt-5@2025-08-07", ()),
    # web_search_preview with a non-reasoning model: $25/1k calls
    ("preview search", tiered("responses", responses_usage(1000, 100), None,
                              [("web_search_preview", 4)]),
     "gpt-4o-mini", D("0.00015") + D("0.00006") + D("0.1"), "gpt-4o-mini@2024-07-18", ()),
    # a listed snapshot is its own price; an unlisted dated name is priced by family
    ("known snapshot", tiered("chat", chat_usage(1000, 0), None), "gpt-4o-mini-2024-07-18",
     D("0.00015"), "gpt-4o-mini@2024-07-18", ()),
    ("unknown snapshot", tiered("chat", chat_usage(1000, 0), None), "gpt-4o-mini-2031-01-01",
     D("0.00015"), "gpt-4o-mini@2024-07-18", ("priced_by_family",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_dimension_is_priced_exactly(case):
    _, usage, model, cost, version, flags = case
    table = load_price_table()
    charge = price(usage, model, AT, SHIPPED)
    assert charge.cost == cost
    assert sum(charge.breakdown.values(), D(0)) == cost
    assert charge.price_version == f"{table.version}:{version}"
    assert charge.usage.flags == flags


def test_tool_fees_are_their_own_breakdown_classes():
    u = tiered("responses", responses_usage(1000, 100), None,
               [("web_search", 2), ("code_interpreter:1g", 3)])
    parts = price(u, "gpt-5", AT, SHIPPED).breakdown
    assert parts["tool:web_search"] == D("0.02")
    assert parts["tool:code_interpreter"] == D("0.09")  # three 1 GB containers, $0.03 each
    assert parts["input"] == D("0.00125") and parts["output"] == D("0.001")


def test_an_unknown_tool_is_flagged_not_free():
    u = Usage(input=10, tool_calls=(("teleport", 1),))
    charge = price(u, "gpt-5", AT, SHIPPED)
    assert "rate_missing" in charge.usage.flags and "tool:teleport" not in charge.breakdown


def test_price_history_prices_each_call_at_the_rate_of_its_day():
    u = Usage(input=M, output=M)
    before = price(u, "o3", datetime(2025, 6, 9, 23, 59, tzinfo=timezone.utc), SHIPPED)
    after = price(u, "o3", datetime(2025, 6, 10, tzinfo=timezone.utc), SHIPPED)
    assert (before.cost, after.cost) == (D(50), D(10))  # 10 + 40, then 2 + 8
    assert before.price_version.endswith(":o3@2025-04-16")
    assert after.price_version.endswith(":o3@2025-06-10")


def test_hostile_usage_fields_are_clamped_and_flagged():
    u = Usage(input=5, service_tier="x" * 500, tool_calls=(("web_search", -3), ("a", True), 7))
    charge = price(u, "gpt-5", AT, SHIPPED)
    assert charge.cost == D("0.00000625") and charge.usage.tool_calls == ()
    assert "usage_malformed" in charge.usage.flags


def test_shipped_table_passes_its_own_check():
    assert check_price_table(load_price_table()) == []


BROKEN = """
version = "t"
[snapshots]
"a" = ["b-2024-01-01"]
[[models."a"]]
effective = "2024-01-01"
input = 1
[[models."a"]]
effective = "2024-01-01"
source = "x"
input = 2
[[models."b"]]
effective = "2024-01-01"
source = "x"
input = 1
priority = { audio_output = 3 }
[[tools."web_search"]]
effective = "2025-01-01"
per_call = 0.01
"""


def test_check_names_every_problem_with_its_path():
    problems = check_price_table(loads_price_table(BROKEN))
    text = "\n".join(problems)
    assert "models.a[2024-01-01]: two periods start on the same day" in text
    assert "models.a[2024-01-01].source: missing" in text
    assert "snapshots.a: 'b-2024-01-01' resolves to 'b'" in text
    assert "models.b[2024-01-01].priority.audio_output" in text
    assert "tools.web_search[2025-01-01].source: missing" in text
    assert len(problems) == 5


def test_prices_cli_check_and_at(tmp_path):
    ok = faregate("prices", "--check", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("ok"), ok.stdout + ok.stderr
    old = faregate("prices", "--model", "o3", "--at", "2025-05-01", cwd=tmp_path)
    assert old.returncode == 0
    marked = [line for line in old.stdout.splitlines() if line.startswith("o3 *")]
    assert marked and "10.00" in marked[0] and "2025-04-16" in marked[0]
    tiers = faregate("prices", "--model", "gpt-5.4", cwd=tmp_path).stdout
    assert "priority tier" in tiers and "long context" in tiers and "above 272,000" in tiers


def test_tool_scan_counts_items_across_any_chunking():
    body = json.dumps({"output": [
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "code_interpreter_call", "container_id": "cntr_1", "code": "print(1)"},
        {"type": "code_interpreter_call", "container_id": "cntr_1", "code": "print(2)"},
        {"type": "image_generation_call", "quality": "low", "result": "QUJD" * 3000,
         "size": "1024x1024"},
        {"type": "message", "content": [{"type": "output_text",
                                         "text": '"type": "web_search_call"'}]}],
        "tools": [{"type": "image_generation", "quality": "auto", "size": "auto"}]}).encode()
    want = (("code_interpreter:1g", 1), ("image_generation:low:1024x1024", 1), ("web_search", 1))
    for step in (1, 13, 4096, len(body)):
        scan = ToolScan()
        for i in range(0, len(body), step):
            scan.feed(body[i:i + step])
        assert scan.fee_keys() == want, step


# -- end to end: the official SDK, faregate, an upstream with real-shaped bodies ----


def chat_body(model: str, tier: str, usage: dict) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": usage, "service_tier": tier, "system_fingerprint": "fp_1"}


def response_body(model: str, tier: str, usage: dict, output: list) -> dict:
    return {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": model, "output": output, "service_tier": tier,
            "tools": [{"type": "web_search"}, {"type": "code_interpreter",
                                               "container": {"type": "auto", "memory_limit": "4g"}}],
            "usage": usage}


TOOL_OUTPUT = [
    {"id": "ws_1", "type": "web_search_call", "status": "completed",
     "action": {"type": "search", "query": "q"}},
    {"id": "ws_2", "type": "web_search_call", "status": "completed",
     "action": {"type": "search", "query": "r"}},
    {"id": "ci_1", "type": "code_interpreter_call", "status": "completed",
     "container_id": "cntr_9", "code": "1+1", "outputs": None},
    {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "done", "annotations": []}]},
]


def sse(events: list[tuple[str | None, object]]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        out += b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
    return out


@pytest.fixture
def answer(upstream):
    """Make the upstream answer chat/responses calls with a given JSON body or SSE bytes."""
    def set_answer(path: str, body: dict | bytes):
        async def handler(request: web.Request) -> web.StreamResponse:
            if isinstance(body, bytes):
                return web.Response(body=body, content_type="text/event-stream")
            return web.json_response(body)
        upstream.add_route("POST", path, handler)
    return set_answer


async def one_charge(gw):
    rows = await gw.ledger_rows(1)
    assert len(rows) == 1
    return rows[0]


async def test_e2e_chat_flex_tier_from_the_response(make_gateway, answer):
    # the caller asked for auto; the upstream says it ran on flex: flex rates apply
    answer("/v1/chat/completions", chat_body("gpt-5-2025-08-07", "flex", chat_usage(2000, 500, 1000)))
    gw = await make_gateway()
    await gw.client().chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}], service_tier="auto")
    row = await one_charge(gw)
    assert D(row.cost_nanos) / 10**9 == D("0.0031875")
    assert row.price_version.endswith(":gpt-5@2025-08-07:flex") and row.flags == ()


async def test_e2e_streamed_chat_priority_tier(make_gateway, answer):
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt-5-2025-08-07", "service_tier": "priority"}
    answer("/v1/chat/completions", sse([
        (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]}),
        (None, {**chunk, "choices": [], "usage": chat_usage(2000, 500, 1000)}),
        (None, b"[DONE]")]))
    gw = await make_gateway()
    stream = await gw.client().chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    async for _ in stream:
        pass
    row = await one_charge(gw)
    assert D(row.cost_nanos) / 10**9 == D("0.01275")
    assert row.price_version.endswith(":priority")


async def test_e2e_responses_tool_fees_and_long_context(make_gateway, answer):
    usage = responses_usage(300_000, 1000, 100_000)
    answer("/v1/responses", response_body("gpt-5.4-2026-03-05", "default", usage, TOOL_OUTPUT))
    gw = await make_gateway()
    await gw.client().responses.create(
        model="gpt-5.4", input="search twice and compute",
        tools=[{"type": "web_search"},
               {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}])
    row = await one_charge(gw)
    # long context tokens (see CASES) + 2 searches x $0.01 + one 4 GB container $0.12
    assert row.breakdown == {"input": 1_000_000_000, "cached_input": 50_000_000,
                             "output": 22_500_000, "tool:web_search": 20_000_000,
                             "tool:code_interpreter": 120_000_000}
    assert row.cost_nanos == 1_212_500_000
    assert row.price_version.endswith(":gpt-5.4@2026-03-05:long_context")


async def test_e2e_streamed_responses_count_tools_once(make_gateway, answer):
    final = response_body("gpt-5-2025-08-07", "default", responses_usage(1000, 100), TOOL_OUTPUT)
    events = [("response.created", {"type": "response.created", "response": {
        **final, "status": "in_progress", "output": [], "usage": None}})]
    for i, item in enumerate(TOOL_OUTPUT):  # every item is also announced on its own
        events.append(("response.output_item.done",
                       {"type": "response.output_item.done", "output_index": i, "item": item}))
    events.append(("response.completed", {"type": "response.completed", "response": final}))
    answer("/v1/responses", sse(events))
    gw = await make_gateway()
    stream = await gw.client().responses.create(model="gpt-5", input="x", stream=True,
                                                tools=[{"type": "web_search"}])
    async for _ in stream:
        pass
    row = await one_charge(gw)
    assert row.breakdown["tool:web_search"] == 20_000_000  # two calls, not four
    assert row.breakdown["tool:code_interpreter"] == 30_000_000  # default 1 GB container
    assert row.cost_nanos == 1_250_000 + 1_000_000 + 20_000_000 + 30_000_000


async def test_e2e_unlisted_snapshot_is_priced_by_family_and_reported(make_gateway, answer):
    answer("/v1/chat/completions",
           chat_body("gpt-4o-mini-2031-01-01", "default", chat_usage(1000, 0)))
    gw = await make_gateway()
    await gw.client().chat.completions.create(
        model="gpt-4o-mini-2031-01-01", messages=[{"role": "user", "content": "hi"}])
    row = await one_charge(gw)
    assert row.flags == ("priced_by_family",) and row.cost_nanos == 150_000
    report = await gw.state.ledger.usage(None, None, "model")
    assert report.rows[0].fallback == 1 and report.rows[0].fallback_cost_nanos == 150_000
    assert report.totals()["total_fallback_cost_usd"] == "0.000150"
