"""faregate.proxy — the aiohttp application and everything touching a connection.

Rooms, each a sub-package with a small surface (dependencies point one way,
edges -> billing -> quota -> caller -> base):

- `rest`, `realtime` — the edges: thin loops over the rooms below;
- `meter` — what was consumed (sans-IO meters) and the `Biller`;
- `quota` — may it spend: policy, budgets, rate limits, reservations, leases;
- `caller` — who is calling: identity, tags, ephemeral secrets;
- `alerts`, `admin` — budget alerts; the operator's API and dashboard;
- at the top: config, runtime (config in force, hot reload), services (the
  wiring), metrics, logging, capture, errors and the CLI.

Other rooms: `faregate.pricing` (pure prices and usage parsing) and
`faregate.storage` (the ledger).
"""

from ._app import SERVICES_KEY, build_app
from ._capture import Capture, Redactor
from ._config import (
    AlertSettings,
    ConfigError,
    ConfigProblem,
    Settings,
    load_settings,
    parse_settings,
)
from ._metrics import Metrics
from ._runtime import Runtime
from ._services import Services

__all__ = [
    "SERVICES_KEY",
    "AlertSettings",
    "Capture",
    "ConfigError",
    "ConfigProblem",
    "Metrics",
    "Redactor",
    "Runtime",
    "Services",
    "Settings",
    "build_app",
    "load_settings",
    "parse_settings",
]
