"""One canonical path per request: the path that is classified, admitted and forwarded.

A hostile caller may spell one endpoint many ways — `/v1/./chat/completions`,
`/v1/%2e/responses`, `/v1//embeddings`, `/v1/chat/completions/`, escaped
letters — hoping that faregate classifies one string while the upstream (or
the HTTP client in between) normalises it to a paid endpoint. So the raw
request target is brought to one form here, and that form is what every
later step sees *and* what goes upstream:

* `.` segments, empty segments (doubled or trailing slashes) are dropped;
* percent-escapes of characters that need none (`%63hat`, `%2e`) are decoded;
* anything else that could be read two ways is refused (`None`, answered
  400 `invalid_path`): `..` segments, escaped slashes, backslashes, `;`,
  other escapes, control or non-ASCII characters, a path outside `/v1/`.

The usual path (plain segments, no escapes) is recognised by one regex match
and returned as it is.
"""

from __future__ import annotations

import re

#: pchar without `%` and `;`: what a canonical segment may contain.
_SEG_CHARS = r"A-Za-z0-9._~:@!$&'()*+,=-"
#: The common case: `/v1/...` of plain segments that do not start with a dot.
_PLAIN = re.compile(rf"/v1(?:/[{_SEG_CHARS.replace('.', '')}][{_SEG_CHARS}]*)+")
_SEGMENT = re.compile(rf"[{_SEG_CHARS}]+")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
#: Characters an escape may stand for and still be decoded (they need no escape).
_DECODABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,=")
MAX_PATH = 2048


def _unescape(segment: str) -> str | None:
    """`segment` with needless escapes decoded, or None if an escape hides anything else."""
    if "%" not in segment:
        return segment
    out = []
    pos = 0
    for m in _ESCAPE.finditer(segment):
        char = chr(int(m.group(1), 16))
        if char not in _DECODABLE:
            return None
        out.append(segment[pos:m.start()])
        out.append(char)
        pos = m.end()
    out.append(segment[pos:])
    decoded = "".join(out)
    return None if "%" in decoded else decoded


def canonical_path(raw_target: str) -> str | None:
    """The canonical `/v1/...` path of a raw request target (query ignored), or None
    when it cannot be given one unambiguous form."""
    raw = raw_target.split("?", 1)[0]
    if len(raw) > MAX_PATH:
        return None
    if _PLAIN.fullmatch(raw):
        return raw
    if not raw.startswith("/"):
        return None
    segments = []
    for part in raw.split("/")[1:]:
        if not part:
            continue  # "//" and a trailing "/"
        segment = _unescape(part)
        if segment is None or segment == "..":
            return None
        if segment == ".":
            continue
        if not _SEGMENT.fullmatch(segment):
            return None
        segments.append(segment)
    if len(segments) < 2 or segments[0] != "v1":
        return None
    return "/" + "/".join(segments)
