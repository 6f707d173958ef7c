"""`faregate serve` as a real process: defaults with no file, flush on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp
import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_serve(cwd: Path, *args: str, env: dict | None = None
                      ) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    exe = Path(sys.executable).with_name("faregate")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--listen", f"127.0.0.1:{port}", *args,
        cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "FAREGATE_LOG_LEVEL": "WARNING", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("faregate serve did not come up: " + (await proc.stderr.read()).decode())


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


async def embed_through_serve(tmp_path: Path, config: Path, calls: int,
                              env: dict | None = None) -> asyncio.subprocess.Process:
    """`serve --config`, `calls` embeddings through it, then SIGTERM (exit 0 asserted)."""
    proc, url = await start_serve(tmp_path, "--config", str(config), env=env)
    try:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0)
        for _ in range(calls):
            await client.embeddings.create(model="text-embedding-3-small", input="a b")
        await client.close()
    finally:
        assert await stop(proc) == 0
    return proc


async def test_serve_without_config_uses_builtin_defaults(tmp_path):
    proc, url = await start_serve(tmp_path)
    try:
        first = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        assert first.strip() == (  # said once the ledger is open, with the real address
            f"faregate listening on {url} -> https://api.openai.com "
            "(config: built-in defaults; ledger: sqlite:///faregate.db)")
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/readyz") as r:
                assert r.status == 200
            async with s.get(url + "/metrics") as r:
                assert "faregate_ledger_queue_depth" in await r.text()
        assert (tmp_path / "faregate.db").exists()  # SQLite ledger in ./faregate.db
    finally:
        assert await stop(proc) == 0


async def test_sigterm_flushes_the_ledger(tmp_path, upstream):
    config = tmp_path / "faregate.toml"
    # A flush interval far longer than the test: rows can only arrive by the shutdown flush.
    config.write_text(
        f'[server]\nupstream = "{upstream.url}"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\nflush_interval_ms = 600000\n'
    )
    await embed_through_serve(tmp_path, config, 5)
    rows = sqlite3.connect(tmp_path / "ledger.db").execute(
        "SELECT COUNT(*), SUM(input_tokens) FROM charges").fetchone()
    assert rows == (5, 10)


async def test_second_signal_exits_at_once_and_the_journal_keeps_every_charge(
    tmp_path, upstream
):
    def write_config(flush_ms: int) -> Path:
        config = tmp_path / "faregate.toml"
        config.write_text(
            f'[server]\nupstream = "{upstream.url}"\nshutdown_grace_s = 30\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\n'
            f'flush_interval_ms = {flush_ms}\njournal_dir = "{tmp_path / "journal"}"\n'
        )
        return config

    # The database only hears of charges at shutdown; until then they are journaled.
    proc, url = await start_serve(tmp_path, "--config", str(write_config(600000)))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0)
    for _ in range(5):
        await client.embeddings.create(model="text-embedding-3-small", input="a b")
    upstream.delay_s = 4  # one call hangs in flight, so the graceful drain waits for it
    hanging = asyncio.ensure_future(
        client.embeddings.create(model="text-embedding-3-small", input="slow"))
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert proc.returncode is None  # still draining
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 130 and loop.time() - started < 2.5
    hanging.cancel()
    await asyncio.gather(hanging, return_exceptions=True)
    await client.close()
    upstream.delay_s = 0

    proc, url = await start_serve(tmp_path, "--config", str(write_config(20)))
    try:
        for _ in range(100):  # the journal is replayed in the background at start
            rows = sqlite3.connect(tmp_path / "ledger.db").execute(
                "SELECT COUNT(*) FROM charges").fetchone()[0]
            if rows >= 6:
                break
            await asyncio.sleep(0.1)
    finally:
        assert await stop(proc) == 0
    rows = sqlite3.connect(tmp_path / "ledger.db").execute(
        "SELECT flags, estimated, cost_nanos FROM charges").fetchall()
    # the 5 answered calls, and the one in flight at the exit: charged at its reservation
    assert sorted(f for f, _, _ in rows) == ["", "", "", "", "", "interrupted"]
    [(_, estimated, cost)] = [r for r in rows if r[0] == "interrupted"]
    assert estimated == 1 and cost > 0



async def run_serve(cwd: Path, *args: str, env: dict | None = None) -> tuple[int, str]:
    """`faregate serve` expected to refuse: (exit code, stderr)."""
    exe = Path(sys.executable).with_name("faregate")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", *args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "FAREGATE_LOG_LEVEL": "WARNING", **(env or {})})
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("faregate serve did not refuse to start") from None
    return proc.returncode, err.decode()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def test_a_taken_port_is_one_line_and_exit_2_with_nothing_created(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await run_serve(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert code == 2
    line = one_line(err)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert list(tmp_path.iterdir()) == []  # no faregate.db, no journal


async def test_a_second_serve_in_the_same_directory_is_one_line_and_exit_2(tmp_path):
    proc, url = await start_serve(tmp_path)
    try:
        code, err = await run_serve(tmp_path, "--listen", f"127.0.0.1:{free_port()}")
        assert code == 2
        line = one_line(err)
        assert f"journal {tmp_path / 'faregate-journal'} is in use by another faregate" in line
        assert "journal_dir" in line
        async with aiohttp.ClientSession() as s:  # the first one is unharmed
            async with s.get(url + "/readyz") as r:
                assert r.status == 200
    finally:
        assert await stop(proc) == 0


async def test_keys_mode_without_the_upstream_key_refuses_to_start(tmp_path):
    (tmp_path / "faregate.toml").write_text(
        '[identity]\nmode = "keys"\n[[keys]]\nsha256 = "' + "a" * 64 + '"\ntenant = "t"\n')
    code, err = await run_serve(tmp_path, "--listen", f"127.0.0.1:{free_port()}")
    assert code == 2
    line = one_line(err)
    assert "cannot start" in line and "$OPENAI_API_KEY is not set" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faregate.toml"]
    # With the variable set it serves.
    proc, _ = await start_serve(tmp_path, env={"OPENAI_API_KEY": "sk-real"})
    assert await stop(proc) == 0
