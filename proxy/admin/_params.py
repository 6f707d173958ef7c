"""Admin query parameters: untrusted, each checked, a bad one a 400 naming it."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from aiohttp import web

from faregate.storage import PERIODS, period_bounds

MAX_LIMIT = 1000


class BadParam(ValueError):
    """A query parameter is invalid; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def only(request: web.Request, names: tuple[str, ...]) -> None:
    """Refuse a parameter the route does not know (a typo must not widen a query)."""
    for name in request.query:
        if name not in names:
            shown = name[:64] if name.isprintable() else repr(name[:64])
            raise BadParam(name[:64], f"unknown parameter {shown!r}; this route takes "
                           f"{', '.join(names)}")


def text(request: web.Request, name: str, max_len: int = 256) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise BadParam(name, f"{name} must be at most {max_len} printable characters")
    return value


def choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = text(request, name) or default
    if value not in choices:
        raise BadParam(name, f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def limit(request: web.Request, default: int) -> int:
    raw = text(request, "limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParam("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def instant(request: web.Request, name: str, end_of_day: bool = False) -> datetime | None:
    """A date (`2026-11-01`) or an ISO-8601 instant; naive means UTC."""
    raw = text(request, name, 64)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            start = datetime.combine(date.fromisoformat(raw), time.min, timezone.utc)
            return start + timedelta(days=1) if end_of_day else start
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(name, f"{name} must be a date like 2026-11-01 or an ISO-8601 time") \
            from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def period_range(request: web.Request, now: datetime) -> tuple[str | None, datetime | None,
                                                         datetime | None]:
    """(period or None, start, end): `from`/`to` (inclusive days) win over `period`."""
    start, end = instant(request, "from"), instant(request, "to", end_of_day=True)
    if start is not None or end is not None:
        if start is not None and end is not None and start >= end:
            raise BadParam("from", "from must be before to")
        return None, start, end
    period = choice(request, "period", PERIODS, "month")
    start, end = period_bounds(period, now)
    return period, start, end


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat() if ts is not None else None


