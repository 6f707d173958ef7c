"""Who is calling: tenant, user and the credential that goes upstream.

Two modes (DESIGN §3 `[identity]`):

* ``passthrough`` — the caller's own OpenAI key is forwarded. If its sha256
  is listed in ``[[keys]]`` the entry names the tenant; otherwise, only when
  ``allow_header_identity`` is on, the tenant/user headers do; else the
  tenant is ``default``.
* ``keys`` — callers present a faregate key listed in ``[[keys]]``; it is
  swapped for the real key read from ``upstream_api_key_env`` — or the
  tenant's own ``[tenants.X] upstream_api_key_env`` (one OpenAI project per
  tenant, so the upstream isolates tenants too). An unknown key is refused
  with 401 and never reaches the upstream.

Keys are compared by sha256 digest in a dict lookup; the plaintext key is
never stored, logged, or recorded (the ledger gets a short fingerprint).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Mapping

from .._config import KeyEntry, Settings

log = logging.getLogger("faregate.identity")

DEFAULT_TENANT = "default"
MAX_NAME = 128
SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    user: str | None
    tier: str | None
    key_id: str | None  # fingerprint, safe to store
    upstream_authorization: str | None  # header value sent upstream
    upstream_header: str = "Authorization"  # or "api-key" ([server] upstream_auth, Azure)


class IdentityError(Exception):
    """The caller cannot be served; `status`, `type`, `code` and the message say why."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class UnknownKey(IdentityError):
    """Keys mode and the presented key is not in [[keys]] (or there is none)."""

    def __init__(self, given: bool = True) -> None:
        super().__init__(
            "Incorrect API key provided: this faregate does not know the key." if given else
            "You didn't provide an API key. You need to provide your faregate key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


class MissingUpstreamKey(IdentityError):
    """Keys mode but the upstream key variable is unset."""

    status = 500
    type = "api_error"
    code = "upstream_key_missing"

    def __init__(self, variable: str) -> None:
        super().__init__(f"faregate has no upstream key: ${variable} is not set.")


def digest(key: str) -> str:
    # Header values that are not UTF-8 arrive surrogate-escaped: hash their bytes as sent.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_id(hexdigest: str) -> str:
    """Short, non-reversible id of a key (from its sha256) for ledger rows and logs."""
    return "k_" + hexdigest[:12]


def clean_name(value: str | None) -> str | None:
    """Bound and sanitise a tenant/user name taken from untrusted input."""
    if value is None:
        return None
    value = "".join(ch for ch in value.strip() if ch.isprintable())[:MAX_NAME]
    return value or None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization") or headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("api-key")
    return api_key.strip() if api_key else None


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    """Does `Authorization: Bearer …` carry `token`? (Constant time; operator tokens.)"""
    auth = headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               token.encode("utf-8", "surrogateescape"))


class Directory:
    """The [[keys]] table, indexed by digest. Rebuilt on every config load."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.settings = settings
        self._by_digest: dict[str, KeyEntry] = {}
        for entry in settings.keys:
            if entry.sha256:
                self._by_digest[entry.sha256] = entry
            elif entry.key_env:  # an unset variable is a config warning (_preflight)
                value = env.get(entry.key_env)
                if value:
                    self._by_digest[digest(value)] = entry
        self._upstream_key = env.get(settings.server.upstream_api_key_env) or None
        self._api_key_header = settings.server.upstream_auth == "api-key"
        #: tenant -> (variable, its key or None): one upstream project per tenant
        self._tenant_keys: dict[str, tuple[str, str | None]] = {
            name: (t.upstream_api_key_env, env.get(t.upstream_api_key_env) or None)
            for name, t in settings.tenants.items() if t.upstream_api_key_env}
        for name, (variable, key) in self._tenant_keys.items():
            if settings.identity.mode != "keys":
                log.warning("a tenant's upstream key applies in keys mode only",
                            extra={"key_path": f"tenants.{name}.upstream_api_key_env"})
            elif key is None:
                log.warning("a tenant's upstream key variable is unset: its calls are refused",
                            extra={"key_path": f"tenants.{name}.upstream_api_key_env",
                                   "variable": variable})

    def upstream_keys(self) -> list[str]:
        """Every upstream key this config injects (to scrub their fragments everywhere)."""
        keys = [self._upstream_key] + [k for _, k in self._tenant_keys.values()]
        return [k for k in keys if k]

    def _upstream_key_for(self, tenant: str) -> str:
        """The upstream key a keys-mode call of `tenant` sends."""
        own = self._tenant_keys.get(tenant)
        if own is not None:
            variable, key = own
            if key is None:  # never fall back to the shared key: that would undo the isolation
                raise MissingUpstreamKey(variable)
            return key
        if not self._upstream_key:
            raise MissingUpstreamKey(self.settings.server.upstream_api_key_env)
        return self._upstream_key

    def server_authorization(self, tenant: str | None = None) -> str | None:
        """The upstream credential faregate holds itself (keys mode) for `tenant`, for
        calls it makes on a caller's behalf when the caller's own credential is not at
        hand."""
        if self.settings.identity.mode != "keys":
            return None
        try:
            return f"Bearer {self._upstream_key_for(tenant or '')}"
        except MissingUpstreamKey:
            return None

    def identify(
        self,
        token: str | None,
        headers: Mapping[str, str],
        body_user: str | None = None,
    ) -> Caller:
        """Resolve the caller or raise `UnknownKey` / `MissingUpstreamKey`."""
        ident = self.settings.identity
        hexdigest = digest(token) if token else None
        entry = self._by_digest.get(hexdigest) if hexdigest else None
        kid = key_id(hexdigest) if hexdigest else None
        header_tenant = header_user = None
        if ident.allow_header_identity:
            header_tenant = clean_name(headers.get(ident.tenant_header))
            header_user = clean_name(headers.get(ident.user_header))

        if ident.mode == "keys":
            if entry is None:
                raise UnknownKey(given=token is not None)
            upstream_key: str | None = self._upstream_key_for(entry.tenant)
        else:
            upstream_key = token

        if entry is not None:
            tenant = entry.tenant
            user = entry.user or header_user or clean_name(body_user)
            tier = entry.tier
        else:
            tenant = header_tenant or DEFAULT_TENANT
            user = header_user or clean_name(body_user)
            tier = None
        if tier is None:
            tenant_cfg = self.settings.tenants.get(tenant)
            tier = tenant_cfg.tier if tenant_cfg else None
        if upstream_key is None:
            return Caller(tenant, user, tier, kid, None)
        if self._api_key_header:
            return Caller(tenant, user, tier, kid, upstream_key, "api-key")
        return Caller(tenant, user, tier, kid, f"Bearer {upstream_key}")
