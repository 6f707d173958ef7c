"""What a budget alert says: the `Alert` value and its text renderings.

Kept apart from delivery (`_notify`): the Slack-compatible webhook body, the
machine-readable fields and the email subject/body are pure functions of an
`Alert`, tested without any network. A `Notice` is an operational line that
goes through the same channels (a model nobody can price, once a day): its
renderings are its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from faregate.storage import human_usd

from ..quota import level_for  # noqa: F401 - one rule for alert levels and budget statuses

_TENTH = Decimal("0.1")
_EMOJI = {"warning": ":warning:", "critical": ":rotating_light:", "exceeded": ":no_entry:"}
_COLOR = {"warning": "#e8a317", "critical": "#e0531f", "exceeded": "#c0161a"}


@dataclass(frozen=True)
class Alert:
    id: str  # stable dedupe id, e.g. "tenant:acme|month|2026-11|0.8"
    scope: str  # "tenant:acme" or "user:acme/alice"
    period: str  # "day" | "month"
    period_start: str  # "2026-11-23" or "2026-11"
    threshold: Decimal
    level: str  # level_for(threshold)
    limit_usd: Decimal
    spent_usd: Decimal
    used_ratio: Decimal
    projected_usd: Decimal  # period-end spend at the current run rate
    top_models: tuple[tuple[str, Decimal], ...]  # (model, usd), largest first
    at: datetime
    #: Charges whose usage report could not be true, charged at their reservations.
    implausible: int = 0
    implausible_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class Notice:
    """One operational line for the alert channels (not a budget threshold)."""

    id: str  # stable dedupe id, e.g. "unpriced|2026-11-23|acme-model"
    subject: str
    text: str  # the whole message (may span lines)
    fields: dict  # machine-readable, every value a string
    at: datetime
    level: str = "warning"


# -- rendering (pure) ---------------------------------------------------------------------


def _plain(d: Decimal) -> str:
    """Exact decimal string, never in exponent form."""
    return format(d, "f")


def _usd(d: Decimal) -> str:
    """Money for people (`human_usd`): cents from $1, 4 significant digits below."""
    return human_usd(int(d.scaleb(9)))


def _percent(ratio: Decimal, places: Decimal | None = None) -> str:
    pct = ratio * 100
    if places is not None:
        return format(pct.quantize(places, rounding=ROUND_HALF_UP), "f") + "%"
    return format(pct.normalize(), "f") + "%"


def describe_scope(scope: str) -> str:
    """'tenant:acme' -> 'tenant acme'; 'user:acme/alice' -> 'user acme/alice'."""
    kind, sep, name = scope.partition(":")
    return f"{kind} {name}" if sep else scope


def headline(alert: Alert) -> str:
    """The one readable line used as the webhook text."""
    line = (
        f"{_EMOJI.get(alert.level, ':bell:')} faregate budget {_percent(alert.threshold)} — "
        f"{describe_scope(alert.scope)}, {alert.period} {alert.period_start}: "
        f"{_usd(alert.spent_usd)} of {_usd(alert.limit_usd)} spent "
        f"({_percent(alert.used_ratio, _TENTH)}), "
        f"projected {_usd(alert.projected_usd)} at period end"
    )
    if alert.top_models:
        line += "; top: " + ", ".join(f"{m} {_usd(usd)}" for m, usd in alert.top_models)
    if alert.implausible:
        line += (f"; {alert.implausible} implausible usage report(s), "
                 f"{_usd(alert.implausible_usd)} charged at their reservations")
    return line


def machine_fields(alert: Alert) -> dict:
    """Every alert field as a string (money exact), for programs reading the webhook."""
    return {
        "id": alert.id,
        "scope": alert.scope,
        "period": alert.period,
        "period_start": alert.period_start,
        "threshold": _plain(alert.threshold),
        "level": alert.level,
        "limit_usd": _plain(alert.limit_usd),
        "spent_usd": _plain(alert.spent_usd),
        "used_ratio": _plain(alert.used_ratio),
        "projected_usd": _plain(alert.projected_usd),
        "top_models": [{"model": m, "usd": _plain(usd)} for m, usd in alert.top_models],
        "implausible_usage": {"charges": alert.implausible,
                              "usd": _plain(alert.implausible_usd)},
        "at": alert.at.isoformat(),
    }


def webhook_body(alert: "Alert | Notice") -> dict:
    if isinstance(alert, Notice):
        return {"text": alert.text, "faregate": {"id": alert.id, "level": alert.level,
                                                 **alert.fields, "at": alert.at.isoformat()}}
    text = headline(alert)
    return {
        "text": text,
        "attachments": [{
            "color": _COLOR.get(alert.level, "#888888"),
            "fallback": text,
            "fields": [
                {"title": "Spent", "value": f"{_usd(alert.spent_usd)} of "
                 f"{_usd(alert.limit_usd)}", "short": True},
                {"title": "Projected", "value": _usd(alert.projected_usd), "short": True},
            ],
        }],
        "faregate": machine_fields(alert),
    }


def email_subject(alert: "Alert | Notice") -> str:
    if isinstance(alert, Notice):
        return f"[faregate] {alert.subject}"
    return (f"[faregate] budget {_percent(alert.threshold)} — {describe_scope(alert.scope)} "
            f"({alert.period} {alert.period_start})")


def email_body(alert: "Alert | Notice") -> str:
    if isinstance(alert, Notice):
        return alert.text + "\n"
    rows = [
        ("Level", alert.level),
        ("Threshold", _percent(alert.threshold)),
        ("Scope", alert.scope),
        ("Period", f"{alert.period} {alert.period_start}"),
        ("Limit", f"{_usd(alert.limit_usd)} (exact {_plain(alert.limit_usd)})"),
        ("Spent", f"{_usd(alert.spent_usd)} (exact {_plain(alert.spent_usd)})"),
        ("Used", f"{_percent(alert.used_ratio, _TENTH)} (ratio {_plain(alert.used_ratio)})"),
        ("Projected", f"{_usd(alert.projected_usd)} at period end "
                      f"(exact {_plain(alert.projected_usd)})"),
        ("At", alert.at.isoformat()),
        ("Alert id", alert.id),
    ]
    if alert.implausible:
        rows.insert(-2, ("Implausible", f"{alert.implausible} usage report(s) that could not "
                         f"be true, {_usd(alert.implausible_usd)} (exact "
                         f"{_plain(alert.implausible_usd)}) charged at their reservations"))
    width = max(len(k) for k, _ in rows) + 2
    lines = [headline(alert).split(" ", 1)[1], ""]
    lines += [f"{k + ':':<{width}}{v}" for k, v in rows]
    if alert.top_models:
        lines += ["", "Top models this period:"]
        lines += [f"  {m}  {_usd(usd)} (exact {_plain(usd)})" for m, usd in alert.top_models]
    return "\n".join(lines) + "\n"


# -- SMTP target ---------------------------------------------------------------------------
