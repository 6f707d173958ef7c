"""Report periods as UTC time ranges (budgets and reports use UTC calendars)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

PERIODS = ("today", "week", "month", "all")


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[start, end) of a named period containing `now` (UTC).

    today: since 00:00 UTC; week: the last 7 UTC days including today;
    month: since the 1st of this UTC month; all: unbounded.
    """
    now = now.astimezone(timezone.utc)
    today = now.date()
    end = _midnight(today + timedelta(days=1))
    if period == "today":
        return _midnight(today), end
    if period == "week":
        return _midnight(today - timedelta(days=6)), end
    if period == "month":
        return _midnight(today.replace(day=1)), end
    if period == "all":
        return None, None
    raise ValueError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date like 2026-11-01, got {value!r}") from None


def parse_date_range(
    date_from: str | None, date_to: str | None
) -> tuple[datetime | None, datetime | None]:
    """`--from`/`--to` days (inclusive) -> [start, end) datetimes in UTC."""
    start = _midnight(_parse_day(date_from, "--from")) if date_from else None
    end = _midnight(_parse_day(date_to, "--to") + timedelta(days=1)) if date_to else None
    if start and end and start >= end:
        raise ValueError("--from must be on or before --to")
    return start, end
