"""No crash window: `kill -9` at the worst moments, then the ledger against what happened.

* Between `[DONE]` and the end of the stream: the client has the whole answer;
  its charge must already be in the journal.
* With calls in flight: each left a start marker with its reservation, so
  after the restart a call that never settled is charged at its reservation,
  flagged `interrupted` — and a call that did settle is charged once, for real.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from test_durability import serve_config
from test_serve import start_serve, stop

USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def rows(tmp_path: Path) -> list[dict]:
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT request_id, flags, estimated, cost_nanos, input_tokens, output_tokens "
            "FROM charges")]
    finally:
        conn.close()


def chunk(body: dict) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def kill_9(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 10)


async def restart_and_stop(tmp_path: Path, config: Path) -> None:
    proc, _ = await start_serve(tmp_path, "--config", str(config))  # replays the journal
    assert await stop(proc) == 0


async def test_kill_9_after_done_before_the_stream_ends(tmp_path, upstream):
    """The upstream sends the usage chunk and `[DONE]`, then keeps the stream open."""
    hang = asyncio.Event()

    async def done_then_hang(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini-2024-07-18"}
        await resp.write(chunk({**base, "choices": [{"index": 0, "delta": {"content": "hi"}}]}))
        await resp.write(chunk({**base, "choices": [], "usage": USAGE}))
        await resp.write(b"data: [DONE]\n\n")
        await asyncio.wait_for(hang.wait(), 30)  # never ends the body
        return resp

    upstream.add_route("POST", "/v1/chat/completions", done_then_hang)
    config = serve_config(tmp_path, upstream.url, f"sqlite:///{tmp_path / 'ledger.db'}")
    proc, url = await start_serve(tmp_path, "--config", str(config))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/chat/completions", json={
                    "model": "gpt-4o-mini", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer sk-test"}) as r:
                request_id = r.headers["x-faregate-request-id"]
                got = b""
                while b"[DONE]" not in got:
                    got += await asyncio.wait_for(r.content.readany(), 10)
                await kill_9(proc)  # the client holds [DONE]; the stream is open
    finally:
        hang.set()
        if proc.returncode is None:
            proc.kill()
    await restart_and_stop(tmp_path, config)
    [row] = rows(tmp_path)
    assert row["request_id"] == request_id and row["flags"] == "" and not row["estimated"]
    assert (row["input_tokens"], row["output_tokens"]) == (11, 4)  # the real usage
    print(f"\n[DONE] then kill -9: expected 1 charge (real usage), recorded {len(rows(tmp_path))}"
          f" ({row['input_tokens']} in / {row['output_tokens']} out)")


async def test_kill_9_with_calls_in_flight(tmp_path, upstream):
    """Calls answered before the kill are charged for real; calls still waiting for the
    upstream, or half-way through their stream, at their reservation, `interrupted`."""
    stall = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["messages"][0]["content"] == "fast":
            resp = web.json_response({
                "id": "chatcmpl-f", "object": "chat.completion", "created": 1,
                "model": "gpt-4o-mini-2024-07-18", "usage": USAGE,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}]})
            return resp
        if body["messages"][0]["content"] == "waiting":
            await asyncio.wait_for(stall.wait(), 30)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"id": "chatcmpl-s", "object": "chat.completion.chunk",
                                "created": 1, "model": "gpt-4o-mini",
                                "choices": [{"index": 0, "delta": {"content": "so far"}}]}))
        await asyncio.wait_for(stall.wait(), 30)
        return resp

    upstream.add_route("POST", "/v1/chat/completions", slow_stream)
    config = serve_config(tmp_path, upstream.url, f"sqlite:///{tmp_path / 'ledger.db'}")
    proc, url = await start_serve(tmp_path, "--config", str(config))
    answered: set[str] = set()
    kinds = {"fast": 8, "waiting": 6, "streaming": 6}

    async def one(s: aiohttp.ClientSession, what: str) -> None:
        try:
            async with s.post(url + "/v1/chat/completions", json={
                    "model": "gpt-4o-mini", "max_tokens": 100, "stream": what != "fast",
                    "messages": [{"role": "user", "content": what}]},
                    headers={"authorization": "Bearer sk-test"}) as r:
                await r.read()
                if what == "fast" and r.status == 200:
                    answered.add(r.headers["x-faregate-request-id"])
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(kinds["fast"]):
                await one(s, "fast")
            calls = [asyncio.create_task(one(s, w)) for w in ("waiting", "streaming")
                     for _ in range(kinds[w])]
            while sum(1 for r in upstream.requests if r.json and
                      r.json["messages"][0]["content"] != "fast") < 12:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the streams' first chunk is through
            await kill_9(proc)
            await asyncio.gather(*calls)
    finally:
        stall.set()
        if proc.returncode is None:
            proc.kill()
    await restart_and_stop(tmp_path, config)
    charged = rows(tmp_path)
    real = [r for r in charged if r["flags"] == ""]
    cut = [r for r in charged if r["flags"] == "interrupted"]
    assert {r["request_id"] for r in real} == answered and len(real) == kinds["fast"]
    assert len(cut) == kinds["waiting"] + kinds["streaming"]
    assert all(r["estimated"] and r["cost_nanos"] > 0 and r["output_tokens"] == 100
               for r in cut)  # the reservation: max_tokens at the output rate
    assert len({r["request_id"] for r in charged}) == len(charged)
    print(f"\nkill -9 with calls in flight: expected {kinds['fast']} real + "
          f"{kinds['waiting'] + kinds['streaming']} interrupted, recorded {len(real)} real + "
          f"{len(cut)} interrupted at {sum(r['cost_nanos'] for r in cut)} nanos")


#: (what the client sends, the session the fake upstream announces): a response the
#: client asks for, and one the server starts itself on a voice turn (server VAD).
REALTIME_STARTS = {
    "asked by the client": ({"type": "response.create", "response": {"max_output_tokens": 50}},
                            {"id": "sess_1", "model": "gpt-realtime"}),
    "started by the server": ({"type": "input_audio_buffer.append", "audio": "AAAA"},
                              {"id": "sess_1", "model": "gpt-realtime",
                               "turn_detection": {"type": "server_vad"}}),
}


@pytest.mark.parametrize("trigger,session", REALTIME_STARTS.values(),
                         ids=REALTIME_STARTS.keys())
async def test_kill_9_during_a_realtime_response(tmp_path, upstream, trigger, session):
    """A reserved Realtime response whose `response.done` never came: after the restart
    it is charged at its reservation, `interrupted`, in its session (rebuilt)."""
    import websockets

    stall = asyncio.Event()

    async def generating(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "session.created", "session": session}))
        async for msg in ws:
            if json.loads(msg.data).get("type") == trigger["type"]:
                await ws.send_str(json.dumps({"type": "response.created", "response": {
                    "id": "resp_1", "status": "in_progress"}}))
                await asyncio.wait_for(stall.wait(), 30)
        return ws

    upstream.add_route("GET", "/v1/realtime", generating)
    config = serve_config(tmp_path, upstream.url, f"sqlite:///{tmp_path / 'ledger.db'}")
    proc, url = await start_serve(tmp_path, "--config", str(config))
    try:
        ws_url = url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(ws_url,
                                      additional_headers={"Authorization": "Bearer x"}) as ws:
            await ws.recv()
            await ws.send(json.dumps(trigger))
            assert json.loads(await ws.recv())["type"] == "response.created"
            await kill_9(proc)
    except websockets.ConnectionClosed:
        pass
    finally:
        stall.set()
        if proc.returncode is None:
            proc.kill()
    await restart_and_stop(tmp_path, config)
    [row] = rows(tmp_path)
    assert row["flags"] == "interrupted" and row["estimated"] and row["cost_nanos"] > 0
    sessions = sqlite3.connect(tmp_path / "ledger.db").execute(
        "SELECT end_reason, responses, cost_nanos FROM sessions").fetchall()
    assert sessions == [("interrupted", 1, row["cost_nanos"])]
