"""The sans-IO session meter, fed real event shapes, no sockets."""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import pytest

from faregate.pricing import load_price_table

from faregate.proxy.meter._session import SessionMeter, frame_type


def ev(**kw) -> str:
    return orjson.dumps(kw).decode()


RESPONSE_DONE_USAGE = {
    "total_tokens": 500,
    "input_tokens": 300,
    "output_tokens": 200,
    "input_token_details": {
        "text_tokens": 100, "audio_tokens": 200, "image_tokens": 0, "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 32, "audio_tokens": 32, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 50, "audio_tokens": 150},
}


def done(rid: str, usage=RESPONSE_DONE_USAGE, status="completed") -> str:
    response = {"object": "realtime.response", "id": rid, "status": status, "output": []}
    if usage is not None:
        response["usage"] = usage
    return ev(type="response.done", event_id="event_1", response=response)


def test_type_is_sniffed_without_parsing_and_audio_is_only_counted():
    audio = base64.b64encode(b"\0" * 4800).decode()
    delta = ev(type="response.output_audio.delta", event_id="e", response_id="r", item_id="i",
               output_index=0, content_index=0, delta=audio)
    assert frame_type(delta) == "response.output_audio.delta"
    assert frame_type(ev(event_id="x", type="session.created")) == "session.created"
    assert frame_type("not json") is None
    m = SessionMeter("realtime")
    assert m.server_frame(delta) == []
    assert 4000 < m.audio_out_bytes <= 4800


def test_response_done_charged_once_with_disjoint_classes():
    m = SessionMeter("realtime", model="gpt-realtime")
    m.server_frame(ev(type="session.created", session={"id": "sess_1", "model": "gpt-realtime-2025-08-28"}))
    assert (m.upstream_session_id, m.model) == ("sess_1", "gpt-realtime-2025-08-28")
    m.server_frame(ev(type="response.created", response={"id": "resp_1"}))
    assert m.busy
    [metered] = m.server_frame(done("resp_1"))
    assert not m.busy and m.responses == 1
    u = metered.usage
    assert (u.input, u.cached_input, u.audio_input, u.cached_audio_input) == (68, 32, 168, 32)
    assert (u.output, u.audio_output) == (50, 150)
    assert u.total_tokens == 500
    assert metered.response_id == "resp_1" and metered.model == "gpt-realtime-2025-08-28"
    assert m.server_frame(done("resp_1")) == []  # a repeated response.done is not charged again


def test_missing_usage_is_estimated_from_audio_that_flowed():
    m = SessionMeter("realtime", model="gpt-realtime")
    chunk = base64.b64encode(b"\0" * 48_000).decode()  # one second of 24 kHz PCM16
    m.client_frame(ev(type="input_audio_buffer.append", audio=chunk))
    m.server_frame(ev(type="response.created", response={"id": "r"}))
    m.server_frame(ev(type="response.output_audio.delta", delta=chunk))
    [metered] = m.server_frame(done("r", usage=None))
    assert metered.usage.estimated and "usage_missing" in metered.usage.flags
    assert metered.usage.audio_input in (9, 10) and metered.usage.audio_output in (19, 20)


def test_live_cumulative_seconds_are_charged_as_increases():
    m = SessionMeter("live", model="gpt-live")
    charged = []
    for total in ("1.5", "3.0", "3.0", "4.5"):
        charged += m.server_frame(ev(type="session.usage.updated", usage={"seconds": total}))
    assert [c.usage.seconds for c in charged] == [Decimal("1.5"), Decimal("1.5"), Decimal("1.5")]
    assert sum(c.usage.seconds for c in charged) == Decimal("4.5")


def test_live_delegated_responses_usage_charged_once_at_backend_model():
    m = SessionMeter("live", model="gpt-live-1")
    delta = ev(type="response.event", delegation_id="d1",
               event={"type": "response.output_text.delta", "delta": "hi"})
    assert m.server_frame(delta) == []
    completed = ev(type="response.event", delegation_id="d1", event={
        "type": "response.completed",
        "response": {"id": "resp_9", "model": "gpt-5-mini", "usage": {
            "input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 10}}}})
    [metered] = m.server_frame(completed)
    assert (metered.model, metered.kind, metered.response_id) == ("gpt-5-mini", "delegated",
                                                                  "resp_9")
    assert (metered.usage.input, metered.usage.cached_input, metered.usage.output) == (60, 40, 30)
    assert m.server_frame(completed) == []


def test_transcription_usage_priced_with_the_transcription_model():
    m = SessionMeter("realtime")
    m.server_frame(ev(type="session.updated", session={
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}))
    [metered] = m.server_frame(ev(
        type="conversation.item.input_audio_transcription.completed", item_id="item_1",
        transcript="hi", usage={"type": "tokens", "input_tokens": 20, "output_tokens": 3,
                                "input_token_details": {"text_tokens": 0, "audio_tokens": 20}}))
    assert metered.model == "gpt-4o-transcribe" and metered.kind == "transcription"
    assert (metered.usage.audio_input, metered.usage.output) == (20, 3)


@pytest.mark.parametrize("frame", [
    "", "[]", "{", '{"type": 5}', ev(type="response.done", response="nope"),
    ev(type="response.done", response={"usage": {"input_tokens": -5, "output_tokens": "x"}}),
    ev(type="session.usage.updated", usage={"seconds": "NaN"}),
    ev(type="session.usage.updated", usage={"seconds": -3}),
])
def test_hostile_frames_never_raise_or_charge_negative(frame):
    m = SessionMeter("realtime", model="gpt-realtime")
    for metered in m.server_frame(frame):
        assert all(v >= 0 for v in metered.usage.tokens().values())
        assert metered.usage.seconds >= 0


def test_tool_calls_counted_from_response_done_and_live_events_once():
    m = SessionMeter("realtime", model="gpt-realtime")
    done = {"type": "response.done", "response": {"id": "resp_1", "output": [
        {"type": "function_call", "name": "a"}, {"type": "message"}, {"type": "mcp_call"},
        "junk", {"type": "function_call_output"}]}}
    m.server_frame(orjson.dumps(done).decode())
    m.server_frame(orjson.dumps(done).decode())  # a repeated response.done counts once
    assert m.tool_calls == 2
    live = SessionMeter("live", model="gpt-live-1")
    live.server_frame(orjson.dumps({"type": "session.tool_call",
                                    "calls": [{"name": "a"}, {"name": "b"}]}).decode())
    live.server_frame(orjson.dumps({"type": "session.tool_call", "name": "c"}).decode())
    assert live.tool_calls == 3


# -- the Responses WebSocket meter ---------------------------------------------------

from faregate.proxy.meter import ResponsesSocketMeter  # noqa: E402

WS_USAGE = {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 20},
            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 5},
            "total_tokens": 150}


def ws_response(rid: str, usage=WS_USAGE, status="completed", output=()) -> dict:
    return {"id": rid, "object": "response", "status": status, "model": "gpt-4o-2024-08-06",
            "service_tier": "default", "output": list(output), "usage": usage}


def test_socket_meter_charges_each_response_once_from_its_terminal_event():
    m = ResponsesSocketMeter(load_price_table())
    m.client_frame(ev(type="response.create", model="gpt-4o", input="hello"))
    assert m.server_frame(ev(type="response.created", response=ws_response("r1", None,
                                                                          "in_progress"))) == []
    assert m.busy
    assert m.server_frame(ev(type="response.output_text.delta", delta="Hi there")) == []
    [charge] = m.server_frame(ev(type="response.completed", response=ws_response("r1")))
    assert (charge.response_id, charge.model) == ("r1", "gpt-4o-2024-08-06")
    assert (charge.usage.input, charge.usage.cached_input, charge.usage.output) == (100, 20, 30)
    assert not m.busy and m.responses == 1
    assert m.server_frame(ev(type="response.completed", response=ws_response("r1"))) == []


@pytest.mark.parametrize("terminal", ["response.incomplete", "response.failed"])
def test_socket_meter_settles_incomplete_and_failed_responses_to_what_they_report(terminal):
    m = ResponsesSocketMeter(load_price_table())
    [charge] = m.server_frame(ev(type=terminal, response=ws_response("r2")))
    assert charge.usage.output == 30


def test_socket_meter_counts_hosted_tools_and_estimates_the_unfinished():
    m = ResponsesSocketMeter(load_price_table())
    image = {"type": "image_generation_call", "id": "ig_1", "quality": "low",
             "size": "1024x1024", "status": "completed"}
    [charge] = m.server_frame(ev(type="response.completed",
                                 response=ws_response("r3", output=[image])))
    assert charge.usage.tool_calls == (("image_generation:low:1024x1024", 1),)
    m.client_frame(ev(type="response.create", model="gpt-4o", input="x" * 400))
    m.server_frame(ev(type="response.created", response=ws_response("r4", None, "in_progress")))
    m.server_frame(ev(type="response.output_text.delta", delta="abcdef"))
    [left] = m.unfinished()
    assert left.usage.estimated and "cut_short" in left.usage.flags
    assert left.usage.output >= 6 and left.usage.input >= 200


def test_socket_meter_reads_the_real_top_level_type():
    m = ResponsesSocketMeter(load_price_table())
    event = m.client_frame('{"metadata": {"type": "x"}, "type": "response.create", '
                           '"model": "gpt-5-pro"}')
    assert event.type == "response.create" and m.model == "gpt-5-pro"
# -- what sizing a session's next response needs (reservations) -------------------

@pytest.mark.parametrize("session, auto", [
    ({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}, True),
    ({"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "create_response": False}}}}, False),
    ({"type": "realtime", "audio": {"input": {"turn_detection": None}}}, False),
    ({"turn_detection": {"type": "server_vad", "create_response": True}}, True),  # beta shape
    ({"turn_detection": None}, False),
])
def test_the_meter_knows_when_the_server_answers_turns_itself(session, auto):
    m = SessionMeter("realtime")
    m.server_frame(ev(type="session.created", session={"id": "s", **session}))
    assert m.auto_responses is auto
    assert m.ga is (session.get("type") == "realtime")


def test_a_server_started_response_is_reported_once():
    m = SessionMeter("realtime")
    m.server_frame(ev(type="response.created", response={"id": "resp_9"}))
    assert m.started == "resp_9"
    m.server_frame(ev(type="response.output_text.delta", delta="hi"))
    assert m.started is None


def test_items_added_to_the_conversation_are_sized_until_the_next_response():
    m = SessionMeter("realtime", model="gpt-realtime")
    audio = base64.b64encode(b"\0" * 48_000).decode()  # one second: ~10 tokens
    m.client_frame(ev(type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "word " * 1000},
            {"type": "input_audio", "audio": audio}]}))
    assert 2500 <= m.added.text <= 2700 and m.added.audio == 10 and m.added.image == 0
    m.client_frame(ev(type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 9000}]}))
    assert m.added.image > 0 and m.added.text < 2800  # the image's bytes are not text
    m.server_frame(done("resp_1"))
    assert m.added.tokens == 0


def test_an_out_of_band_response_is_sized_from_its_own_input():
    m = SessionMeter("realtime")
    event = m.client_frame(ev(type="response.create", response={
        "conversation": "none", "input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "word " * 400}]}]}))
    assert event.inline is not None and 1000 <= event.inline.text <= 1200
    assert m.client_frame(ev(type="response.create")).inline is None
    response = {"object": "realtime.response", "id": "r", "status": "completed", "output": [],
                "conversation_id": None, "usage": RESPONSE_DONE_USAGE}
    m.server_frame(ev(type="response.done", response=response))
    assert m.out_of_band
    m.server_frame(ev(type="response.done", response={**response, "id": "r2",
                                                      "conversation_id": "conv_1"}))
    assert not m.out_of_band
