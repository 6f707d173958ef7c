"""The Portkey gateway as a peer target (issue #25 target 4), installed from npm on first use.

`@portkey-ai/gateway` is installed into bench/.portkey (git-ignored) with the
machine's own `npm` (no `npx` at run time) and started with `node
<folder>/node_modules/@portkey-ai/gateway/build/start-server.js --port=N`.
It is pointed at the fake upstream per request, as its users do for a
self-hosted OpenAI-compatible provider: `x-portkey-provider: openai` and
`x-portkey-custom-host: http://127.0.0.1:<upstream port>/v1`. The caller's
bearer key is forwarded to the upstream. Anything that fails (no Node, no
npm, no network, a crash at start) skips the peer with a message.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.run import BENCH, Proc, Target, free_port, log, wait_http

PORTKEY_DIR = BENCH / ".portkey"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
SERVER = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def ensure_portkey() -> tuple[Path | None, str]:
    """The gateway's start-server.js under bench/.portkey, installing it if needed."""
    if SERVER.exists():
        return SERVER, "already installed"
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        return None, "no node/npm on this machine"
    log(f"installing {PORTKEY_SPEC} into {PORTKEY_DIR} (first run only)")
    PORTKEY_DIR.mkdir(exist_ok=True)
    try:
        subprocess.run([npm, "install", "--prefix", str(PORTKEY_DIR), "--no-audit", "--no-fund",
                        "--no-save", PORTKEY_SPEC], check=True, timeout=600,
                       capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return None, f"install failed: {type(exc).__name__}: {err.decode(errors='replace')[-500:]}"
    return (SERVER, "installed") if SERVER.exists() else (None, "install produced no server")


def start_portkey(upstream: str, tmp: Path, procs: list[Proc]) -> tuple[Target | None, str]:
    """A running gateway routed to `upstream`, or None and why not."""
    server, how = ensure_portkey()
    if server is None:
        return None, how
    port = free_port()
    work = tmp / "portkey"
    work.mkdir()
    out = open(work / "portkey.log", "wb")
    proc = Proc("portkey", [shutil.which("node") or "node", str(server), f"--port={port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=work)
    out.close()
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    if not wait_http(base + "/", 60, proc):
        tail = (work / "portkey.log").read_text(errors="replace")[-1500:]
        proc.stop()
        return None, f"did not start within 60 s:\n{tail}"
    t = Target("portkey", base, proc)
    t.headers = {"x-portkey-provider": "openai",
                 "x-portkey-custom-host": f"{upstream}/v1"}
    return t, how
