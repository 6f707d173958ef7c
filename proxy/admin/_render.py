"""Ledger records as the admin API's JSON: money as exact decimal strings."""

from __future__ import annotations

from typing import Any

from faregate.pricing import INPUT_CLASSES, OUTPUT_CLASSES
from faregate.storage import AlertRecord, LedgerRecord, SessionRecord, format_usd, plain_decimal

from ._params import iso as _iso


def _usd_map(nanos: dict[str, int]) -> dict[str, str]:
    return {k: format_usd(v) for k, v in nanos.items()}


def charge_dict(r: LedgerRecord) -> dict[str, Any]:
    return {
        "id": r.id, "ts": _iso(r.ts), "tenant": r.tenant, "user": r.user, "key_id": r.key_id,
        "model": r.model, "endpoint": r.endpoint, "request_id": r.request_id,
        "status": r.status, "tokens": dict(r.tokens), "reasoning_tokens": r.reasoning_tokens,
        "seconds": plain_decimal(r.seconds),
        "characters": r.characters, "images": r.images, "cost_usd": format_usd(r.cost_nanos),
        "breakdown": _usd_map(r.breakdown), "savings_usd": format_usd(r.savings_nanos),
        "billed_usd": format_usd(r.billed), "price_version": r.price_version,
        "priced": r.priced, "estimated": r.estimated, "latency_ms": r.latency_ms,
        "flags": list(r.flags), "session_id": r.session_id, "response_id": r.response_id,
        "tags": dict(r.tags),
    }


def session_dict(s: SessionRecord, active: bool = False) -> dict[str, Any]:
    return {
        "id": s.id, "upstream_session_id": s.upstream_session_id, "tenant": s.tenant,
        "user": s.user, "model": s.model, "endpoint": s.endpoint,
        "started_at": _iso(s.started_at), "ended_at": None if active else _iso(s.ended_at),
        "duration_s": plain_decimal(s.duration_s), "responses": s.responses,
        "input_tokens": sum(s.tokens.get(c, 0) for c in INPUT_CLASSES),
        "output_tokens": sum(s.tokens.get(c, 0) for c in OUTPUT_CLASSES),
        "tokens": dict(s.tokens), "seconds": plain_decimal(s.seconds),
        "cost_usd": format_usd(s.cost_nanos), "breakdown": _usd_map(s.breakdown),
        "end_reason": None if active else s.end_reason, "active": active,
        "estimated": s.estimated, "flags": list(s.flags), "tags": dict(s.tags),
        "tool_calls": s.tool_calls,
    }


def alert_dict(a: AlertRecord) -> dict[str, Any]:
    return {
        "id": a.id, "scope": a.scope, "period": a.period, "period_start": a.period_start,
        "threshold": a.threshold, "level": a.level, "limit_usd": format_usd(a.limit_nanos),
        "spent_usd": format_usd(a.spent_nanos), "projected_usd": format_usd(a.projected_nanos),
        "at": _iso(a.at),
    }


