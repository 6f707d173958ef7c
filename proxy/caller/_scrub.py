"""Key fragments out of text: the upstream key, whole or masked, replaced.

An upstream that refuses a key names it in its error answer, masked the way
OpenAI masks keys — the first characters, a run of `*`, the last four
(`sk-upstr**********6789`). In keys mode that key is the operator's, and
even its fragments must not reach a tenant, a log line or the capture
store. `KeyScrubber` finds the whole key and every such masked form of it
(a prefix of the key, at least two `*` or an ellipsis, its last four) and
replaces them with `[upstream key]`. Pure; compiled once per key.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable

REPLACEMENT = "[upstream key]"
#: Keys shorter than this are not scrubbed by their fragments (too many false hits).
MIN_KEY = 12
#: The longest fragment looked for (a key plus its masking), for streamed scrubbing.
MAX_FRAGMENT = 1024

_KEY_CHARS = r"[A-Za-z0-9_\-]"
_MASK = r"(?:\*{2,}|\.{3}|\u2026)"


class _Key:
    __slots__ = ("key", "whole", "masked")

    def __init__(self, key: str) -> None:
        self.key = key
        self.whole = re.compile(re.escape(key))
        self.masked = re.compile(
            rf"(?P<pre>{_KEY_CHARS}{{0,{len(key)}}})(?P<mask>{_MASK})" + re.escape(key[-4:])
            + rf"(?!{_KEY_CHARS})")

    def _unmask(self, m: re.Match[str]) -> str:
        """Replace the key's own prefix, the mask and the last four; keep other text."""
        pre = m.group("pre")
        for cut in range(len(pre) + 1):  # the longest tail of `pre` that begins the key
            tail = pre[cut:]
            if self.key.startswith(tail):
                if len(tail) < 2 and len(m.group("mask")) < 3:
                    return m.group(0)  # "x**1234": too little to be this key's mask
                return pre[:cut] + REPLACEMENT
        return m.group(0)

    def scrub(self, text: str) -> str:
        if self.key in text:
            text = self.whole.sub(REPLACEMENT, text)
        if self.key[-4:] in text:
            text = self.masked.sub(self._unmask, text)
        return text


class KeyScrubber:
    """Replaces every form of the given keys in text or bytes."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(_Key(k) for k in dict.fromkeys(keys) if k and len(k) >= MIN_KEY)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def text(self, text: str) -> str:
        for key in self._keys:
            text = key.scrub(text)
        return text

    def bytes(self, data: bytes) -> bytes:
        if not self._keys:
            return data
        text = data.decode("utf-8", "surrogateescape")
        scrubbed = self.text(text)
        return data if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=512)
def scrubber_for(*keys: str) -> KeyScrubber:
    """The (cached) scrubber of these keys."""
    return KeyScrubber(keys)


def bare_key(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer …` value (or a bare key)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else authorization.strip()


def call_scrubber(authorization: str | None) -> KeyScrubber | None:
    """The scrubber for the key a call sends upstream, None when it sends none."""
    key = bare_key(authorization)
    return scrubber_for(key) if key and len(key) >= MIN_KEY else None
