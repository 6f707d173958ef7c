"""Which request paths may go upstream.

Only plain `/v1/...` paths are forwarded: no `..` (plain or encoded), no
encoded slash or backslash that could make the upstream see a path outside
`/v1/`, and no control characters (a decoded `%0A` must not reach a
request line).
"""

from __future__ import annotations

import re

from aiohttp import web

#: In the raw path (lowercased): dot segments, plain or encoded, encoded slashes, backslashes.
_UNSAFE = re.compile(r"/\.\.|/\.%2e|%2e%2e|%2e\.|%2f|%5c|\\")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_path(request: web.Request) -> bool:
    """True when the request's path may be forwarded as it is."""
    path = request.path
    raw = request.raw_path.split("?", 1)[0].lower()
    return (path.startswith("/v1/") and _UNSAFE.search(raw) is None
            and _CONTROL.search(path) is None)
