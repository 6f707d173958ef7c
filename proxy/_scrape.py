"""Who may read `/metrics`: a bearer token, a separate listener, and a warning.

The metrics carry every tenant's spend and budget ratio, so they are not for
anyone who can reach the port. `[server] metrics_token_env` names a
variable holding a token that scrapers present as `Authorization: Bearer …`
(compared in constant time; with the variable unset, nothing is served).
`[server] metrics_listen` serves `/metrics` on its own address (and no longer
on `listen`), e.g. a port only the monitoring network reaches. With neither,
a `listen` address that is not loopback gets a warning at start.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Mapping

from aiohttp import web

from ._config import ServerSettings, parse_listen
from ._errors import openai_error, wrong_token


def metrics_refusal(request: web.Request, server: ServerSettings,
                    environ: Mapping[str, str] | None = None) -> web.Response | None:
    """None if the request may read the metrics; else the answer."""
    env = server.metrics_token_env
    if env is None:
        return None
    token = (os.environ if environ is None else environ).get(env)
    if not token:
        return openai_error(401, "invalid_request_error", "metrics_token_unset",
                            f"/metrics needs a bearer token, but ${env} is not set.")
    return wrong_token(request.headers, token, "metrics")


def elsewhere() -> web.Response:
    """`/metrics` on `listen` when it is served on `metrics_listen` instead."""
    return openai_error(404, "invalid_request_error", "metrics_elsewhere",
                        "Metrics are served on this faregate's [server] metrics_listen address.")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def exposure_warning(server: ServerSettings, listen: str | None = None,
                     environ: Mapping[str, str] | None = None) -> str | None:
    """Why `/metrics` may be readable by anyone who reaches faregate, or None."""
    env = os.environ if environ is None else environ
    if server.metrics_token_env and env.get(server.metrics_token_env):
        return None
    where = server.metrics_listen or listen or server.listen
    host, _ = parse_listen(where)
    if is_loopback(host):
        return None
    what = "[server] metrics_listen" if server.metrics_listen else "[server] listen"
    return (f"/metrics (every tenant's spend and budget ratios) is readable by anyone who "
            f"reaches {where} ({what} is not loopback): set [server] metrics_token_env "
            "(a bearer token) or metrics_listen (an address only the monitoring network "
            "reaches)")
