"""Which provider API key is which faregate key: matched by the provider's redaction.

The Admin API lists a project's keys with a redacted value ("sk-abc…wxyz": a
prefix, a mask, a suffix); faregate knows the plaintext of the keys it sends
upstream only from the environment. A key matches when it starts with the
prefix and ends with the suffix, and exactly one provider key matches it.
Nothing here keeps or logs a plaintext key: matches are by fingerprint.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping

from .._config import Settings
from ..caller import digest, key_id

_MASK = re.compile(r"(?:\.{3}|\u2026|\*+)")
MIN_VISIBLE = 8  # prefix + suffix characters a redaction must show to be matched


def redaction_matches(plaintext: str, redacted: str) -> bool:
    parts = _MASK.split(redacted)
    if len(parts) < 2:
        return False
    prefix, suffix = parts[0], parts[-1]
    if len(prefix) + len(suffix) < MIN_VISIBLE or len(plaintext) < len(prefix) + len(suffix):
        return False
    return plaintext.startswith(prefix) and plaintext.endswith(suffix)


def match_keys(known: Mapping[str, str], provider_keys: Iterable[tuple[str, str]]
               ) -> dict[str, str]:
    """fingerprint -> provider key id, for every known key with exactly one match."""
    listed = list(provider_keys)
    out = {}
    for fingerprint, plaintext in known.items():
        hits = {kid for kid, redacted in listed if redaction_matches(plaintext, redacted)}
        if len(hits) == 1:
            out[fingerprint] = hits.pop()
    return out


def fingerprint(key: str) -> str:
    return key_id(digest(key))


def _env_key(name: str | None) -> str | None:
    return os.environ.get(name) if name else None


def known_keys(settings: Settings) -> dict[str, str]:
    """fingerprint -> plaintext of every key faregate can read from its environment."""
    names = [settings.server.upstream_api_key_env]
    names += [getattr(t, "upstream_api_key_env", None) for t in settings.tenants.values()]
    names += [k.key_env for k in settings.keys]
    out = {}
    for name in names:
        value = _env_key(name)
        if value:
            out[fingerprint(value)] = value
    return out


def upstream_key(settings: Settings) -> Callable[[str, str | None], str | None]:
    """(tenant, caller key fingerprint) -> fingerprint of the key that went upstream:
    the caller's own in passthrough mode, the configured one in keys mode (the
    tenant's own upstream key where one is configured)."""
    if settings.identity.mode == "passthrough":
        return lambda tenant, key: key
    shared = _env_key(settings.server.upstream_api_key_env)
    by_tenant = {}
    for name, t in settings.tenants.items():
        own = _env_key(getattr(t, "upstream_api_key_env", None))
        if own:
            by_tenant[name] = fingerprint(own)
    default = fingerprint(shared) if shared else None
    return lambda tenant, key: by_tenant.get(tenant, default)
