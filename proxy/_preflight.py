"""A valid config checked against what it will run with: the price table in force
and this machine's environment.

`faregate check-config` prints the warnings (the file may be checked on a
machine without the server's variables); `faregate serve` logs them and
refuses to start on `refusals` — keys mode without the upstream key would
answer every call with a 500. A hot reload is rejected on the same refusals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._config import ConfigProblem, Settings
from ._config_hints import did_you_mean

if TYPE_CHECKING:
    from faregate.pricing import PriceTable


def alias_problems(aliases: Mapping[str, str], prices: "PriceTable") -> list[ConfigProblem]:
    """`[pricing.aliases]` entries the table cannot honour (errors)."""
    names = [*prices.periods, *prices.aliases]
    out = []
    for name, target in aliases.items():
        if prices.resolve(name) == name.strip().lower():
            out.append(ConfigProblem(f"pricing.aliases.{name}",
                                     f"{name!r} has its own prices; an alias cannot re-price it"))
        elif prices.resolve(target) is None:
            out.append(ConfigProblem(f"pricing.aliases.{name}", f"unknown model {target!r}"
                                     + did_you_mean(target.strip().lower(), names)))
    return out


def refusals(settings: Settings, environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """What stops `serve` from starting (and a reload from applying)."""
    env = os.environ if environ is None else environ
    server = settings.server
    if settings.identity.mode == "keys" and not env.get(server.upstream_api_key_env):
        return [ConfigProblem(
            "server.upstream_api_key_env",
            f"${server.upstream_api_key_env} is not set: keys mode sends this key upstream "
            "for every call, so serve refuses to start without it")]
    return []


def warnings(settings: Settings, prices: "PriceTable",
             environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """Things that parse but probably do not do what the operator meant."""
    env = os.environ if environ is None else environ
    return [*refusals(settings, env), *_unset_variables(settings, env),
            *_unpriced_allowlist(settings, prices), *_unreadable_files(settings)]


def _unset_variables(settings: Settings, env: Mapping[str, str]) -> list[ConfigProblem]:
    out = [ConfigProblem(f"keys[{i}].key_env",
                         f"${key.key_env} is not set: this entry matches no caller")
           for i, key in enumerate(settings.keys) if key.key_env and not env.get(key.key_env)]
    capturing = [name for name, t in settings.tenants.items() if t.capture]
    if capturing and not env.get(settings.capture.key_env):
        out.append(ConfigProblem(
            "capture.key_env", f"${settings.capture.key_env} is not set: nothing is captured "
            f"for {', '.join(capturing)}"))
    return out


def _unpriced_allowlist(settings: Settings, prices: "PriceTable") -> list[ConfigProblem]:
    names = [*prices.periods, *prices.aliases]
    out = []
    scopes = [("tiers", settings.tiers), ("tenants", settings.tenants)]
    for section, entries in scopes:
        for scope, limits in entries.items():
            for i, model in enumerate(limits.models or ()):
                if prices.resolve(model) is None:
                    out.append(ConfigProblem(
                        f"{section}.{scope}.models[{i}]",
                        f"{model!r} is not a model in the price table"
                        + did_you_mean(model.strip().lower(), names)))
    return out


def _unreadable_files(settings: Settings) -> list[ConfigProblem]:
    out = []
    for key in ("tls_cert_file", "tls_key_file"):
        path = getattr(settings.server, key)
        if path is not None and not os.access(path, os.R_OK):
            out.append(ConfigProblem(f"server.{key}", f"cannot read {path}"))
    return out
