"""alerts — budget thresholds crossed, said once, delivered in the background.

`Alerting` decides that an alert fires (each threshold once per scope and
period, deduplicated across restarts and replicas through the ledger);
`Alert` and its renderings are pure text; `Notifier` delivers to the
webhook and e-mail channels off the request path. `UnpricedNotes` says,
once a day per model, that calls to a model without a price are recorded at
$0, with the config lines that price it.
"""

from ._alert import Alert, Notice, email_body, email_subject, headline, level_for, webhook_body
from ._alerting import Alerting, projected
from ._drift import DriftAlert, drift_headline
from ._notify import Notifier, parse_smtp_url
from ._unpriced import UnpricedNotes, unpriced_notice

__all__ = [
    "Alert",
    "Alerting",
    "Notice",
    "DriftAlert",
    "drift_headline",
    "Notifier",
    "UnpricedNotes",
    "unpriced_notice",
    "email_body",
    "email_subject",
    "headline",
    "level_for",
    "parse_smtp_url",
    "projected",
    "webhook_body",
]
