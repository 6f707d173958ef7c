"""The sans-IO response meters, fed real answer shapes in arbitrary chunks, no sockets.

Every REST response shape has a meter behind one protocol: `feed(chunk)`
returns the bytes to send now, `close()` the bytes held back until the call
is billed, `reading()` what the answer said about its cost.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from faregate.pricing import load_price_table

from faregate.proxy.meter import (
    HoldLast,
    JsonMeter,
    LineMeter,
    RequestFacts,
    ResponseMeter,
    SseMeter,
    line_id,
)

CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
              "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
CHAT = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                 "finish_reason": "stop"}],
    "usage": CHAT_USAGE, "service_tier": "flex"})


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n"
                    for e in events)


def chunk(model: str, delta: dict | None, usage: object = None, **extra: object) -> dict:
    c = {"id": "c1", "object": "chat.completion.chunk", "model": model, "usage": usage,
         "choices": [] if delta is None else [{"index": 0, "delta": delta}], **extra}
    return c


CHAT_STREAM = sse(chunk("gpt-4o-mini", {"role": "assistant", "content": ""}),
                  chunk("gpt-4o-mini", {"content": "Hel"}), chunk("gpt-4o-mini", {"content": "lo"}),
                  chunk("gpt-4o-mini", None, CHAT_USAGE, service_tier="default"), b"[DONE]")

RESPONSES_STREAM = sse(
    {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "usage": None}},
    {"type": "response.output_text.delta", "delta": "Hi"},
    {"type": "response.output_item.done", "item": {"type": "web_search_call", "id": "ws_1"}},
    {"type": "response.completed", "response": {
        "id": "resp_1", "model": "gpt-5", "service_tier": "priority",
        "output": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}],
        "usage": {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 3}}}})


def run(meter: ResponseMeter, body: bytes, size: int) -> tuple[bytes, bytes]:
    """Feed `body` in chunks of `size`; (bytes sent at once, bytes held to the end)."""
    now = b"".join(meter.feed(body[i:i + size]) for i in range(0, len(body), size))
    return now, meter.close()


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_json_answer_sampled_and_its_last_bytes_held(size):
    meter = JsonMeter("chat", RequestFacts())
    now, held = run(meter, CHAT, size)
    assert now + held == CHAT and held  # byte for byte; the end waits for the charge
    reading = meter.reading()
    assert reading.usage == CHAT_USAGE
    assert reading.model == "gpt-4o-mini-2024-07-18" and reading.service_tier == "flex"
    assert reading.response_id == "chatcmpl-1"


def test_a_torn_json_answer_reads_no_usage():
    meter = JsonMeter("chat", RequestFacts())
    meter.feed(CHAT[:-40])
    assert meter.reading(complete=False).usage is None


@pytest.mark.parametrize("size", [1, 5, 33, 10_000])
@pytest.mark.parametrize("strip", [False, True])
def test_chat_stream_events_pass_at_once_and_usage_is_read(size, strip):
    meter = SseMeter("chat", strip_usage=strip)
    now, held = run(meter, CHAT_STREAM, size)
    out = now + held
    reading = meter.reading()
    assert reading.usage == CHAT_USAGE and reading.model == "gpt-4o-mini"
    assert reading.deltas == 3 and reading.service_tier == "default"
    assert reading.response_id == "c1"
    assert out.endswith(b"data: [DONE]\n\n")
    if strip:  # faregate asked for the usage chunk itself: the client never sees it
        assert b'"usage"' not in out
    else:
        assert out == CHAT_STREAM


@pytest.mark.parametrize("size", [1, 5, 33, 10_000])
@pytest.mark.parametrize("separators", [[b"\r\n\r\n"] * 5, [b"\r\r"] * 5,
                                        [b"\n\n", b"\r\n\r\n", b"\n\n", b"\r\r", b"\n\n"]])
def test_chat_stream_events_split_at_any_separator_and_passed_byte_for_byte(size, separators):
    events = CHAT_STREAM.split(b"\n\n")[:-1]
    body = b"".join(e + sep for e, sep in zip(events, separators))
    meter = SseMeter("chat")
    now, held = run(meter, body, size)
    assert now + held == body and held.startswith(b"data: [DONE]")
    reading = meter.reading()
    assert reading.usage == CHAT_USAGE and reading.deltas == 3 and meter.events == 5


@pytest.mark.parametrize("size", [1, 50, 10_000])
def test_responses_stream_reads_terminal_usage_tier_and_tool_calls(size):
    meter = SseMeter("responses", facts=RequestFacts())
    now, held = run(meter, RESPONSES_STREAM, size)
    assert now + held == RESPONSES_STREAM
    reading = meter.reading()
    assert reading.usage["input_tokens"] == 40 and reading.service_tier == "priority"
    assert reading.response_id == "resp_1"
    assert dict(reading.tool_calls).get("web_search") == 1


def test_a_stream_cut_short_keeps_what_it_saw():
    meter = SseMeter("chat")
    meter.feed(CHAT_STREAM[: CHAT_STREAM.index(b"lo")])
    reading = meter.reading(complete=False)
    assert reading.usage is None and reading.deltas == 2


def test_hold_last_and_pass_through():
    hold, plain = HoldLast(), ResponseMeter()
    assert [hold.feed(c) for c in (b"a", b"b", b"c")] == [b"", b"a", b"b"]
    assert hold.close() == b"c"
    assert plain.feed(b"a") == b"a" and plain.close() == b"" and plain.reading() is None


def line(custom: str, status: int = 200, model: str = "gpt-4o-mini") -> bytes:
    body = {"id": "chatcmpl-x", "model": model, "usage": {"prompt_tokens": 10,
            "completion_tokens": 2, "total_tokens": 12}}
    return orjson.dumps({"id": f"batch_req_{custom}", "custom_id": custom,
                         "response": {"status_code": status, "body": body}}) + b"\n"


@pytest.mark.parametrize("size", [1, 17, 100_000])
def test_batch_output_lines_metered_once_each_at_batch_rates(size):
    created = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    body = line("a") + line("b", status=500) + b"not json\n" + line("c")[:-1]  # no final \n
    meter = LineMeter("/v1/chat/completions", "batch_1", created, load_price_table())
    metered = [m for i in range(0, len(body), size) for m in meter.feed(body[i:i + size])]
    metered += meter.close()
    assert [m.record_id for m in metered] == [line_id("batch_1", c, created) for c in "ac"]
    assert all(m.usage.service_tier == "batch" and m.usage.input == 10 for m in metered)
    assert meter.counts == {"charged": 0, "failed": 1, "malformed": 1, "too_long": 0}


def test_a_broken_off_file_drops_its_partial_last_line():
    meter = LineMeter("/v1/chat/completions", "batch_1", datetime.now(timezone.utc),
                      load_price_table())
    assert len(meter.feed(line("a") + line("b")[:20])) == 1
    assert meter.close(complete=False) == []


def test_sse_meter_counts_the_text_it_delivered_for_estimates():
    """A stream cut short is charged at least what the client was sent: every delta's raw
    text bytes (each token is one byte at least)."""
    meter = SseMeter("chat")
    body = sse(chunk("gpt-4o", {"content": "Hello, "}), chunk("gpt-4o", {"content": 'a "b"'}),
               chunk("gpt-4o", {"tool_calls": [{"function": {"arguments": '{"x": 1}'}}]}))
    for i in range(0, len(body), 7):
        meter.feed(body[i:i + 7])
    reading = meter.reading(complete=False)
    assert reading.deltas == 3
    assert reading.delivered >= len("Hello, ") + len('a "b"') + len('{"x": 1}')
    responses = SseMeter("responses")
    responses.feed(sse({"type": "response.output_text.delta", "delta": "abc"}))
    assert responses.reading().delivered == 3


def test_line_meter_reads_the_shape_of_lines_of_an_unknown_endpoint():
    meter = LineMeter("", "adopted:file-1", datetime(2026, 1, 1, tzinfo=timezone.utc),
                      load_price_table())
    line = orjson.dumps({"custom_id": "a", "response": {"status_code": 200, "body": {
        "object": "response", "model": "gpt-4o", "usage": {"input_tokens": 5,
                                                           "output_tokens": 2}}}})
    [metered] = meter.feed(line + b"\n")
    assert (metered.usage.input, metered.usage.output, metered.usage.service_tier) == (5, 2, "batch")
