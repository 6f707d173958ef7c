"""The REST metering path end to end: the official SDK through faregate.

Each test asserts what a user sees: the SDK result (identical to going
direct), the ledger row with its exact cost, and the metrics.
"""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal

import openai
import orjson
import pytest

from fake_upstream import IMAGE_OUTPUT_TOKENS, SPEECH_BYTES_PER_CHAR, openai_error

M = Decimal(1_000_000)
NANO = Decimal("1e-9")

# Exact prices from config, so expected costs do not depend on the shipped table.
PRICES = {
    "pricing": {
        "models": {
            "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"},
            "gpt-4.1": {"input": "2", "cached_input": "0.5", "output": "8"},
            "text-embedding-3-small": {"input": "0.02"},
            "whisper-1": {"per_minute": "0.006"},
            "gpt-4o-transcribe": {"input": "2.5", "audio_input": "6", "output": "10"},
            "tts-1": {"per_1k_chars": "15"},
            "dall-e-3": {"per_image": "0.04"},
            "gpt-image-1": {"input": "5", "image_input": "10", "output": "10",
                            "image_output": "40"},
        }
    }
}

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
HELLO_PROMPT = 2 + 4 + 7  # the fake's formula: words + 7


def strip_volatile(obj):
    """Drop fields that differ between any two calls (ids, timestamps)."""
    if isinstance(obj, dict):
        return {
            k: strip_volatile(v)
            for k, v in obj.items()
            if k not in ("id", "created", "created_at", "item_id", "completed_at")
        }
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def cost_of(row) -> Decimal:
    return Decimal(row.cost_nanos) * NANO


@pytest.fixture
async def gw(make_gateway):
    return await make_gateway(PRICES)


async def test_chat_same_result_as_direct_and_exact_cost(gw, direct):
    via = await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    straight = await direct.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert strip_volatile(via.model_dump()) == strip_volatile(straight.model_dump())

    [row] = await gw.ledger_rows(1)
    assert (row.tenant, row.model, row.endpoint, row.status) == (
        "default", "gpt-4o-mini-2024-07-18", "/v1/chat/completions", 200)
    assert row.tokens["input"] == HELLO_PROMPT and row.tokens["output"] == 20
    assert cost_of(row) == HELLO_PROMPT * Decimal("0.15") / M + 20 * Decimal("0.60") / M
    assert row.priced and not row.estimated
    assert row.request_id.startswith("fg_")
    assert row.key_id and "sk-test" not in row.key_id


async def test_response_carries_request_id_of_ledger_row(gw):
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    rid = raw.headers["x-faregate-request-id"]
    assert raw.headers["x-request-id"].startswith("req_")  # upstream headers kept
    [row] = await gw.ledger_rows(1)
    assert row.request_id == rid


async def test_cached_tokens_priced_at_cached_rate(gw):
    await gw.client().chat.completions.create(model="gpt-4.1", messages=HELLO, user="cache-hit")
    [row] = await gw.ledger_rows(1)
    cached = HELLO_PROMPT // 2
    assert row.tokens["cached_input"] == cached
    assert row.tokens["input"] == HELLO_PROMPT - cached
    expected = ((HELLO_PROMPT - cached) * 2 + cached * Decimal("0.5") + 20 * 8) / M
    assert cost_of(row) == expected
    assert row.user == "cache-hit"  # the body's `user` names the end user


async def test_sync_client_works_too(gw):
    client = gw.sync_client()
    out = await asyncio.to_thread(
        client.chat.completions.create, model="gpt-4o-mini", messages=HELLO, max_tokens=3
    )
    assert out.usage.completion_tokens == 3
    [row] = await gw.ledger_rows(1)
    assert row.tokens["output"] == 3


