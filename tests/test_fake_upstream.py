"""The fake upstream speaks OpenAI well enough for the official SDK.

These tests point the SDK straight at the fake (no faregate in between), so a
failure here means the fixture, not the proxy, is wrong.
"""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from fake_upstream import (
    IMAGE_OUTPUT_TOKENS,
    SPEECH_BYTES_PER_CHAR,
    TRANSCRIPT,
    FakeUpstream,
    openai_error,
)


@pytest.fixture
async def fake_upstream():
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def aclient(fake_upstream):
    return openai.AsyncOpenAI(base_url=fake_upstream.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def client(fake_upstream):
    return openai.OpenAI(base_url=fake_upstream.url + "/v1", api_key="sk-test", max_retries=0)


HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
HELLO_PROMPT_TOKENS = 2 + 4 + 7


async def test_chat_completion(aclient, fake_upstream):
    out = await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)
    assert out.model == "gpt-4o-mini-2024-07-18"
    assert out.choices[0].message.content == "Echo: your last message was 15 characters long."
    assert out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
        HELLO_PROMPT_TOKENS, 5, HELLO_PROMPT_TOKENS + 5)
    assert out.usage.prompt_tokens_details.cached_tokens == 0
    assert out.usage.completion_tokens_details.reasoning_tokens == 0
    seen = fake_upstream.last_request
    assert (seen.method, seen.path, seen.api_key) == ("POST", "/v1/chat/completions", "sk-test")
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.json["max_tokens"] == 5


async def test_chat_cache_hit_and_unknown_model_echo(aclient):
    out = await aclient.chat.completions.create(model="my-finetune", messages=HELLO, user="cache-hit")
    assert out.model == "my-finetune"
    assert out.usage.completion_tokens == 20
    assert out.usage.prompt_tokens_details.cached_tokens == HELLO_PROMPT_TOKENS // 2


async def test_chat_stream_without_usage(aclient, fake_upstream):
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    chunks = [c async for c in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Echo: your last message was 15 characters long."
    assert "stream_options" not in fake_upstream.last_request.json


async def test_chat_stream_with_usage_sync_client(client, fake_upstream):
    def run():
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True})
        return stream.response.headers, list(stream)

    headers, chunks = await asyncio.to_thread(run)
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["x-request-id"].startswith("req_") and "openai-processing-ms" in headers
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == HELLO_PROMPT_TOKENS + 20
    assert all(c.usage is None for c in chunks[:-1])
    assert fake_upstream.last_request.json["stream_options"] == {"include_usage": True}


async def test_chat_stream_helper_accumulates(aclient):
    async with aclient.chat.completions.stream(
            model="gpt-4o-mini", messages=HELLO, stream_options={"include_usage": True}) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content.startswith("Echo:")
    assert final.usage.prompt_tokens == HELLO_PROMPT_TOKENS


async def test_responses(aclient):
    out = await aclient.responses.create(model="gpt-4o-mini", input="say hello to me", instructions="be brief")
    assert out.status == "completed" and out.model == "gpt-4o-mini-2024-07-18"
    assert out.output_text == "Echo: your last message was 15 characters long."
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.total_tokens) == (13, 20, 33)
    assert out.usage.input_tokens_details.cached_tokens == 0
    assert out.usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_stream(aclient, client):
    stream = await aclient.responses.create(model="gpt-4o-mini", input=HELLO, stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 5, "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.usage is None
    assert events[-1].response.usage.input_tokens == HELLO_PROMPT_TOKENS
    assert events[-1].response.usage.total_tokens == HELLO_PROMPT_TOKENS + 20

    def run():
        with client.responses.stream(model="gpt-4o", input="hi there") as s:
            return s.get_final_response()

    final = await asyncio.to_thread(run)
    assert final.output_text == "Echo: your last message was 8 characters long."
    assert final.usage.input_tokens == 9


async def test_embeddings(aclient, fake_upstream):
    out = await aclient.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert fake_upstream.last_request.json["encoding_format"] == "base64"  # the SDK's default
    assert [len(d.embedding) for d in out.data] == [1536, 1536]
    assert isinstance(out.data[0].embedding[0], float)
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (3, 3)

    floats = await aclient.embeddings.create(
        model="text-embedding-3-small", input=["one two", "three"], encoding_format="float", dimensions=64)
    assert len(floats.data[1].embedding) == 64
    assert floats.data[1].embedding == out.data[1].embedding[:64]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # audio.translations
async def test_transcriptions(aclient, fake_upstream):
    audio = ("speech.wav", b"\0" * 48_000, "audio/wav")
    whisper = await aclient.audio.transcriptions.create(model="whisper-1", file=audio)
    assert whisper.text == TRANSCRIPT
    assert (whisper.usage.type, whisper.usage.seconds) == ("duration", 3)
    form = fake_upstream.last_request.form
    assert form["model"] == "whisper-1" and form["file"].filename == "speech.wav"
    assert len(form["file"].data) == 48_000

    tokens = await aclient.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=audio, prompt="names: Ada Lovelace")
    assert tokens.usage.type == "tokens"
    assert tokens.usage.input_token_details.audio_tokens == 48
    assert tokens.usage.input_token_details.text_tokens == 3
    assert (tokens.usage.input_tokens, tokens.usage.output_tokens, tokens.usage.total_tokens) == (51, 9, 60)

    translated = await aclient.audio.translations.create(model="whisper-1", file=audio)
    assert translated.text == TRANSCRIPT
    assert fake_upstream.last_request.path == "/v1/audio/translations"

    verbose = await aclient.audio.transcriptions.create(model="whisper-1", file=audio,
                                                        response_format="verbose_json")
    assert verbose.duration == 3.0 and verbose.usage.seconds == 3
    assert await aclient.audio.transcriptions.create(model="whisper-1", file=audio,
                                                     response_format="text") == TRANSCRIPT + "\n"


