"""Find the usage report (and the model name) in a response body cheaply.

A 1000 × 1536 embeddings body is ~20 MB of floats; parsing all of it to read
a 60-byte `usage` object at its end would cost more than the proxy's whole
budget. OpenAI puts `usage` after the payload (`choices`, `data`, `output`),
so `find_usage` scans backwards for the key, takes the balanced `{...}` after
it (respecting strings and escapes) and parses only that slice.

A `"usage"` inside a JSON string is always preceded by an escaped quote or
followed by something other than `:` (a string cannot contain a bare `"`),
so such matches are skipped; if a slice still fails to parse the previous
occurrence is tried, a bounded number of times, before falling back to a
full parse of bodies under 1 MiB.
"""

from __future__ import annotations

from typing import Any

import orjson

FULL_PARSE_LIMIT = 1 << 20
MAX_TRIES = 8
QUICK_TRIES = 8  # closing braces tried before walking the object byte by byte
MAX_USAGE_BYTES = 64 * 1024  # a usage object is tiny; anything bigger is not one

_WS = b" \t\r\n"


def find_usage(body: bytes) -> dict[str, Any] | None:
    """The `usage` object of a JSON response body (or SSE event data), or None."""
    if not body:
        return None
    view = bytes(body) if not isinstance(body, bytes) else body
    end = len(view)
    for _ in range(MAX_TRIES):
        at = view.rfind(b'"usage"', 0, end)
        if at < 0:
            break
        found = _object_after_key(view, at, len(b'"usage"'))
        if found is not None:
            return found
        end = at
    if len(view) < FULL_PARSE_LIMIT:
        return _usage_by_full_parse(view)
    return None


def find_json_str(body: bytes, key: str, limit: int = 4096) -> str | None:
    """The string value of the first `"key": "..."` in the first `limit` bytes."""
    if not body or not key:
        return None
    view = bytes(body[:limit])
    needle = orjson.dumps(key)
    start = 0
    for _ in range(MAX_TRIES):
        at = view.find(needle, start)
        if at < 0:
            return None
        start = at + 1
        if _escaped(view, at):
            continue
        i = _skip_ws(view, at + len(needle))
        if i >= len(view) or view[i] != ord(":"):
            continue
        i = _skip_ws(view, i + 1)
        if i >= len(view) or view[i] != ord('"'):
            continue
        close = _string_end(view, i)
        if close < 0:
            return None  # value runs past the limit
        try:
            value = orjson.loads(view[i : close + 1])
        except orjson.JSONDecodeError:
            continue
        return value if isinstance(value, str) else None
    return None


def _object_after_key(view: bytes, at: int, key_len: int) -> dict[str, Any] | None:
    if _escaped(view, at):
        return None
    i = _skip_ws(view, at + key_len)
    if i >= len(view) or view[i] != ord(":"):
        return None
    i = _skip_ws(view, i + 1)
    if i >= len(view) or view[i] != ord("{"):
        return None
    value = _first_object(view, i)
    if value is None:
        close = _object_end(view, i)
        if close < 0:
            return None
        try:
            value = orjson.loads(view[i : close + 1])
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _first_object(view: bytes, open_brace: int) -> Any:
    """The object at `open_brace`, found by counting braces in C; None if unsure.

    The first `}` after which the braces balance ends the object unless a
    string holds a brace; then the slice does not parse and the caller walks
    the object byte by byte. (A slice that parses is exactly the object: a JSON
    value is never a prefix of a longer one.)
    """
    end = open_brace
    stop = min(len(view), open_brace + MAX_USAGE_BYTES)
    for _ in range(QUICK_TRIES):
        end = view.find(b"}", end + 1, stop)
        if end < 0:
            return None
        if view.count(b"{", open_brace, end) == view.count(b"}", open_brace, end + 1):
            try:
                return orjson.loads(view[open_brace : end + 1])
            except orjson.JSONDecodeError:
                return None
    return None


def _escaped(view: bytes, quote_at: int) -> bool:
    """Is the quote at `quote_at` preceded by an odd number of backslashes?"""
    n = 0
    i = quote_at - 1
    while i >= 0 and view[i] == 0x5C:
        n += 1
        i -= 1
    return n % 2 == 1


def _skip_ws(view: bytes, i: int) -> int:
    while i < len(view) and view[i] in _WS:
        i += 1
    return i


def _string_end(view: bytes, open_quote: int) -> int:
    """Index of the quote closing the string opened at `open_quote`, or -1."""
    i = open_quote + 1
    while True:
        i = view.find(b'"', i)
        if i < 0:
            return -1
        if not _escaped(view, i):
            return i
        i += 1


def _object_end(view: bytes, open_brace: int) -> int:
    """Index of the `}` balancing the `{` at `open_brace`, or -1."""
    depth = 0
    i = open_brace
    stop = min(len(view), open_brace + MAX_USAGE_BYTES)
    while i < stop:
        c = view[i]
        if c == 0x22:  # '"'
            i = _string_end(view, i)
            if i < 0 or i >= stop:
                return -1
        elif c == 0x7B:  # '{'
            depth += 1
        elif c == 0x7D:  # '}'
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _usage_by_full_parse(view: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(view)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if isinstance(usage, dict):
        return usage
    response = doc.get("response")  # Responses API stream events
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]
    return None