async def test_stream_without_usage_is_metered_and_client_sees_no_usage_chunk(
    gw, direct, upstream
):
    via = [c async for c in await gw.client().chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True)]
    forwarded = upstream.last_request.json
    assert forwarded["stream_options"] == {"include_usage": True}  # faregate asked for it
    straight = [c async for c in await direct.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True)]
    assert [strip_volatile(c.model_dump()) for c in via] == [
        strip_volatile(c.model_dump()) for c in straight]
    assert all(c.usage is None for c in via)
    assert all(c.choices for c in via)

    [row] = await gw.ledger_rows(1)
    assert row.tokens["input"] == HELLO_PROMPT and row.tokens["output"] == 20
    assert cost_of(row) == HELLO_PROMPT * Decimal("0.15") / M + 20 * Decimal("0.60") / M


async def test_stream_with_usage_passes_the_usage_chunk(gw, upstream):
    chunks = [c async for c in await gw.client().chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True,
        stream_options={"include_usage": True})]
    assert upstream.last_request.json["stream_options"] == {"include_usage": True}
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == HELLO_PROMPT
    [row] = await gw.ledger_rows(1)
    assert row.tokens["output"] == 20


async def test_stream_is_not_buffered(gw, upstream):
    """The first chunk reaches the client long before the stream ends."""
    upstream.chunk_delay_s = 0.2
    stream = await gw.client().chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first_at = None
    async for _ in stream:
        if first_at is None:
            first_at = loop.time() - t0
    total = loop.time() - t0
    assert first_at is not None and total > 1.0
    assert first_at < total / 3


async def test_responses_api_non_stream_and_stream(gw, direct):
    via = await gw.client().responses.create(model="gpt-4.1", input="tell me a joke")
    straight = await direct.responses.create(model="gpt-4.1", input="tell me a joke")
    assert strip_volatile(via.model_dump()) == strip_volatile(straight.model_dump())

    events = [e async for e in await gw.client().responses.create(
        model="gpt-4.1", input="tell me a joke", stream=True)]
    assert events[-1].type == "response.completed"

    rows = await gw.ledger_rows(2)
    assert len(rows) == 2
    for row in rows:
        assert row.endpoint == "/v1/responses"
        assert (row.tokens["input"], row.tokens["output"]) == (4 + 7, 20)
        assert cost_of(row) == (11 * 2 + 20 * 8) / M


async def test_embeddings_base64_identical(gw, direct):
    via = await gw.client().embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    straight = await direct.embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    assert via.data[0].embedding == straight.data[0].embedding
    assert len(via.data[1].embedding) == 1536
    [row] = await gw.ledger_rows(1)
    assert row.tokens["input"] == 4
    assert cost_of(row) == 4 * Decimal("0.02") / M


async def test_transcriptions_by_duration_and_by_tokens(gw, upstream):
    audio = bytes(range(256)) * 250  # 64,000 bytes: the fake bills 4 s / 64 audio tokens
    whisper = await gw.client().audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio, "audio/wav"))
    assert whisper.text
    assert upstream.last_request.form["file"].data == audio  # the upload arrived intact
    tokens = await gw.client().audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", audio, "audio/wav"))
    assert tokens.usage.input_tokens == 64

    rows = {r.model: r for r in await gw.ledger_rows(2)}
    w = rows["whisper-1"]
    assert w.seconds == Decimal(4)
    assert w.cost_nanos == 400_000  # 4 s = 1/15 min x $0.006 = $0.0004
    t = rows["gpt-4o-transcribe"]
    assert t.tokens["audio_input"] == 64 and t.tokens["output"] == 9
    assert cost_of(t) == (64 * 6 + 9 * 10) / M


