"""faregate.proxy — the aiohttp application and everything touching a connection.

Config loading and hot reload, identity, REST/SSE forwarding, metering of
finished calls, metrics and the CLI. Other rooms: `faregate.pricing`
(pure prices and usage parsing) and `faregate.storage` (the ledger).
"""

from ._app import STATE_KEY, build_app
from ._config import ConfigError, ConfigProblem, Settings, load_settings, parse_settings
from ._state import State

__all__ = [
    "STATE_KEY",
    "ConfigError",
    "ConfigProblem",
    "Settings",
    "State",
    "build_app",
    "load_settings",
    "parse_settings",
]