async def test_speech(client):
    def run():
        return client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world")

    audio = await asyncio.to_thread(run)
    assert audio.response.headers["content-type"] == "audio/mpeg"
    assert len(audio.content) == len("Hello world") * SPEECH_BYTES_PER_CHAR


async def test_images(aclient):
    dalle = await aclient.images.generate(model="dall-e-3", prompt="a red fox")
    assert dalle.usage is None and dalle.data[0].url.startswith("https://")
    assert dalle.data[0].revised_prompt == "a red fox"

    image = await aclient.images.generate(model="gpt-image-1", prompt="a red fox", n=2, quality="low")
    assert len(image.data) == 2 and image.data[0].b64_json
    assert image.usage.input_tokens_details.text_tokens == 3
    assert image.usage.output_tokens == 2 * IMAGE_OUTPUT_TOKENS["1024x1024"]["low"]
    assert image.usage.total_tokens == 3 + 2 * 272


async def test_models(aclient):
    ids = [m.id async for m in aclient.models.list()]
    assert "gpt-4o-mini" in ids and "whisper-1" in ids


async def test_knobs_fail_next_usage_override_and_delay(aclient, fake_upstream):
    fake_upstream.fail_next.append((429, openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                                    {"retry-after": "1"}))
    with pytest.raises(openai.RateLimitError) as err:
        await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert err.value.code == "rate_limit_exceeded"

    fake_upstream.usage["/v1/chat/completions"] = {"prompt_tokens": 1000,
                                                   "completion_tokens_details": {"reasoning_tokens": 7}}
    out = await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (1000, 1020)
    assert out.usage.completion_tokens_details.reasoning_tokens == 7
    assert out.usage.completion_tokens_details.audio_tokens == 0

    fake_upstream.usage["/v1/chat/completions"] = None
    assert (await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO)).usage is None

    fake_upstream.delay_s = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    await aclient.models.list()
    assert loop.time() - started >= 0.2


async def test_auth_and_unknown_paths(fake_upstream):
    async with aiohttp.ClientSession() as http:
        async with http.post(fake_upstream.url + "/v1/chat/completions", json={"model": "x"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        headers = {"Authorization": "Bearer sk-test"}
        async with http.post(fake_upstream.url + "/v1/nope", headers=headers, json={}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "Invalid URL (POST /v1/nope)"
        fake_upstream.valid_keys = {"sk-real"}
        async with http.get(fake_upstream.url + "/v1/models", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_api_key"
    assert [r.api_key for r in fake_upstream.requests] == [None, "sk-test", "sk-test"]


async def test_azure_mode_serves_the_v1_api_under_openai_with_api_key():
    async with FakeUpstream(azure_deployments={"my-mini": "gpt-4o-mini"}) as fake:
        base = fake.url + "/openai/v1"
        keyed = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0,
                                   default_headers={"api-key": "azure-key"})
        bearer = openai.AsyncOpenAI(base_url=base, api_key="azure-key", max_retries=0)
        plain = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0,
                                   default_headers={"api-key": "azure-key"})
        try:
            chat = await keyed.chat.completions.create(
                model="my-mini", messages=[{"role": "user", "content": "hi"}])
            assert chat.model == "gpt-4o-mini-2024-07-18" and chat.usage.prompt_tokens == 8
            assert fake.last_request.path == "/openai/v1/chat/completions"
            with pytest.raises(openai.NotFoundError) as missing:
                await keyed.chat.completions.create(model="gpt-4o-mini", messages=[])
            assert missing.value.code == "DeploymentNotFound"
            with pytest.raises(openai.AuthenticationError):
                await bearer.models.list()
            with pytest.raises(openai.NotFoundError):
                await plain.models.list()
        finally:
            for client in (keyed, bearer, plain):
                await client.close()