async def test_large_upload_streams_through(gw, upstream):
    audio = b"\x01" * (3 * 1024 * 1024)
    out = await gw.client().audio.transcriptions.create(
        model="whisper-1", file=("big.wav", audio, "audio/wav"))
    assert out.text
    assert upstream.last_request.form["file"].data == audio
    [row] = await gw.ledger_rows(1)
    assert row.seconds == Decimal(len(audio) // 16000)


async def test_speech_binary_identical_and_priced_by_characters(gw, direct):
    text = "Hello there, general listener."
    via = await gw.client().audio.speech.create(model="tts-1", voice="alloy", input=text)
    straight = await direct.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert via.content == straight.content
    assert len(via.content) == len(text) * SPEECH_BYTES_PER_CHAR
    [row] = await gw.ledger_rows(1)
    assert row.characters == len(text)
    assert cost_of(row) == len(text) * Decimal(15) / 1000


async def test_speech_sse_is_priced_from_the_usage_the_upstream_reports(gw, upstream):
    """gpt-4o-mini-tts streams `speech.audio.done` with its token usage: that is the bill
    (shipped rates: input $0.60, audio output $12 per 1M), not a characters estimate."""
    upstream.usage["/v1/audio/speech"] = {"input_tokens": 900, "output_tokens": 2000}
    text = "Hello there, general listener."
    via = await gw.client().audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=text, stream_format="sse")
    events = [orjson.loads(line[5:]) for line in via.content.splitlines()
              if line.startswith(b"data:")]
    assert events[-1]["type"] == "speech.audio.done" and len(events) > 2
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(audio) == len(text) * SPEECH_BYTES_PER_CHAR  # relayed whole
    [row] = await gw.ledger_rows(1)
    assert (row.tokens["input"], row.tokens["audio_output"]) == (900, 2000)
    assert cost_of(row) == Decimal("0.02454")  # 900 x 0.60 + 2,000 x 12.00, per 1M
    assert row.priced and not row.estimated and row.characters == len(text)


async def test_speech_of_a_token_billed_model_from_config_is_charged(make_gateway, upstream):
    """A TTS model priced per token in `[pricing.models]` is charged from its reported
    usage when it streams, and estimated (never $0 "priced") when it cannot report."""
    rates = {"input": "1", "audio_output": "20"}
    gw = await make_gateway({"pricing": {"models": {"my-tts": rates}}})
    upstream.usage["/v1/audio/speech"] = {"input_tokens": 900, "output_tokens": 2000}
    text = "Hello there, general listener."  # 30 characters
    await gw.client().audio.speech.create(
        model="my-tts", voice="alloy", input=text, stream_format="sse")
    [row] = await gw.ledger_rows(1)
    assert cost_of(row) == (900 * 1 + 2000 * 20) / M
    assert row.priced and not row.estimated and "rate_missing" not in row.flags
    await gw.client().audio.speech.create(model="my-tts", voice="alloy", input=text)
    rows = await gw.ledger_rows(2)
    binary = rows[0]  # newest first: no usage in an audio body, so the text is estimated
    assert binary.estimated and binary.priced and "rate_missing" not in binary.flags
    assert binary.tokens["input"] == 8 and cost_of(binary) == 8 * Decimal(1) / M  # ceil(30 / 4)


async def test_images_per_image_and_token_billed(gw):
    d3 = await gw.client().images.generate(model="dall-e-3", prompt="a red fox", n=1)
    assert d3.data[0].url or d3.data[0].b64_json
    gi = await gw.client().images.generate(
        model="gpt-image-1", prompt="a red fox", size="1024x1024", quality="low")
    assert gi.usage.output_tokens == IMAGE_OUTPUT_TOKENS["1024x1024"]["low"]

    rows = {r.model: r for r in await gw.ledger_rows(2)}
    assert rows["dall-e-3"].images == 1
    assert cost_of(rows["dall-e-3"]) == Decimal("0.04")
    g = rows["gpt-image-1"]
    assert g.tokens["input"] == 3 and g.tokens["image_output"] == 272
    assert cost_of(g) == (3 * 5 + 272 * 40) / M


@pytest.mark.parametrize("status, exc", [(400, openai.BadRequestError),
                                         (500, openai.InternalServerError)])
async def test_upstream_errors_pass_through_untouched_at_zero_cost(
    gw, direct, upstream, status, exc
):
    body = openai_error("That model is sleeping.", "invalid_request_error", "model_sleeping")
    upstream.fail_next = [(status, body), (status, body)]
    with pytest.raises(exc) as via:
        await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(exc) as straight:
        await direct.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert via.value.status_code == status
    assert via.value.body == body["error"]
    assert via.value.response.content == straight.value.response.content  # byte for byte
    [row] = await gw.ledger_rows(1)
    assert row.status == status and row.cost_nanos == 0


