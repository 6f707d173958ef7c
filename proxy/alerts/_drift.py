"""What a reconciliation alert says: a UTC day on which faregate's ledger and the
provider's bill differ by more than `[provider] drift_tolerance`.

Delivered like budget alerts (same channels, same notifier); these are its
pure text renderings, chosen by `render_webhook` / `render_email`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from faregate.storage import format_usd, human_usd

from ._alert import Alert, email_body, email_subject, webhook_body


@dataclass(frozen=True)
class DriftAlert:
    id: str  # "reconcile|project|proj_abc|2026-11-03": sent once
    grouping: str
    group: str
    day: str
    ledger_nanos: int
    provider_nanos: int
    drift_ratio: Decimal | None
    tolerance: Decimal
    notes: tuple[str, ...]
    at: datetime
    level: str = "warning"


def _pct(ratio: Decimal | None) -> str:
    return "n/a" if ratio is None else format((ratio * 100).quantize(Decimal("0.01")), "f") + "%"


def drift_headline(a: DriftAlert) -> str:
    drift = a.provider_nanos - a.ledger_nanos
    line = (f":mag: faregate reconcile — {a.grouping} {a.group}, {a.day}: ledger "
            f"{human_usd(a.ledger_nanos)}, OpenAI {human_usd(a.provider_nanos)}, drift "
            f"{human_usd(drift)} ({_pct(a.drift_ratio)}; tolerance {_pct(a.tolerance)})")
    return line + (f"; {', '.join(a.notes)}" if a.notes else "")


def drift_fields(a: DriftAlert) -> dict:
    return {
        "id": a.id, "kind": "reconcile", "grouping": a.grouping, "group": a.group,
        "date": a.day, "ledger_usd": format_usd(a.ledger_nanos),
        "provider_usd": format_usd(a.provider_nanos),
        "drift_usd": format_usd(a.provider_nanos - a.ledger_nanos),
        "drift_ratio": None if a.drift_ratio is None else format(
            a.drift_ratio.quantize(Decimal("0.000001")), "f"),
        "tolerance": format(a.tolerance, "f"), "notes": list(a.notes), "level": a.level,
        "at": a.at.isoformat(),
    }


def render_webhook(alert: Alert | DriftAlert) -> dict:
    """The Slack-compatible body of either kind of alert."""
    if not isinstance(alert, DriftAlert):
        return webhook_body(alert)
    text = drift_headline(alert)
    return {"text": text, "attachments": [{"color": "#e8a317", "fallback": text}],
            "faregate": drift_fields(alert)}


def render_email(alert: Alert | DriftAlert) -> tuple[str, str]:
    """(subject, body) of either kind of alert."""
    if not isinstance(alert, DriftAlert):
        return email_subject(alert), email_body(alert)
    subject = f"[faregate] reconcile drift — {alert.grouping} {alert.group} ({alert.day})"
    body = drift_headline(alert).split(" ", 1)[1] + "\n\n" + "\n".join(
        f"{k}: {v}" for k, v in drift_fields(alert).items() if k != "notes") + "\n"
    return subject, body
