"""alerts — budget thresholds crossed, said once, delivered in the background.

`Alerting` decides that an alert fires (each threshold once per scope and
period, deduplicated across restarts and replicas through the ledger);
`Alert` and its renderings are pure text; `Notifier` delivers to the
webhook and e-mail channels off the request path.
"""

from ._alert import Alert, email_body, email_subject, headline, level_for, webhook_body
from ._alerting import Alerting, projected
from ._drift import DriftAlert, drift_headline
from ._notify import Notifier, parse_smtp_url

__all__ = [
    "Alert",
    "Alerting",
    "DriftAlert",
    "drift_headline",
    "Notifier",
    "email_body",
    "email_subject",
    "headline",
    "level_for",
    "parse_smtp_url",
    "projected",
    "webhook_body",
]
