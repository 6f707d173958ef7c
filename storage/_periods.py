"""Report periods as UTC time ranges (budgets and reports use UTC calendars),
and how a datetime becomes the ledger's text and epoch-millisecond columns."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

PERIODS = ("today", "week", "month", "all")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted


def _epoch_us(ts: datetime) -> int:
    if ts.tzinfo is None:  # naive: local time, as astimezone() reads it
        ts = ts.astimezone(timezone.utc)
    return (ts - _EPOCH) // _ONE_US


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch, exact: every `*_ms` column and query bound.

    Integer arithmetic: `int(ts.timestamp() * 1000)` puts some whole
    milliseconds one low (2004-08-25T22:08:30.008 gives …007).
    """
    return _epoch_us(ts) // 1000


def utc_stamp(ts: datetime) -> tuple[str, int]:
    """`ts.isoformat(timespec="microseconds")` in UTC, and `epoch_ms(ts)`.

    `isoformat` costs ~2.5 µs, a third of building a charge row; the
    "YYYY-MM-DDTHH:MM:SS" part is formatted once per second instead.
    """
    global _second
    us = _epoch_us(ts)
    sec, frac = divmod(us, 1_000_000)
    last = _second  # one read: another thread may replace it meanwhile
    if last[0] != sec:
        whole = ts.astimezone(timezone.utc).replace(microsecond=0, tzinfo=None)
        last = _second = (sec, whole.isoformat())
    return f"{last[1]}.{frac:06d}+00:00", us // 1000


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
