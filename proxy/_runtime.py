"""The config in force, and hot reload of the file behind it.

A `Runtime` is an immutable snapshot (settings, key directory, price table).
Requests read `state.runtime` once at their start, so a reload swaps the
snapshot atomically between requests and never half-applies. An invalid
file is rejected with a logged error and the running config stays.

The price table in force is the shipped one, with the operator's
`[pricing] table` file read over it and `[pricing.models]` on top. The
price file is watched like the config file: saving either reloads both,
and a price file that does not load or check keeps the running table.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from faregate.pricing import (
    PriceTable,
    PriceTableError,
    check_price_table,
    load_price_table,
    loads_price_table,
)

from ._config import ConfigError, ConfigProblem, PricingSettings, Settings, load_settings
from ._preflight import alias_problems, refusals, warnings
from ._watch import FileWatch, Stamps
from ._logging import hide
from .caller import Caller, Directory
from .quota import Policy, policy_for

log = logging.getLogger("faregate.config")

#: An operator price file larger than this is refused (the shipped one is ~60 KB).
MAX_PRICE_FILE_BYTES = 8 * 1024 * 1024


def read_price_file(path: str | os.PathLike[str], base: PriceTable,
                    check: bool = True) -> PriceTable:
    """An operator's price file read over `base`, checked like the shipped table.

    Raises `PriceTableError` naming what is wrong (unreadable, too large, not
    the format, or — with `check` — problems `faregate prices --check` would list).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_PRICE_FILE_BYTES + 1)
    except OSError as exc:
        raise PriceTableError(f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_PRICE_FILE_BYTES:
        raise PriceTableError(f"larger than {MAX_PRICE_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PriceTableError("not UTF-8 text") from None
    table = loads_price_table(text, base=base)
    problems = check_price_table(table) if check else []
    if problems:
        raise PriceTableError("; ".join(problems[:20]))
    return table


def price_table(pricing: PricingSettings) -> PriceTable:
    """The table in force for `[pricing]`: shipped, operator file over it, overrides on top."""
    table = load_price_table()
    if pricing.table:
        try:
            table = read_price_file(pricing.table, table)
        except PriceTableError as exc:
            raise ConfigError(pricing.table, [ConfigProblem("pricing.table", str(exc))]) from None
    overrides = {name: p.entry() for name, p in pricing.models.items()}
    if overrides:
        try:
            table = table.with_overrides(overrides)
        except PriceTableError as exc:
            raise ConfigError("<config>", [ConfigProblem("pricing.models", str(exc))]) from None
    return table


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
    def build(cls, settings: Settings, source: str = "<config>") -> "Runtime":
        """The config in force; reads the operator's price file (call it off the event
        loop). `ConfigError` when that file does not load or the table cannot honour
        the config (its aliases). Every upstream key it injects is hidden from logs."""
        table = price_table(settings.pricing)
        problems = alias_problems(settings.pricing.aliases, table)
        if problems:
            raise ConfigError(source, problems)
        directory = Directory(settings)
        hide(directory.upstream_keys())
        return cls(settings, directory, table.with_aliases(settings.pricing.aliases))


def _load_runtime(path: Path) -> Runtime:
    settings = load_settings(path)
    runtime = Runtime.build(settings, str(path))
    refused = refusals(settings)
    if refused:
        raise ConfigError(str(path), refused)
    return runtime


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The changed settings that a running faregate applies only at its next start."""
    changed = []
    if old.server.listen != new.server.listen:
        changed.append("[server] listen")
    if old.server.metrics_listen != new.server.metrics_listen:
        changed.append("[server] metrics_listen")
    if old.storage != new.storage:
        changed.append("[storage]")
    if (old.server.tls_cert_file, old.server.tls_key_file) != (
            new.server.tls_cert_file, new.server.tls_key_file):
        changed.append("[server] tls_cert_file / tls_key_file")  # their contents reload live
    return changed


class Reloader:
    """Watches the config file (and the price file it names) and applies valid changes."""

    def __init__(self, path: Path | None, apply: Callable[[Runtime], None],
                 on_result: Callable[[str], None] | None = None, table: str | None = None):
        self.path = path
        self._apply = apply
        self._on_result = on_result or (lambda result: None)
        self._table = Path(table) if table else None
        self._watch = FileWatch(self._files(), self._changed) if path else None

    def _files(self) -> list[Path]:
        """The config file and the price file it names: a change in either reloads."""
        return [p for p in (self.path, self._table) if p is not None]


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
            runtime = await asyncio.to_thread(_load_runtime, self.path)
        except ConfigError as exc:
            log.error(
                "config reload rejected; the running config stays in force",
                extra={"path": str(self.path), "problems": [str(p) for p in exc.problems]},
            )
            self._on_result("rejected")
            return False, str(exc)
        table = runtime.settings.pricing.table
        if (Path(table) if table else None) != self._table and self._watch is not None:
            self._table = Path(table) if table else None
            self._watch.paths = tuple(self._files())
            self._watch.stamps = await asyncio.to_thread(self._watch.read)
        self._apply(runtime)
        self._on_result("applied")
        log.info("config reloaded", extra={"path": str(self.path),
                                           "price_table": runtime.prices.version})
        log_warnings(runtime, str(self.path))
        return True, "applied"


def log_warnings(runtime: Runtime, source: str) -> None:
    """One structured line for what a valid config probably does not mean to do."""
    found = warnings(runtime.settings, runtime.prices)
    if found:
        log.warning("config warnings", extra={"path": source, "warnings": [str(w) for w in found]})
