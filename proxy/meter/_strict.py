"""Strict reading of untrusted JSON: a body or frame has one meaning, or it is refused.

What faregate admits must be what the upstream executes. A body faregate
cannot read (not JSON, a byte-order mark, invalid UTF-8, a number out of
range) might still be read by a more lenient upstream parser, and a key
given twice (`"model"` twice, or once plainly and once as `"mod\\u0065l"`)
may be read first-wins there and last-wins here. So `strict_json` refuses
all of those with `Unreadable`.

Cheap first: orjson parses; a regex over the raw bytes counts the keys that
matter for money; only when one of them appears twice, or a key is spelled
with an escape, is the body parsed again to look for a duplicate in any one
object.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: Keys whose value changes what a REST call may cost or which model runs.
BODY_KEYS = ("model", "max_tokens", "max_completion_tokens", "max_output_tokens", "n",
             "background", "stream", "prompt", "service_tier")
#: ... and what a Realtime/Live/Responses client event does (its `type` above all).
FRAME_KEYS = ("type", "model", "max_output_tokens", "max_response_output_tokens", "response",
              "session", "background")
#: A JSON string holding a \\u escape that is followed by a colon: an escaped key.
_ESCAPED_KEY = re.compile(rb'\\u[0-9a-fA-F]{4}(?:[^"\\]|\\.)*"\s*:')


def _key_pattern(keys: tuple[str, ...]) -> re.Pattern[bytes]:
    return re.compile(rb'"(' + b"|".join(k.encode() for k in keys) + rb')"\s*:')


_PATTERNS = {BODY_KEYS: _key_pattern(BODY_KEYS), FRAME_KEYS: _key_pattern(FRAME_KEYS)}


class Unreadable(ValueError):
    """The body or frame cannot be given one meaning; the message says why."""


def _duplicates(raw: bytes, keys: tuple[str, ...]) -> bool:
    """Does any one object hold one of `keys` twice (however it is spelled)?"""
    found = False
    watched = frozenset(keys)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        if not found and len(items) > 1:
            names = [k for k, _ in items if k in watched]
            found = len(names) != len(set(names))
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (RecursionError, ValueError):  # deeper than Python's parser goes: refuse
        return True
    return found


def _suspicious(raw: bytes, keys: tuple[str, ...]) -> bool:
    """One of `keys` appears twice anywhere, or some key is spelled with an escape."""
    found = _PATTERNS[keys].findall(raw)
    if len(found) != len(set(found)):
        return True
    # An escaped key needs a backslash: one memchr decides most bodies.
    return b"\\" in raw and _ESCAPED_KEY.search(raw) is not None


def strict_json(raw: bytes | str, keys: tuple[str, ...] = BODY_KEYS) -> Any:
    """The parsed value, or `Unreadable` when faregate and the upstream could disagree."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]
        raise Unreadable(f"not readable as JSON ({reason})") from None
    if isinstance(value, (dict, list)) and _suspicious(data, keys) and _duplicates(data, keys):
        raise Unreadable("a key that sets the model, a cap or the event type is given twice")
    return value
