"""The access log: one JSON line per REST call, batched, scrubbed, `[server] access_log`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import queue

from faregate.proxy import _logging
from faregate.proxy._logging import AccessLines, JsonFormatter, _Lines
from test_serve import embed_through_serve

KEY = "sk-real-upstream-ACCESS-4242"


def _written(records: queue.SimpleQueue, stream: io.StringIO) -> list[dict]:
    handler = _Lines(stream)
    handler.setFormatter(JsonFormatter())
    while not records.empty():
        handler.handle(records.get())
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_lines_wait_for_their_batch_then_go_as_one_scrubbed_hand_off():
    records: queue.SimpleQueue = queue.SimpleQueue()
    lines = AccessLines(records, delay_s=3600, max_lines=100)
    _logging.hide([KEY])
    try:
        lines.write({"request_id": "fg_1", "status": 200, "model": "gpt-4o-mini"})
        lines.write({"request_id": "fg_2", "status": 401, "model": f"x {KEY} y"})
        assert records.empty()  # batched on the loop, not handed off per call
        lines.flush()
        assert records.qsize() == 1
        out = _written(records, io.StringIO())
    finally:
        _logging.hide([])
    assert [o["request_id"] for o in out] == ["fg_1", "fg_2"]
    assert {k: out[0][k] for k in ("level", "logger", "msg")} == {
        "level": "info", "logger": "faregate.access", "msg": "request"}
    assert KEY not in json.dumps(out) and "[upstream key]" in out[1]["model"]
    # The same timestamp shape as every other line: UTC, milliseconds.
    record = logging.makeLogRecord({"msg": "x"})
    assert len(out[0]["ts"]) == len(json.loads(JsonFormatter().format(record))["ts"])
    assert out[0]["ts"].endswith("+00:00")


async def test_a_full_batch_goes_at_once_and_a_timer_sends_the_rest():
    records: queue.SimpleQueue = queue.SimpleQueue()
    lines = AccessLines(records, delay_s=0.05, max_lines=3)
    for i in range(4):
        lines.write({"request_id": f"fg_{i}"})
    assert records.qsize() == 1  # the first three, as soon as there were three
    for _ in range(100):
        if records.qsize() == 2:
            break
        await asyncio.sleep(0.02)
    out = _written(records, io.StringIO())
    assert [o["request_id"] for o in out] == ["fg_0", "fg_1", "fg_2", "fg_3"]


async def _serve_and_call(tmp_path, upstream, server: str) -> list[dict]:
    config = tmp_path / "faregate.toml"
    config.write_text(f'[server]\nupstream = "{upstream.url}"\n{server}'
                      f'[storage]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\n')
    # Stopped at once after the calls: lines still in a batch are written at exit.
    proc = await embed_through_serve(tmp_path, config, 3, env={"FAREGATE_LOG_LEVEL": "INFO"})
    err = (await proc.stderr.read()).decode()
    return [json.loads(line) for line in err.splitlines()
            if line.startswith("{") and '"faregate.access"' in line]


async def test_serve_writes_one_access_line_per_call_by_default(tmp_path, upstream):
    lines = await _serve_and_call(tmp_path, upstream, "")
    assert len(lines) == 3
    assert {(o["endpoint"], o["status"], o["tenant"]) for o in lines} == {
        ("/v1/embeddings", 200, "default")}
    assert len({o["request_id"] for o in lines}) == 3


async def test_access_log_false_writes_none(tmp_path, upstream):
    assert await _serve_and_call(tmp_path, upstream, "access_log = false\n") == []
