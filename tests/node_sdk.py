"""The official OpenAI Node SDK for tests: tests/node/ (package.json pinned).

`.ci/run` installs it with `npm ci`; elsewhere the first test that needs it
runs the same `npm ci` (bounded in time). Without Node or npm, or without
network access to the npm registry, the tests that need it are skipped and
say why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL_TIMEOUT_S = 300


def node_sdk() -> tuple[str | None, str]:
    """(node executable, "") when the SDK is ready, else (None, why not)."""
    node = shutil.which("node")
    if node is None:
        return None, "Node.js is not installed (apt-get install nodejs npm)"
    if (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        return node, ""
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed, so the openai Node SDK cannot be installed"
    try:
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                             capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"npm ci in {NODE_DIR} took over {INSTALL_TIMEOUT_S} s (no registry access?)"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"npm ci in {NODE_DIR} failed: {last}"
    return node, ""
