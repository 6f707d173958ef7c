"""Opt-in conversation capture: off by default, redacted, encrypted, purged on time."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from conftest import gateway_config, start_gateway
from fake_sessions import REPLY, FakeSessions
from faregate.proxy import parse_settings
from faregate.proxy import Capture, Redactor
from test_realtime import RT_PRICES, sessions_of, text_turn

KEY = base64.b64encode(bytes(range(32))).decode()
ADMIN = {"Authorization": "Bearer admin-token"}
PII = ("mail bob.smith@example.com or call +1 415 555 0100, card 4111 1111 1111 1111, "
       "code secret-XYZ123 please")


@pytest.fixture
def capture_env(monkeypatch):
    monkeypatch.setenv("FAREGATE_CAPTURE_KEY", KEY)
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", "admin-token")


def files(directory) -> list:
    return sorted(p for p in directory.rglob("*.jsonl")) if directory.exists() else []


def test_redaction_of_builtin_patterns_and_operator_regexes():
    redact = Redactor([r"secret-\w+"])
    out = redact(PII)
    for gone in ("bob.smith@example.com", "415 555 0100", "4111 1111 1111 1111", "XYZ123"):
        assert gone not in out
    assert "[email]" in out and "[phone]" in out and "[card]" in out and "[redacted]" in out
    assert out.startswith("mail ") and out.endswith(" please")


async def test_rest_bodies_captured_redacted_and_encrypted(make_gateway, capture_env, tmp_path):
    directory = tmp_path / "capture"
    gw = await make_gateway({
        "capture": {"directory": str(directory), "redact": [r"secret-\w+"]},
        "tenants": {"acme": {"capture": True}},
        "identity": {"allow_header_identity": True},
    })
    client = gw.client()
    await client.chat.completions.create(model="gpt-4o-mini",
                                         messages=[{"role": "user", "content": PII}],
                                         extra_headers={"x-faregate-tenant": "acme"})
    await client.chat.completions.create(model="gpt-4o-mini",
                                         messages=[{"role": "user", "content": PII}],
                                         extra_headers={"x-faregate-tenant": "other"})
    gw.state.capture.flush()
    [path] = files(directory)
    assert path.name == "rest-acme.jsonl"  # the tenant that did not opt in left nothing
    raw = path.read_bytes()
    assert b"example.com" not in raw and b"mail" not in raw and b"gpt-4o-mini" not in raw
    [record] = gw.state.capture.read("rest-acme")
    assert record["endpoint"] == "/v1/chat/completions" and record["status"] == 200
    assert "[email]" in record["request"] and "bob.smith" not in record["request"]
    assert '"chat.completion"' in record["response"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_capture_is_off_by_default_even_with_a_key(make_gateway, capture_env, tmp_path):
    directory = tmp_path / "capture"
    gw = await make_gateway({"capture": {"directory": str(directory)}})
    await gw.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PII}])
    gw.state.capture.flush()
    assert files(directory) == []


async def test_without_a_key_nothing_is_captured(make_gateway, monkeypatch, tmp_path):
    monkeypatch.delenv("FAREGATE_CAPTURE_KEY", raising=False)
    directory = tmp_path / "capture"
    gw = await make_gateway({"capture": {"directory": str(directory)},
                             "tenants": {"default": {"capture": True}}})
    await gw.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PII}])
    assert gw.state.capture is None and files(directory) == []


async def test_realtime_transcript_through_the_admin_api(capture_env, tmp_path):
    directory = tmp_path / "capture"
    async with FakeSessions() as fake:
        gw = await start_gateway(parse_settings(gateway_config(fake.url, tmp_path, {
            "pricing": {"models": {"gpt-realtime": RT_PRICES}},
            "capture": {"directory": str(directory)},
            "tenants": {"default": {"capture": True}}})))
        try:
            async with gw.client().realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(session={"type": "realtime",
                                                   "output_modalities": ["text"]})
                await text_turn(conn, "my email is eve@example.org thanks")
            [session] = await sessions_of(gw)
            sid = session.id
            gw.state.capture.flush()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{gw.url}/admin/sessions/{sid}/transcript",
                                 headers=ADMIN) as r:
                    assert r.status == 200
                    body = await r.json()
                async with s.get(f"{gw.url}/admin/sessions/fgs_none/transcript",
                                 headers=ADMIN) as r:
                    assert r.status == 404
            said = [(e["direction"], e["text"]) for e in body["events"]]
            assert said == [("client", "my email is [email] thanks"), ("server", REPLY)]
            raw = b"".join(p.read_bytes() for p in files(directory))
            assert b"eve@" not in raw and REPLY.encode() not in raw
        finally:
            await gw.stop()


def test_retention_purge_on_a_fast_clock(tmp_path):
    cap = Capture(tmp_path, bytes(32), Redactor([]), retention_days=7, queue_limit=100)
    try:
        cap.exchange("rest-acme", "fg_1", "/v1/chat/completions", b"{}", b"{}", 200)
        cap.flush()
        today = datetime.now(timezone.utc)
        assert cap.purge(today + timedelta(days=7)) == 0
        assert len(cap.read("rest-acme")) == 1
        assert cap.purge(today + timedelta(days=8)) == 1
        assert cap.read("rest-acme") == [] and files(tmp_path) == []
    finally:
        cap.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    results = []
    cap = Capture(tmp_path, os.urandom(32), Redactor([]), 7, queue_limit=2,
                  on_result=results.append, start=False)  # no writer: the queue fills
    for i in range(5):
        cap.frame("fgs_x", "server", "response.output_text.done", '{"text": "hi"}')
    assert results == ["dropped"] * 3
