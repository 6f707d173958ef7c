"""The config in force, and hot reload of the file behind it.

A `Runtime` is an immutable snapshot (settings, key directory, price table).
Requests read `state.runtime` once at their start, so a reload swaps the
snapshot atomically between requests and never half-applies. An invalid
file is rejected with a logged error and the running config stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from faregate.pricing import PriceTable, load_price_table

from ._config import ConfigError, Settings, load_settings
from ._logging import hide
from .caller import Caller, Directory
from .quota import Policy, policy_for

log = logging.getLogger("faregate.config")

POLL_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    directory: Directory
    prices: PriceTable
    _policies: dict = field(default_factory=dict, compare=False, repr=False)

    def policy(self, caller: Caller) -> Policy:
        """The caller's limits under this config (cached per tenant/user/tier)."""
        key = (caller.tenant, caller.user, caller.tier)
        policy = self._policies.get(key)
        if policy is None:
            if len(self._policies) > 100_000:
                self._policies.clear()
            policy = self._policies[key] = policy_for(self.settings, caller, self.prices)
        return policy

    def markup(self, tenant: str) -> Decimal | None:
        """The tenant's markup (billed = cost × (1 + markup)), None if billed at cost."""
        t = self.settings.tenants.get(tenant)
        return t.markup if t is not None else None

    def refuses_without_ledger(self, policy: Policy) -> bool:
        """`[storage] on_ledger_failure`: refuse this caller's metered calls while no
        charge can be kept? Unset: refuse callers with a USD limit, serve the rest."""
        choice = self.settings.storage.on_ledger_failure
        return choice == "refuse" or (choice is None and bool(policy.budgets))

    def captures(self, tenant: str) -> bool:
        """The tenant opted in to conversation capture (it also needs the key)."""
        t = self.settings.tenants.get(tenant)
        return t is not None and t.capture

    @classmethod
    def build(cls, settings: Settings) -> "Runtime":
        overrides = {name: p.entry() for name, p in settings.pricing.models.items()}
        table = load_price_table()
        if overrides:
            table = table.with_overrides(overrides)
        directory = Directory(settings)
        hide(directory.upstream_keys())
        return cls(settings, directory, table)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The changed settings that a running faregate applies only at its next start."""
    changed = []
    if old.server.listen != new.server.listen:
        changed.append("[server] listen")
    if old.server.metrics_listen != new.server.metrics_listen:
        changed.append("[server] metrics_listen")
    if old.storage != new.storage:
        changed.append("[storage]")
    return changed


class Reloader:
    """Watches the config file and applies valid changes."""

    def __init__(self, path: Path | None, apply: Callable[[Runtime], None],
                 on_result: Callable[[str], None] | None = None):
        self.path = path
        self._apply = apply
        self._on_result = on_result or (lambda result: None)
        self._stamp = _stamp(path) if path else None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            stamp = await asyncio.to_thread(_stamp, self.path)
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            await self.reload()

    async def reload(self) -> tuple[bool, str]:
        """Load and apply the file now. Returns (applied, message)."""
        if self.path is None:
            return False, "no config file: running on built-in defaults"
        try:
            settings = await asyncio.to_thread(load_settings, self.path)
            runtime = Runtime.build(settings)
        except ConfigError as exc:
            log.error(
                "config reload rejected; the running config stays in force",
                extra={"path": str(self.path), "problems": [str(p) for p in exc.problems]},
            )
            self._on_result("rejected")
            return False, str(exc)
        self._apply(runtime)
        self._on_result("applied")
        log.info("config reloaded", extra={"path": str(self.path)})
        return True, "applied"
