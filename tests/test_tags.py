"""Attribution tags: set by callers, kept with every charge and session, sliced by in reports."""

from __future__ import annotations

import aiohttp
import openai
import pytest
import websockets

from faregate.proxy.caller import BadTags, parse_tags, strip_query
from faregate.storage import format_usd

TOKEN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HELLO = [{"role": "user", "content": "one two three"}]


@pytest.mark.parametrize("text, tags", [
    ("feature=voice-demo,kb_id=kb_42", {"feature": "voice-demo", "kb_id": "kb_42"}),
    (" a=1 , b=x:y/z@q+r ,", {"a": "1", "b": "x:y/z@q+r"}),
    ("", {}),
])
def test_good_tags_parse(text, tags):
    assert parse_tags(text) == tags


@pytest.mark.parametrize("text", [
    "novalue", "=v", "k=", "k=v w", "k=v;drop", "k=a,k=b", "ké=v", "k=" + "v" * 129,
    "k" * 41 + "=v", ",".join(f"k{i}=v" for i in range(11)), "k=<script>",
])
def test_bad_tags_are_refused(text):
    with pytest.raises(BadTags):
        parse_tags(text)


@pytest.mark.parametrize("target, forwarded", [
    ("/v1/realtime?model=m&faregate_tags=a%3D1", "/v1/realtime?model=m"),
    ("/v1/x?faregate_tags=a=1", "/v1/x"),
    ("/v1/x?a=%20b&faregate%5Ftags=z=1&c=d", "/v1/x?a=%20b&c=d"),
    ("/v1/x?a=1", "/v1/x?a=1"),
])
def test_the_query_parameter_never_reaches_the_upstream(target, forwarded):
    assert strip_query(target) == forwarded


async def test_tags_from_header_query_and_metadata_are_recorded_and_grouped(
        make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", TOKEN)
    gw = await make_gateway()
    client = gw.client()
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO,
        extra_headers={"x-faregate-tags": "feature=voice-demo,kb_id=kb_42"})
    assert "x-faregate-tags" not in {k.lower() for k in upstream.last_request.headers}
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, extra_query={"faregate_tags": "feature=search"})
    assert "faregate_tags" not in upstream.last_request.query
    await client.responses.create(
        model="gpt-4o-mini", input="hi there",
        metadata={"feature": "search", "note": "free text, not a tag"})
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    rows = await gw.ledger_rows(4)
    assert [r.tags for r in reversed(rows)] == [
        {"feature": "voice-demo", "kb_id": "kb_42"}, {"feature": "search"},
        {"feature": "search"}, {}]

    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/admin/usage?group_by=tag:feature", headers=AUTH) as r:
            body = await r.json()
    got = {row["tag:feature"]: row["cost_usd"] for row in body["rows"]}
    want: dict = {}
    for r in rows:
        key = r.tags.get("feature")
        want[key] = want.get(key, 0) + r.cost_nanos
    assert got == {k: format_usd(v) for k, v in want.items()}
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/admin/usage?group_by=tag:bad%20key", headers=AUTH) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "group_by"
        async with s.get(gw.url + "/admin/usage/logs?limit=1", headers=AUTH) as r:
            assert (await r.json())["data"][0]["tags"] == {}

    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, extra_headers={"x-faregate-tags": "oops"})
    assert err.value.status_code == 400 and err.value.code == "invalid_tags"
    assert len(await gw.ledger_rows(4)) == 4  # refused calls are never charged


async def test_browser_session_tags_from_the_query_parameter(tmp_path):
    from conftest import gateway_config, start_gateway
    from fake_sessions import FakeSessions
    from faregate.proxy import parse_settings
    from test_realtime import RT_PRICES, sessions_of

    async with FakeSessions() as fake:
        gw = await start_gateway(parse_settings(gateway_config(
            fake.url, tmp_path, {"pricing": {"models": {"gpt-realtime": RT_PRICES}}})))
        try:
            url = gw.url.replace("http://", "ws://") + (
                "/v1/realtime?model=gpt-realtime&faregate_tags=feature%3Dvoice%2Ckb_id%3Dkb_7")
            async with websockets.connect(
                    url, subprotocols=["realtime", "openai-insecure-api-key.sk-test"]) as ws:
                await ws.recv()  # session.created
            assert "faregate_tags" not in fake.sessions[0].query
            [session] = await sessions_of(gw)
            assert session.tags == {"feature": "voice", "kb_id": "kb_7"}

            bad = gw.url.replace("http://", "ws://") + "/v1/realtime?faregate_tags=x"
            with pytest.raises(websockets.exceptions.InvalidStatus) as err:
                async with websockets.connect(
                        bad, subprotocols=["realtime", "openai-insecure-api-key.sk-test"]):
                    pass
            assert err.value.response.status_code == 400
        finally:
            await gw.stop()