async def test_upstream_down_is_502_in_openai_shape(make_gateway, tmp_path):
    from conftest import gateway_config, start_gateway
    from faregate.proxy import parse_settings

    settings = parse_settings(gateway_config("http://127.0.0.1:9", tmp_path))
    gw = await start_gateway(settings)
    try:
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert info.value.status_code == 502
        assert info.value.body["code"] == "upstream_unavailable"
        assert info.value.body["type"] == "api_error"
        [row] = await gw.ledger_rows(1)
        assert row.status == 502 and row.cost_nanos == 0
    finally:
        await gw.stop()


async def test_upstream_slow_headers_is_504(make_gateway, upstream):
    gw = await make_gateway({"server": {"response_timeout_s": 0.2}})
    upstream.delay_s = 1.0
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"


async def test_unknown_model_recorded_unpriced_and_flagged(gw):
    await gw.client().chat.completions.create(model="my-mystery-model", messages=HELLO)
    [row] = await gw.ledger_rows(1)
    assert row.model == "my-mystery-model"
    assert not row.priced and row.cost_nanos == 0
    assert row.tokens["input"] == HELLO_PROMPT  # usage is still kept
    metrics = await gw.metrics_text()
    assert 'faregate_unpriced_requests_total{model="my-mystery-model",tenant="default"} 1.0' \
        in metrics


async def test_unknown_model_rejected_when_configured(make_gateway, upstream):
    gw = await make_gateway({"pricing": {"unknown_model": "reject"}})
    with pytest.raises(openai.PermissionDeniedError) as info:
        await gw.client().chat.completions.create(model="my-mystery-model", messages=HELLO)
    assert info.value.body["code"] == "model_not_priced"
    assert upstream.requests == []  # never forwarded
    # a priced model still goes through
    await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)


async def test_body_too_large_is_413(make_gateway, upstream):
    gw = await make_gateway({"server": {"max_body_bytes": 1000}})
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 5000}])
    assert info.value.status_code == 413
    assert info.value.body["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().audio.transcriptions.create(
            model="whisper-1", file=("a.wav", b"\0" * 5000, "audio/wav"))
    assert info.value.status_code == 413
    assert upstream.requests == []


async def test_metrics_show_requests_tokens_and_cost(gw):
    for _ in range(3):
        await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(3)
    text = await gw.metrics_text()
    labels = 'endpoint="/v1/chat/completions",model="gpt-4o-mini",status="200",tenant="default"'
    assert f"faregate_requests_total{{{labels}}} 3.0" in text
    assert ('faregate_tokens_total{kind="input",model="gpt-4o-mini",tenant="default"} '
            f"{3 * HELLO_PROMPT}.0") in text
    expected = 3 * (HELLO_PROMPT * Decimal("0.15") + 20 * Decimal("0.60")) / M
    line = next(l for l in text.splitlines() if l.startswith("faregate_cost_usd_total{"))
    assert Decimal(line.rsplit(" ", 1)[1]) == pytest.approx(expected)
    assert 'faregate_ledger_records_total{result="written"} 3.0' in text
    assert "faregate_upstream_latency_seconds_count" in text
    assert "faregate_proxy_overhead_seconds_count" in text


async def test_other_paths_are_forwarded_unmetered(gw):
    models = await gw.client().models.list()
    assert [m.id async for m in models]
    await asyncio.sleep(0.05)
    assert await gw.state.ledger.logs(limit=10) == []
    text = await gw.metrics_text()  # free: in neither the report nor the request count
    assert not [line for line in text.splitlines()
                if line.startswith("faregate_requests_total{") and 'endpoint="other"' in line]


async def test_client_disconnect_mid_stream_records_estimate(gw, upstream):
    upstream.chunk_delay_s = 0.1
    client = gw.client()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True)
    async for _ in stream:
        break
    await stream.close()
    [row] = await gw.ledger_rows(1)
    assert row.estimated and "cut_short" in row.flags
    assert row.tokens["input"] > 0 and row.cost_nanos > 0


async def test_health_and_ready(gw):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/healthz") as r:
            assert r.status == 200
        async with s.get(gw.url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ready"
