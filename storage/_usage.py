"""Usage and spend from rollups: any range, any grouping, exact to the nano-dollar.

A range [start, end) is cut into the pieces rollups answer and the pieces
they cannot (`plan`): whole UTC calendar months from month rows; whole days
from day rows; whole hours of the partial days from hour rows where the
grouping has them (tenant, day); what is left (a sub-hour edge, or a partial
day grouped by anything else) from the raw charges of that piece alone.
First a bound past the ledger's first or last charge is dropped (sums are
the same), so "this month so far" reads the month's rows. The periods
reports and the dashboard ask for (today, week, month, all, --from/--to
days) are whole days, so they read rollups only; their cost depends on the
months, days and distinct values in the range, not on how many charges it
holds.

A charge without a user (key, tag) has no rollup row in that dimension: the
"none" group is the tenant's total minus the rows that exist.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from ._periods import epoch_ms
from ._queries import Placeholder, group_tag, usage_sql
from ._report import UsageReport, UsageRow
from ._rollups import DAY_MS, DAY_S, HOUR_MS, HOUR_S, HOURLY, MONTH_S, USAGE_COLUMNS

Key = tuple[Any, Any]
Sums = dict[Key, list[int]]
_N = len(USAGE_COLUMNS)


def _floor(ms: int, step: int) -> int:
    return ms // step * step


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


def month_floor(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return epoch_ms(datetime(d.year, d.month, 1, tzinfo=timezone.utc))


def month_ceil(ms: int) -> int:
    low = month_floor(ms)
    if low == ms:
        return ms
    d = datetime.fromtimestamp(low / 1000, timezone.utc)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return epoch_ms(datetime(y, m, 1, tzinfo=timezone.utc))


Piece = tuple[str, "int | None", "int | None"]


def plan(start: int | None, end: int | None, hourly: bool, months: bool = True
         ) -> list[Piece]:
    """Pieces of [start, end): ("month"|"day"|"hour"|"raw", lo, hi), None meaning unbounded.

    `months=False` (grouping by day) cuts whole months into days instead."""
    floor, ceil = (month_floor, month_ceil) if months else \
        (lambda ms: _floor(ms, DAY_MS), lambda ms: _ceil(ms, DAY_MS))
    lo = None if start is None else ceil(start)
    hi = None if end is None else floor(end)
    if lo is None or hi is None or lo < hi:
        parts: list[Piece] = [("month" if months else "day", lo, hi)]
        rest = [(a, b) for a, b in ((start, lo), (hi, end))
                if a is not None and b is not None and a < b]
    else:
        parts, rest = [], [(start, end)] if start < end else []  # type: ignore[operator]
    for a, b in rest:
        parts += _days(a, b, hourly)
    return parts


def _days(a: int, b: int, hourly: bool) -> list[Piece]:
    lo_day, hi_day = _ceil(a, DAY_MS), _floor(b, DAY_MS)
    parts: list[Piece] = []
    edges = [(a, b)]
    if lo_day < hi_day:
        parts.append(("day", lo_day, hi_day))
        edges = [(x, y) for x, y in ((a, lo_day), (hi_day, b)) if x < y]
    for x, y in edges:
        lo_hour, hi_hour = _ceil(x, HOUR_MS), _floor(y, HOUR_MS)
        if not hourly or lo_hour >= hi_hour:
            parts.append(("raw", x, y))
            continue
        parts.append(("hour", lo_hour, hi_hour))
        parts += [("raw", m, n) for m, n in ((x, lo_hour), (hi_hour, y)) if m < n]
    return parts


SPANS = {"month": MONTH_S, "day": DAY_S, "hour": HOUR_S}
#: The first and last hour that holds a charge (rollups are kept forever).
EXTENT_SQL = ("SELECT (SELECT MIN(bucket_ms) FROM rollups WHERE dim = '' AND span_s = 3600), "
              "(SELECT MAX(bucket_ms) FROM rollups WHERE dim = '' AND span_s = 3600)")


def _sum(dialect: str) -> str:
    return "SUM" if dialect == "sqlite" else "bigsum"


def rollup_sql(p: Placeholder, dialect: str, dim: str, span_s: int, lo: int | None,
               hi: int | None, tenant: str | None, keys: str) -> tuple[str, list[Any]]:
    """Rollup sums of one dimension and span, grouped by `keys` ("value", "tenant", …)."""
    args: list[Any] = [dim, span_s]
    clauses = [f"dim = {p(1)}", f"span_s = {p(2)}"]
    for cond, value in (("bucket_ms >= {}", lo), ("bucket_ms < {}", hi), ("tenant = {}", tenant)):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))
    fn = _sum(dialect)
    sums = ", ".join(f"{fn}({c})" for c in USAGE_COLUMNS)
    select = {"value": "value, NULL", "tenant": "tenant, NULL", "value, tenant": "value, tenant",
              "bucket_ms": "bucket_ms, NULL", "": "NULL, NULL"}[keys]
    group = f" GROUP BY {keys}" if keys else ""
    return (f"SELECT {select}, {sums} FROM rollups WHERE {' AND '.join(clauses)}{group}", args)


def _add(into: Sums, rows: Iterable[tuple[Any, ...]], day_keys: bool = False) -> None:
    for k, k2, *vals in rows:
        if day_keys and k is not None:
            k = datetime.fromtimestamp(int(k) / 1000, timezone.utc).date().isoformat()
        key = (None if k is None else str(k), None if k2 is None else str(k2))
        acc = into.get(key)
        nums = [int(v or 0) for v in vals]
        if acc is None:
            into[key] = nums
        else:
            for i, v in enumerate(nums):
                acc[i] += v


def _less(total: list[int], parts: Iterable[list[int]]) -> list[int]:
    out = list(total)
    for part in parts:
        for i, v in enumerate(part):
            out[i] -= v
    return out


async def _rollup_part(read, p: Placeholder, dialect: str, group_by: str, span_s: int,
                       lo: int | None, hi: int | None, tenant: str | None, into: Sums) -> None:
    tag = group_tag(group_by)
    if group_by in ("tenant", "day"):
        keys = "tenant" if group_by == "tenant" else "bucket_ms"
        _add(into, await read(*rollup_sql(p, dialect, "", span_s, lo, hi, tenant, keys)),
             day_keys=group_by == "day")
        return
    dim = f"tag:{tag}" if tag is not None else group_by
    keys = "value, tenant" if group_by == "user" else "value"
    found: Sums = {}
    _add(found, await read(*rollup_sql(p, dialect, dim, span_s, lo, hi, tenant, keys)))
    if group_by in ("user", "key") or tag is not None:  # the share with no value
        totals: Sums = {}
        _add(totals, await read(*rollup_sql(
            p, dialect, "", span_s, lo, hi, tenant, "tenant" if group_by == "user" else "")))
        for (t, _), total in totals.items():
            scope = t if group_by == "user" else None
            rest = _less(total, (v for (_, k2), v in found.items() if k2 == scope))
            if rest[0] > 0:
                found[(None, scope)] = rest
    _add(into, ((k, k2, *v) for (k, k2), v in found.items()))


async def usage(read, p: Placeholder, dialect: str, start: datetime | None,
                end: datetime | None, group_by: str, tenant: str | None) -> UsageReport:
    """The usage report for [start, end), from rollups (and raw rows for sub-day edges)."""
    tag = group_tag(group_by)  # raises ValueError for an unknown grouping
    lo = None if start is None else epoch_ms(start)
    hi = None if end is None else epoch_ms(end)
    [(first, last)] = await read(EXTENT_SQL)
    if first is None:
        return UsageReport.of([], group_by)
    if lo is not None and lo <= int(first):
        lo = None
    if hi is not None and hi >= int(last) + HOUR_MS:
        hi = None
    hourly = tag is None and ("" if group_by in ("tenant", "day") else group_by) in HOURLY
    sums: Sums = {}
    for kind, a, b in plan(lo, hi, hourly, months=group_by != "day"):
        if kind == "raw":
            _add(sums, await read(*usage_sql(p, a, b, group_by, tenant, dialect)))
        else:
            await _rollup_part(read, p, dialect, group_by, SPANS[kind], a, b, tenant, sums)
    rows = [UsageRow.from_row((k, k2, *v)) for (k, k2), v in sums.items() if v[0] > 0]
    return UsageReport.of(rows, group_by)


#: Spend rows: (tenant, user, month nanos, month calls, month images, day nanos, …).
SPEND = ("cost_nanos", "calls", "images")


def spend_sql(p: Placeholder, dialect: str, dim: str, span_s: int, since_ms: int
              ) -> tuple[str, list[Any]]:
    fn = _sum(dialect)
    value = "value" if dim else "NULL"
    return (f"SELECT tenant, {value}, {', '.join(f'{fn}({c})' for c in SPEND)} FROM rollups "
            f"WHERE dim = {p(1)} AND span_s = {p(2)} AND bucket_ms >= {p(3)} GROUP BY tenant"
            + (", value" if dim else ""), [dim, span_s, since_ms])


async def spend_since(read, p: Placeholder, dialect: str, month_start: datetime,
                      day_start: datetime) -> list[tuple]:
    """Per (tenant, user) spend, calls and images since `month_start` (a UTC month
    start) and since `day_start` (a UTC midnight), from month and day rollups;
    user None is the tenant's rest."""
    month_ms, day_ms = epoch_ms(month_start), _floor(epoch_ms(day_start), DAY_MS)
    month = (MONTH_S, month_ms) if month_floor(month_ms) == month_ms else \
        (DAY_S, _floor(month_ms, DAY_MS))
    spend: dict[str, Sums] = {}
    for dim in ("user", ""):
        acc: Sums = {}
        for span, since, offset in (month + (0,), (DAY_S, day_ms, 3)):
            for t, u, *vals in await read(*spend_sql(p, dialect, dim, span, since)):
                row = acc.setdefault((t, None if u is None else str(u)), [0] * 6)
                for i, v in enumerate(vals):
                    row[offset + i] += int(v or 0)
        spend[dim] = acc
    users, totals = spend["user"], spend[""]
    out = [(t, u, *v) for (t, u), v in users.items()]
    for (t, _), total in totals.items():
        rest = _less(total, (v for (tt, _), v in users.items() if tt == t))
        if any(rest):
            out.append((t, None, *rest))
    return out
