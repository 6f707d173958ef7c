"""Hostile input, generated: request bodies, headers and paths, WebSocket frames,
upstream usage reports and config files — faregate must never crash, never blame
the client's mistake on itself with a 5xx, never mis-price, and reject bad
config with a key path.

CI runs a small deterministic profile (a few hundred cases per target). The
dedicated run generates 10,000 cases per target:

    FAREGATE_FUZZ=1 .venv/bin/python -m pytest tests/test_hostile_input.py
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import threading
from decimal import Decimal

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import gateway_config, start_gateway
from faregate.pricing import Usage, cost_of, load_price_table, price, usage_for_endpoint
from faregate.pricing._text_usage import _chat_quick, _chat_read, _responses_quick, _responses_read
from faregate.proxy import parse_settings
from faregate.proxy import ConfigError, load_settings

SHIPPED = load_price_table()  # pricing calls name their table: there is no default

FUZZ = os.environ.get("FAREGATE_FUZZ") == "1"
settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = "fuzz" if FUZZ else "ci"
NET = settings(settings.get_profile(PROFILE),
               max_examples=10_000 if FUZZ else 150)  # each case is a real HTTP exchange

# -- strategies ----------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)

USAGE_KEYS = ["prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
              "output_tokens", "cached_tokens", "audio_tokens", "text_tokens", "image_tokens",
              "reasoning_tokens", "seconds", "type", "prompt_tokens_details",
              "completion_tokens_details", "input_tokens_details", "output_tokens_details",
              "input_token_details", "output_token_details", "cached_tokens_details"]
shaped_usage = st.recursive(
    st.one_of(scalars, st.integers(min_value=0, max_value=10**7)),
    lambda inner: st.dictionaries(st.sampled_from(USAGE_KEYS), inner, max_size=6),
    max_leaves=25)

KINDS = ["chat", "completions", "responses", "embeddings", "realtime", "transcription",
         "speech", "images"]
MODELS = ["gpt-4o-mini", "gpt-5", "gpt-realtime", "whisper-1", "gpt-image-1", "no-such-model",
          "gpt-4o-mini-2031-01-01"]


def check_charge(charge) -> None:
    assert isinstance(charge.cost, Decimal) and charge.cost.is_finite() and charge.cost >= 0
    assert all(v >= 0 for v in charge.breakdown.values())
    assert sum(charge.breakdown.values(), Decimal(0)) == charge.cost
    assert charge.cost_nanos >= 0


# -- upstream usage reports -------------------------------------------------------

@settings(settings.get_profile(PROFILE))
@given(kind=st.sampled_from(KINDS), raw=st.one_of(shaped_usage, json_values),
       model=st.sampled_from(MODELS))
def test_any_usage_report_prices_to_an_exact_non_negative_charge(kind, raw, model):
    usage = usage_for_endpoint(kind, raw, table=SHIPPED)
    check_charge(price(usage, model, None, SHIPPED))


def _reports(draw_counts, spoil) -> list[dict]:
    """A chat and a Responses report with consistent counts, one field maybe spoiled."""
    a, b, c, d, e = draw_counts
    chat = {"prompt_tokens": a + b + c, "completion_tokens": d + e,
            "prompt_tokens_details": {"cached_tokens": b, "audio_tokens": c},
            "completion_tokens_details": {"reasoning_tokens": d, "audio_tokens": e}}
    resp = {"input_tokens": a + b, "output_tokens": d + e,
            "input_tokens_details": {"cached_tokens": b},
            "output_tokens_details": {"reasoning_tokens": d}}
    if spoil is not None:
        (where, key), value = spoil
        for report in (chat, resp):
            target = report.get(where, report) if where else report
            if isinstance(target, dict):
                target[key] = value
    return [chat, resp]


SPOILED_FIELDS = [(None, "prompt_tokens"), (None, "input_tokens"), (None, "output_tokens"),
                  (None, "completion_tokens"), ("prompt_tokens_details", "cached_tokens"),
                  ("prompt_tokens_details", "audio_tokens"),
                  ("completion_tokens_details", "reasoning_tokens"),
                  ("completion_tokens_details", "audio_tokens"),
                  ("input_tokens_details", "cached_tokens"),
                  ("output_tokens_details", "reasoning_tokens"),
                  (None, "prompt_tokens_details"), (None, "output_tokens_details")]
SPOILED_VALUES = [None, True, -1, 0, 2.0, 10**13, "7", [], {}, 999_999]


@settings(settings.get_profile(PROFILE))
@given(raw=shaped_usage, counts=st.lists(st.integers(0, 5000), min_size=5, max_size=5))
def test_quick_usage_reading_agrees_with_the_careful_one(raw, counts):
    """The fast path for well-formed chat/Responses reports must give what the
    field-by-field reader gives, or step aside: on random shapes, and on
    consistent reports with each field spoiled in each way."""
    reports = [raw, *_reports(counts, None)]
    for spoil in itertools.product(SPOILED_FIELDS, SPOILED_VALUES):
        reports += _reports(counts, spoil)
    for report in reports:
        for quick, careful in ((_chat_quick, _chat_read), (_responses_quick, _responses_read)):
            fast = quick(report)
            if fast is not None:
                assert fast == careful(report)


def test_quick_usage_reading_takes_the_common_reports():
    assert _chat_quick({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                        "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 3}}) is not None
    assert _responses_quick({"input_tokens": 9, "output_tokens": 4,
                             "input_tokens_details": {"cached_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 1}}) is not None


HUGE = st.integers(min_value=10**12 + 1, max_value=10**40)
hostile_tiers = st.one_of(
    st.none(), st.text(max_size=40), st.text(min_size=33, max_size=120),
    st.sampled_from(["priority", "flex", "batch", "default", "auto", " Priority ", "FLEX",
                     "__class__", "\u0130", "flex\x00"]),
    st.integers(), st.booleans(), st.just(["flex"]))
tool_keys = st.one_of(
    st.text(max_size=20), st.text(min_size=97, max_size=150),
    st.sampled_from(["web_search", "file_search", "code_interpreter:64g", ":", "web_search:"]),
    st.integers(), st.none())
tool_counts = st.one_of(st.integers(-10, 10), HUGE, st.booleans(), st.floats(),
                        st.text(max_size=3), st.none())
tool_items = st.one_of(st.tuples(tool_keys, tool_counts), st.tuples(tool_keys),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2), st.none())
hostile_calls = st.one_of(st.lists(tool_items, max_size=5).map(tuple),
                          st.lists(tool_items, max_size=3), st.text(max_size=5), st.none())
hostile_counts = st.one_of(st.integers(0, 10**6), st.integers(-(10**15), 10**15), HUGE,
                           st.booleans(), st.floats(), st.decimals(allow_nan=True),
                           st.text(max_size=4), st.none())
COUNT_FIELDS = ["input", "cached_input", "output", "audio_input", "cached_audio_input",
                "audio_output", "image_input", "cached_image_input", "image_output",
                "reasoning", "characters", "images"]


def _clean_calls(calls) -> bool:
    return isinstance(calls, tuple) and all(
        isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) and 0 < len(c[0]) <= 96
        and isinstance(c[1], int) and not isinstance(c[1], bool) and 0 < c[1] for c in calls)


@settings(settings.get_profile(PROFILE))
@given(tier=hostile_tiers, calls=hostile_calls,
       counts=st.fixed_dictionaries({}, optional={k: hostile_counts for k in COUNT_FIELDS}),
       seconds=st.one_of(st.just(Decimal(0)), st.decimals(allow_nan=True),
                         st.integers(-(10**9), 10**9), st.floats(), st.text(max_size=5),
                         st.none()),
       model=st.sampled_from(MODELS + ["dall-e-3", "tts-1", "gpt-5.4"]))
def test_any_hand_built_usage_is_cleaned_flagged_and_reserved_alike(tier, calls, counts,
                                                                    seconds, model):
    """Every field of a hand-built `Usage` hostile at once: the charge is exact and
    non-negative, anything bad is flagged, and a reservation (`cost_of`, which has its
    own quick path) costs exactly what `price()` charges."""
    u = Usage(service_tier=tier, tool_calls=calls, seconds=seconds, **counts)
    charge = price(u, model, None, SHIPPED)
    check_charge(charge)
    bad_count = any(isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 10**12
                    for v in counts.values())
    bad_tier = tier is not None and not (isinstance(tier, str) and 0 < len(tier.strip()) <= 32)
    if bad_count or bad_tier or (calls != () and not _clean_calls(calls)):
        assert "usage_malformed" in charge.usage.flags, (counts, tier, calls)
    assert _clean_calls(charge.usage.tool_calls)
    assert cost_of(u, model, None, SHIPPED) == charge.cost


def test_hand_built_usage_with_no_tool_tuple_is_flagged_not_a_crash():
    """A `Usage` built by hand with `tool_calls=None` (not a tuple): cleaned and flagged."""
    for model in ("gpt-4o-mini", "no-such-model"):
        charge = price(Usage(input=1, tool_calls=None), model, None, SHIPPED)  # type: ignore[arg-type]
        assert charge.usage.tool_calls == () and "usage_malformed" in charge.usage.flags


def test_blank_or_absurd_tiers_are_dropped_and_flagged():
    for tier in ("", "   ", "\t\n", "x" * 33):
        charge = price(Usage(input=1, service_tier=tier), "gpt-4o-mini", None, SHIPPED)
        assert charge.usage.service_tier is None and "usage_malformed" in charge.usage.flags
    charge = price(Usage(input=1, service_tier=" Flex "), "gpt-4o-mini", None, SHIPPED)
    assert charge.usage.service_tier == "flex" and charge.usage.flags == ()


@settings(settings.get_profile(PROFILE))
@given(tier=st.one_of(st.none(), st.text(max_size=60), st.sampled_from(
           ["priority", "fast", "flex", "batch", "scale", "ultrafast", "DEFAULT"])),
       calls=st.lists(st.tuples(st.one_of(st.text(max_size=120), st.sampled_from(
           ["web_search", "file_search", "code_interpreter:4g",
            "image_generation:high:1024x1536"])), st.integers(-10, 10**9)), max_size=5),
       counts=st.lists(st.integers(-(10**15), 10**15), min_size=3, max_size=3),
       model=st.sampled_from(MODELS))
def test_hostile_tiers_and_tool_calls_never_mis_price(tier, calls, counts, model):
    u = Usage(input=counts[0], cached_input=counts[1], output=counts[2], service_tier=tier,
              tool_calls=tuple(calls))
    charge = price(u, model, None, SHIPPED)
    check_charge(charge)
    if any(n < 0 for n in counts) or any(n <= 0 for _, n in calls):
        assert "usage_malformed" in charge.usage.flags


# -- config files ---------------------------------------------------------------

SECTIONS = {
    "server": ["listen", "upstream", "max_body_bytes", "connect_timeout_s", "allowed_origins"],
    "storage": ["url", "flush_interval_ms", "batch_size", "journal_dir"],
    "identity": ["mode", "allow_header_identity"],
    "tiers": ["free", "pro"],
    "tenants": ["acme", "beta"],
    "pricing": ["unknown_model", "models"],
    "alerts": ["thresholds", "webhook_url"],
    "upstream_limits": ["rpm", "tpm", "max_concurrent_sessions"],
    "capture": ["key_env", "retention_days"],
    "bogus": ["x"],
}
config_docs = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)),
    st.one_of(json_values, st.fixed_dictionaries({}, optional={
        k: json_values for k in sum(SECTIONS.values(), [])})),
    max_size=4)


@settings(settings.get_profile(PROFILE))
@given(doc=config_docs)
def test_bad_config_is_rejected_with_key_paths(doc):
    try:
        parse_settings(doc)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.message
            # a problem inside a section names where it is
            if problem.path:
                assert problem.path.split(".")[0].split("[")[0] in doc or \
                    problem.path.split(".")[0] in SECTIONS or problem.path


@settings(settings.get_profile(PROFILE))
@given(text=st.text(max_size=300))
def test_any_config_text_loads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "f.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except ConfigError as exc:
        assert exc.problems and all(p.message for p in exc.problems)


# -- client requests against a running faregate ------------------------------------

class Background:
    """faregate and a never-failing upstream on a loop in another thread."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tmp_path = tmp_path

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            await request.read()
            return web.json_response({
                "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", answer)
        self.up = web.AppRunner(app, access_log=None)
        await self.up.setup()
        site = web.TCPSite(self.up, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config = gateway_config(f"http://127.0.0.1:{port}", self.tmp_path, {
            "identity": {"allow_header_identity": True},
            "server": {"max_body_bytes": 1_000_000}})
        self.gw = await start_gateway(parse_settings(config))

    async def stop(self) -> None:
        await self.gw.stop()
        await self.up.cleanup()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    bg = Background(tmp_path_factory.mktemp("hostile"))
    bg.run(bg.start())
    host, port = bg.gw.url.removeprefix("http://").split(":")
    bg.addr = (host, int(port))
    yield bg
    bg.run(bg.stop())
    bg.loop.call_soon_threadsafe(bg.loop.stop)
    bg.thread.join(10)


def exchange(addr, method: str, path: str, body: bytes, headers: dict[str, str]):
    conn = http.client.HTTPConnection(*addr, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def assert_not_faregates_fault(status: int, ctype: str, data: bytes) -> None:
    # The upstream here always answers 200, so any 5xx would be faregate's own.
    assert status < 500, (status, data[:300])
    if status >= 400 and "json" in ctype:
        err = json.loads(data)["error"]
        assert isinstance(err["message"], str) and err["type"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({
        "model": json_values, "stream": json_values, "max_tokens": json_values,
        "max_output_tokens": json_values, "stream_options": json_values,
        "messages": json_values, "input": json_values, "tools": json_values,
        "metadata": json_values,
    }).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 100_000).map(nested),
    st.just(b'{"model": "' + b"m" * 1_100_000 + b'"}'),  # over max_body_bytes
)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=80)
headers = st.fixed_dictionaries({}, optional={
    "x-faregate-tenant": header_text, "x-faregate-user": header_text,
    "x-faregate-tags": header_text, "Content-Type": st.sampled_from(
        ["application/json", "text/plain", "multipart/form-data; boundary=x", "application/x"]),
    "Authorization": st.one_of(header_text, st.just("Bearer sk-fuzz")),
})
paths = st.one_of(
    st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/embeddings",
                     "/v1/audio/speech", "/v1/images/generations", "/v1/../admin/usage",
                     "/v1/%2e%2e/admin", "//v1/chat/completions", "/v1/chat/completions/",
                     "/v1/%0A", "/v1/chat%0d%0aX-Injected:%201", "/v1/%7F",
                     "/v1/" + "a" * 5000]),
    header_text.map(lambda s: "/v1/" + s.replace(" ", "%20").replace("#", "").replace("?", "")),
)


