"""Who minted which ephemeral Realtime key.

Browsers open Realtime sessions with a short-lived `ek_…` secret minted by a
backend through `POST /v1/realtime/client_secrets` (or the transcription
session endpoint). When that call goes through faregate, the secret is
noted here with the minting tenant, so the later WebSocket session that
presents it is attributed to that tenant — and, in keys mode, accepted as
an upstream credential. In memory, bounded, expiring; per replica.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ._identity import Caller, digest

MAX_SECRETS = 100_000
DEFAULT_TTL_S = 600
MAX_TTL_S = 7200


@dataclass(frozen=True, slots=True)
class Minted:
    caller: Caller
    expires_at: float  # unix seconds
    model: str | None = None  # the session's model, as minted


def secret_ref(secret: str) -> str:
    """How records name a minted key without holding it: "ek:" + part of its digest."""
    return "ek:" + digest(secret)[:32]


class SecretBook:
    def __init__(self, capacity: int = MAX_SECRETS):
        self._capacity = capacity
        self._by_digest: OrderedDict[str, Minted] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def note(self, secret: str, caller: Caller, expires_at: Any = None,
             model: str | None = None) -> float:
        """Remember who minted `secret`; returns when it expires (unix seconds, bounded)."""
        now = time.time()
        if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            expires_at = now + DEFAULT_TTL_S
        expires_at = min(float(expires_at), now + MAX_TTL_S)
        key = digest(secret)  # surrogate-escaped (non-UTF-8) header values hash too
        self._by_digest[key] = Minted(caller, expires_at, model)
        self._by_digest.move_to_end(key)
        while len(self._by_digest) > self._capacity:
            self._by_digest.popitem(last=False)
        return expires_at

    def lookup(self, secret: str) -> Caller | None:
        entry = self.minted(secret)
        return entry.caller if entry is not None else None

    def minted(self, secret: str) -> Minted | None:
        """The live record of `secret`, or None (unknown or expired)."""
        key = digest(secret)
        entry = self._by_digest.get(key)
        if entry is None:
            return None
        if entry.expires_at < time.time():
            del self._by_digest[key]
            return None
        return entry

    def caller(self, secret: str) -> Caller | None:
        """The minter of a live ephemeral secret, calling upstream with that secret."""
        minter = self.lookup(secret)
        if minter is None:
            return None
        return Caller(minter.tenant, minter.user, minter.tier, minter.key_id, f"Bearer {secret}")


def minted_secret(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(secret, expires_at) from a client_secrets / transcription_sessions answer."""
    value = body.get("value")
    expires = body.get("expires_at")
    if not isinstance(value, str):
        nested = body.get("client_secret")
        if isinstance(nested, dict):
            value, expires = nested.get("value"), nested.get("expires_at")
    if isinstance(value, str) and 8 <= len(value) <= 512:
        return value, expires
    return None
