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

import asyncio
import operator
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


#: (key, second key) each grouping selects from rollup rows.
_KEYS = {"value": ("value", "NULL"), "tenant": ("tenant", "NULL"),
         "value, tenant": ("value", "tenant"), "bucket_ms": ("bucket_ms", "NULL"),
         "": ("NULL", "NULL")}


def rollup_sql(p: Placeholder, dialect: str, dim: str, span_s: int, lo: int | None,
               hi: int | None, tenant: str | None, keys: str) -> tuple[str, list[Any]]:
    """Rollup sums of one dimension and span by `keys` ("value", "tenant", …).

    PostgreSQL sums them (a hash aggregate). SQLite returns the rows as they
    are and `_add` sums them: its GROUP BY sorts every row of all its columns
    through a temporary b-tree (10 ms for one month of 500 users), while the
    rows are already one per key and bucket. Grouping by bucket alone follows
    the primary key's order, so there SQLite sums without sorting.
    """
    args: list[Any] = [dim, span_s]
    clauses = [f"dim = {p(1)}", f"span_s = {p(2)}"]
    for cond, value in (("bucket_ms >= {}", lo), ("bucket_ms < {}", hi), ("tenant = {}", tenant)):
        if value is not None:
            args.append(value)
            clauses.append(cond.format(p(len(args))))
    k, k2 = _KEYS[keys]
    if dialect == "sqlite" and keys != "bucket_ms":  # by bucket is the index's own order
        cols, group = ", ".join(USAGE_COLUMNS), ""
    else:
        cols = ", ".join(f"{_sum(dialect)}({c})" for c in USAGE_COLUMNS)
        group = f" GROUP BY {keys}" if keys else ""
    return (f"SELECT {k}, {k2}, {cols} FROM rollups WHERE {' AND '.join(clauses)}{group}", args)


def _key(k: Any) -> Any:
    return k if k is None or type(k) is str else str(k)


def _add(into: Sums, rows: Iterable[tuple[Any, ...]], day_keys: bool = False,
         ints: bool = False) -> None:
    """Sum rows (key, second key, *sums) into `into` by key.

    `ints`: the sums are ints already (rollup columns), not NULL or numeric
    (raw SUMs: PostgreSQL's are Decimal), so they are added as they come.
    """
    get = into.get
    add = operator.add
    for row in rows:
        k = row[0]
        if day_keys and k is not None:
            k = datetime.fromtimestamp(int(k) / 1000, timezone.utc).date().isoformat()
        key = (_key(k), _key(row[1]))
        vals = row[2:] if ints else [0 if v is None else int(v) for v in row[2:]]
        acc = get(key)
        into[key] = list(vals) if acc is None else list(map(add, acc, vals))


#: Rows folded between two turns of the event loop: a report never holds the
#: loop for long while proxied calls wait (SQLite rows are summed on the loop).
FOLD_ROWS = 512


async def _fold(into: Sums, rows: list[tuple[Any, ...]], **kw: bool) -> None:
    for start in range(0, len(rows), FOLD_ROWS):
        if start:
            await asyncio.sleep(0)
        _add(into, rows[start:start + FOLD_ROWS], **kw)


def _less(total: list[int], part: list[int] | None) -> list[int]:
    return list(total) if part is None else list(map(operator.sub, total, part))


async def _rollup_part(read, p: Placeholder, dialect: str, group_by: str, span_s: int,
                       lo: int | None, hi: int | None, tenant: str | None, into: Sums) -> None:
    tag = group_tag(group_by)
    if group_by in ("tenant", "day"):
        keys = "tenant" if group_by == "tenant" else "bucket_ms"
        await _fold(into, await read(*rollup_sql(p, dialect, "", span_s, lo, hi, tenant, keys)),
                    day_keys=group_by == "day", ints=True)
        return
    dim = f"tag:{tag}" if tag is not None else group_by
    keys = "value, tenant" if group_by == "user" else "value"
    found: Sums = {}
    await _fold(found, await read(*rollup_sql(p, dialect, dim, span_s, lo, hi, tenant, keys)),
                ints=True)
    if group_by in ("user", "key") or tag is not None:  # the share with no value
        by_scope: dict[Any, list[int]] = {}  # the values' sum per tenant (user) or overall
        for (_, k2), v in found.items():
            acc = by_scope.get(k2)
            by_scope[k2] = list(v) if acc is None else list(map(operator.add, acc, v))
        totals: Sums = {}
        await _fold(totals, await read(*rollup_sql(
            p, dialect, "", span_s, lo, hi, tenant, "tenant" if group_by == "user" else "")),
            ints=True)
        for (t, _), total in totals.items():
            scope = t if group_by == "user" else None
            rest = _less(total, by_scope.get(scope))
            if any(rest):  # not requests alone: a session's later charges count none
                found[(None, scope)] = rest
    _merge(into, found)


def _merge(into: Sums, more: Sums) -> None:
    if not into:
        into.update(more)
        return
    for key, v in more.items():
        acc = into.get(key)
        into[key] = v if acc is None else list(map(operator.add, acc, v))


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
            await _fold(sums, await read(*usage_sql(p, a, b, group_by, tenant, dialect)))
        else:
            await _rollup_part(read, p, dialect, group_by, SPANS[kind], a, b, tenant, sums)
    rows: list[UsageRow] = []
    for n, ((k, k2), v) in enumerate(sums.items()):
        if n and n % (FOLD_ROWS // 4) == 0:  # a row object costs ~4 folded rows
            await asyncio.sleep(0)
        if any(v):  # a group of a session's later charges has cost but no requests
            rows.append(UsageRow.of_sums(k, k2, v))
    return UsageReport.of(rows, group_by)


#: Spend rows: (tenant, user, month nanos, month calls, month images, day nanos, …).
SPEND = ("cost_nanos", "calls", "images")


def spend_sql(p: Placeholder, dialect: str, dim: str, span_s: int, since_ms: int
              ) -> tuple[str, list[Any]]:
    """Spend columns of one dimension and span since `since_ms`, per tenant (and value);
    like `rollup_sql`, summed in SQL on PostgreSQL only."""
    value = "value" if dim else "NULL"
    if dialect == "sqlite":
        cols, group = ", ".join(SPEND), ""
    else:
        cols = ", ".join(f"bigsum({c})" for c in SPEND)
        group = " GROUP BY tenant" + (", value" if dim else "")
    return (f"SELECT tenant, {value}, {cols} FROM rollups WHERE dim = {p(1)} "
            f"AND span_s = {p(2)} AND bucket_ms >= {p(3)}{group}", [dim, span_s, since_ms])


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
    per_tenant: Sums = {}
    _add(per_tenant, ((t, None, *v) for (t, _), v in users.items()))
    for (t, _), total in totals.items():
        rest = _less(total, per_tenant.get((t, None)))
        if any(rest):
            out.append((t, None, *rest))
    return out