@NET
@given(path=paths, body=bodies, hdrs=headers,
       method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]))
def test_hostile_requests_never_get_a_5xx_from_faregate(live, path, body, hdrs, method):
    hdrs = {"Authorization": "Bearer sk-fuzz", **hdrs}
    status, ctype, data = exchange(live.addr, method, path, body, hdrs)
    assert_not_faregates_fault(status, ctype, data)


def test_still_serving_after_the_hostile_requests(live):
    status, _, data = exchange(live.addr, "POST", "/v1/chat/completions",
                               b'{"model": "gpt-4o-mini", "messages": []}',
                               {"Authorization": "Bearer sk-fuzz",
                                "Content-Type": "application/json"})
    assert status == 200 and json.loads(data)["usage"]["prompt_tokens"] == 3


# -- Realtime frames ---------------------------------------------------------------

frames = st.lists(st.one_of(
    st.binary(max_size=200),
    st.just(b"\0" * 5000),  # over max_ws_frame_bytes: closed with 1009
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(
        ["response.create", "session.update", "conversation.item.create",
         "input_audio_buffer.append", "response.cancel", "nonsense.event"]),
        "response": json_values, "session": json_values, "item": json_values,
        "audio": json_values}).map(json.dumps),
), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def realtime(tmp_path_factory):
    from fake_sessions import FakeSessions

    bg = Background(tmp_path_factory.mktemp("frames"))

    async def start() -> None:
        bg.fake = FakeSessions()
        await bg.fake.__aenter__()
        config = gateway_config(bg.fake.url, bg.tmp_path, {
            "server": {"max_ws_frame_bytes": 4096, "cancel_grace_s": 0.2}})
        bg.gw = await start_gateway(parse_settings(config))

    async def stop() -> None:
        await bg.gw.stop()
        await bg.fake.__aexit__(None, None, None)

    bg.run(start())
    yield bg
    bg.run(stop())
    bg.loop.call_soon_threadsafe(bg.loop.stop)
    bg.thread.join(10)


async def session(url: str, sent: list) -> int | None:
    import websockets

    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-f"},
                                  open_timeout=10, max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), 10)  # session.created
        try:
            for frame in sent:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            while True:  # drain until the relay answers the last event or closes
                raw = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(raw, str) and json.loads(raw).get("type") == "session.updated":
                    return None
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


@settings(NET, max_examples=10_000 if FUZZ else 60)
@given(sent=frames)
def test_hostile_frames_never_break_the_relay(realtime, sent):
    url = realtime.gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    code = realtime.run(session(url, sent))
    # closed only for a reason a client can act on: too big (1009) or the upstream's own
    assert code in (None, 1000, 1009, 1011), code
    assert realtime.run(session(url, [])) is None  # and the next session works
