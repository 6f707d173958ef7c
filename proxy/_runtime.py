"""The config in force, and hot reload of the file behind it.

A `Runtime` is an immutable snapshot (settings, key directory, price table).
Requests read `state.runtime` once at their start, so a reload swaps the
snapshot atomically between requests and never half-applies. An invalid
file is rejected with a logged error and the running config stays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from faregate.pricing import PriceTable, load_price_table

from ._config import ConfigError, Settings, load_settings
from ._preflight import alias_problems, refusals, warnings
from ._watch import FileWatch, Stamps
from .caller import Caller, Directory
from .quota import Policy, policy_for

log = logging.getLogger("faregate.config")


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

    def captures(self, tenant: str) -> bool:
        """The tenant opted in to conversation capture (it also needs the key)."""
        t = self.settings.tenants.get(tenant)
        return t is not None and t.capture

    @classmethod
    def build(cls, settings: Settings, source: str = "<config>") -> "Runtime":
        """The config in force; `ConfigError` when the price table cannot honour it."""
        overrides = {name: p.rates() for name, p in settings.pricing.models.items()}
        table = load_price_table()
        if overrides:
            table = table.with_overrides(overrides)
        problems = alias_problems(settings.pricing.aliases, table)
        if problems:
            raise ConfigError(source, problems)
        table = table.with_aliases(settings.pricing.aliases)
        return cls(settings, Directory(settings), table)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The changed settings that a running faregate applies only at its next start."""
    changed = []
    if old.server.listen != new.server.listen:
        changed.append("[server] listen")
    if old.storage != new.storage:
        changed.append("[storage]")
    if (old.server.tls_cert_file, old.server.tls_key_file) != (
            new.server.tls_cert_file, new.server.tls_key_file):
        changed.append("[server] tls_cert_file / tls_key_file")  # their contents reload live
    return changed


class Reloader:
    """Watches the config file and applies valid changes."""

    def __init__(self, path: Path | None, apply: Callable[[Runtime], None],
                 on_result: Callable[[str], None] | None = None):
        self.path = path
        self._apply = apply
        self._on_result = on_result or (lambda result: None)
        self._watch = FileWatch([path], self._changed) if path else None

    def start(self) -> None:
        if self._watch is not None:
            self._watch.start()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()

    async def _changed(self, stamps: Stamps) -> bool:
        if stamps[0] is None:
            return False  # missing (mid-replace): look again at the next poll
        await self.reload()  # an invalid file is rejected once, not every second
        return True

    async def reload(self) -> tuple[bool, str]:
        """Load and apply the file now. Returns (applied, message)."""
        if self.path is None:
            return False, "no config file: running on built-in defaults"
        try:
            settings = await asyncio.to_thread(load_settings, self.path)
            runtime = Runtime.build(settings, str(self.path))
            refused = refusals(settings)
            if refused:
                raise ConfigError(str(self.path), refused)
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
        log_warnings(runtime, str(self.path))
        return True, "applied"


def log_warnings(runtime: Runtime, source: str) -> None:
    """One structured line for what a valid config probably does not mean to do."""
    found = warnings(runtime.settings, runtime.prices)
    if found:
        log.warning("config warnings", extra={"path": source, "warnings": [str(w) for w in found]})
