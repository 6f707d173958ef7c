"""Rollups: the sums every report, budget and dashboard reads, kept as charges arrive.

One table, `rollups`, holds per-bucket sums of charges. A row is keyed by
(dim, span_s, bucket_ms, tenant, value):

- `dim` says what `value` is: '' (the tenant's total; value ''), 'model',
  'endpoint', 'user', 'key' or 'tag:<key>';
- `span_s` is the bucket: an hour (3600), a UTC day (86400) or a UTC calendar
  month (`MONTH_S`, a marker: months differ in length);
- `bucket_ms` is the bucket's start, epoch milliseconds.

Every dimension has day and month rows; the tenant total also has hour rows
(sub-day ranges grouped by tenant or day read hours; by anything else they
read the raw rows of the partial days, see `_usage`). Month rows keep a
month's report as small as its number of distinct values (a month of 500
users is 500 rows, not 15,500). Each rollup row a batch touches costs an
upsert, so hour rows are kept only where they are few. A charge with no
user (or key, or tag) has no row in that dimension: its share is the
tenant's total minus the rows that do exist, so NULL never needs a key.

Rollups are updated in the same transaction as the charges they sum, from
exactly the rows that transaction inserted: on SQLite the batch's new
rowids (`INSERT OR IGNORE` gives ids already present no rowid), on
PostgreSQL a statement trigger over the transition table of new rows (an
`ON CONFLICT DO NOTHING` skip is not in it). A replayed charge therefore
never adds to a sum twice. Sums are integers on both backends (PostgreSQL's
own `sum(bigint)` is numeric and slow; `bigsum` adds with `int8pl`, which
raises on overflow rather than wrapping).
"""

from __future__ import annotations

from ._queries import FALLBACK_SQL, FLAGGED, MAX_VALUE, REQUEST_SQL, UNCONFIRMED_SQL
from ._record import TOKEN_COLUMNS

HOUR_S, DAY_S = 3600, 86400
#: The span of a calendar-month row (a marker, not a length).
MONTH_S = 31 * DAY_S
HOUR_MS, DAY_MS = HOUR_S * 1000, DAY_S * 1000
#: Dimension values are cut to MAX_VALUE characters (an index entry must stay
#: bounded; raw queries cut them the same way), tag keys to MAX_TAG_KEY.
MAX_TAG_KEY = 64

#: (column, SQLite aggregate over charges, PostgreSQL aggregate over charges), in
#: `UsageRow.from_row` order; `calls` (charges that are requests of their own, not
#: a session's responses: what request quotas count) comes last.


def _sum(col: str) -> tuple[str, str]:
    return f"SUM({col})", f"bigsum({col})"


def _count_if(cond: str) -> tuple[str, str]:
    return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)", f"count(*) FILTER (WHERE {cond})"


def _sum_if(col: str, cond: str) -> tuple[str, str]:
    return f"SUM(CASE WHEN {cond} THEN {col} ELSE 0 END)", f"bigsum({col}) FILTER (WHERE {cond})"


SUMS: tuple[tuple[str, str, str], ...] = tuple((name, *agg) for name, agg in (
    ("requests", _count_if(REQUEST_SQL)),  # a session counts once (`_queries.REQUEST_SQL`)
    *((f"{c}_tokens", _sum(f"{c}_tokens")) for c in TOKEN_COLUMNS),
    ("reasoning_tokens", _sum("reasoning_tokens")),
    ("seconds_ms", _sum("seconds_ms")),
    ("characters", _sum("characters")),
    ("images", _sum("images")),
    ("cost_nanos", _sum("cost_nanos")),
    ("unpriced", _count_if("priced = 0")),
    ("estimated", _count_if("estimated = 1")),
    ("estimated_cost_nanos", _sum_if("cost_nanos", "estimated = 1")),
    ("savings_nanos", _sum("savings_nanos")),
    ("billed_nanos", _sum("COALESCE(billed_nanos, cost_nanos)")),
    ("fallback", _count_if(FALLBACK_SQL)),
    ("fallback_cost_nanos", _sum_if("cost_nanos", FALLBACK_SQL)),
    ("unconfirmed", _count_if(UNCONFIRMED_SQL)),
    ("unconfirmed_cost_nanos", _sum_if("cost_nanos", UNCONFIRMED_SQL)),
    *((name, agg) for flag in FLAGGED for name, agg in (
        (flag.removeprefix("usage_"), _count_if(f"flags LIKE '%{flag}%'")),
        (f"{flag.removeprefix('usage_')}_cost_nanos",
         _sum_if("cost_nanos", f"flags LIKE '%{flag}%'")))),
    ("calls", _count_if("session_id IS NULL")),  # a session's responses carry its id
))
SUM_COLUMNS: tuple[str, ...] = tuple(s[0] for s in SUMS)
#: The sums a usage row carries (all but `calls`).
USAGE_COLUMNS = SUM_COLUMNS[:-1]
KEY_COLUMNS = ("dim", "span_s", "bucket_ms", "tenant", "value")
COLUMNS = KEY_COLUMNS + SUM_COLUMNS

#: (dim, spans, expression over a charge): the rollup rows a charge adds to
#: (tags are added per key, at the spans of TAG_SPANS).
DIMS: tuple[tuple[str, tuple[int, ...], str], ...] = (
    ("", (HOUR_S, DAY_S, MONTH_S), "''"), ("model", (DAY_S, MONTH_S), "model"),
    ("endpoint", (DAY_S, MONTH_S), "endpoint"), ("user", (DAY_S, MONTH_S), "user_id"),
    ("key", (DAY_S, MONTH_S), "key_id"),
)
TAG_SPANS = (DAY_S, MONTH_S)
HOURLY = frozenset(d for d, spans, _ in DIMS if HOUR_S in spans)
#: The charge columns that tell the rollup rows apart (plus the hour).
_FINE = ("tenant", "user_id", "key_id", "model", "endpoint", "tags")
#: On SQLite, dimensions of many values (a batch touches about one per charge)
#: are summed straight from the new charges, once per day, then folded into
#: day and month rows; the others from a first sum of the batch over `_SMALL`
#: (SQLite's grouped aggregates cost per input row and column, so each charge
#: should be read as few times as possible).
_WIDE = frozenset({"user", "key"})
_SMALL = ("tenant", "model", "endpoint", "tags")


def table_sql(dialect: str) -> str:
    """CREATE TABLE rollups for a dialect."""
    sums = ",\n    ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in SUM_COLUMNS)
    tail = " WITHOUT ROWID" if dialect == "sqlite" else " WITH (fillfactor = 50)"
    return (
        "CREATE TABLE IF NOT EXISTS rollups (\n"
        "    dim TEXT NOT NULL,\n    span_s INTEGER NOT NULL,\n    bucket_ms BIGINT NOT NULL,\n"
        f"    tenant TEXT NOT NULL,\n    value TEXT NOT NULL,\n    {sums},\n"
        f"    PRIMARY KEY ({', '.join(KEY_COLUMNS)})\n){tail}"
    )


def _fine_select(dialect: str, source: str, where: str, keys: tuple[str, ...] = _FINE) -> str:
    """Charges summed per hour and per distinct value of `keys`."""
    i = 1 if dialect == "sqlite" else 2
    aggs = ", ".join(f"{s[i]} AS {s[0]}" for s in SUMS)
    return (f"SELECT (ts_ms / {HOUR_MS}) * {HOUR_MS} AS bucket_ms, {', '.join(keys)}, {aggs} "
            f"FROM {source} {where} GROUP BY 1, {', '.join(str(n + 2) for n in range(len(keys)))}")


def _upsert_tail(dialect: str) -> str:
    own = "" if dialect == "sqlite" else "r."
    sets = ", ".join(f"{c} = {own}{c} + excluded.{c}" for c in SUM_COLUMNS)
    return f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {sets}"


def merge_sql(dialect: str) -> str:
    """INSERT one rollup row (all COLUMNS as parameters), adding to an existing one."""
    marks = ", ".join("?" if dialect == "sqlite" else f"${n + 1}" for n in range(len(COLUMNS)))
    return (f"INSERT INTO rollups {'' if dialect == 'sqlite' else 'AS r '}"
            f"({', '.join(COLUMNS)}) VALUES ({marks}) {_upsert_tail(dialect)}")


def _resum(dialect: str, prefix: str = "") -> str:
    fn = "SUM" if dialect == "sqlite" else "bigsum"
    return ", ".join(f"{fn}({prefix}{c})" for c in SUM_COLUMNS)


# -- SQLite: statements over a batch's new rowids -------------------------------

def _sqlite_bucket(span: int, col: str) -> str:
    if span == MONTH_S:
        return f"CAST(strftime('%s', {col} / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000"
    return f"({col} / {span * 1000}) * {span * 1000}"


def _temp(name: str, keys: tuple[str, ...]) -> str:
    return (f"CREATE TEMP TABLE IF NOT EXISTS {name} (bucket_ms INTEGER, "
            + ", ".join(f"{c} TEXT" for c in keys) + ", "
            + ", ".join(f"{c} INTEGER" for c in SUM_COLUMNS)
            + f", PRIMARY KEY (bucket_ms, {', '.join(keys)}))")


SQLITE_TEMP_TABLES = (_temp("rollup_fresh", _SMALL), _temp("rollup_wide", ("tenant", "value")))
_NEW_ROWS = "WHERE rowid > ? AND rowid <= ?"


def _row_value(sqlite_aggregate: str) -> str:
    """One charge's contribution to an aggregate: COUNT(*) -> 1, SUM(x) -> x."""
    return "1" if sqlite_aggregate == "COUNT(*)" else sqlite_aggregate[len("SUM("):-1]


#: Each charge's contribution to every sum, in SUM_COLUMNS order.
_ROW_VALUES = ", ".join(_row_value(s[1]) for s in SUMS)


def _sqlite_statements() -> tuple[tuple[str, bool], ...]:
    """(statement, takes the rowid range) that fold the charges with rowid in (?, ?]
    into rollups, through two temp tables, which they leave empty.

    Each charge is read twice: added by hour to its (tenant, model, endpoint,
    tags) row of temp.rollup_fresh, and by day to its user's (then key's) row
    of temp.rollup_wide. Both are upserts into small keyed tables: SQLite's
    GROUP BY would sort every row with all its columns first, about twice
    the work. Rollup rows are then upserted from those, row by row (two temp
    rows of one rollup row, two hours of one day, simply add up).
    """
    into = f"INSERT INTO rollups ({', '.join(COLUMNS)}) "
    tail = _upsert_tail("sqlite")
    sums = ", ".join(SUM_COLUMNS)
    fold = "ON CONFLICT DO UPDATE SET " + ", ".join(
        f"{c} = {c} + excluded.{c}" for c in SUM_COLUMNS)
    out = [(f"INSERT INTO temp.rollup_fresh SELECT {_sqlite_bucket(HOUR_S, 'ts_ms')}, "
            f"{', '.join(_SMALL)}, {_ROW_VALUES} FROM charges {_NEW_ROWS} {fold}", True)]
    for dim, spans, expr in DIMS:
        if dim in _WIDE:  # one pass over the charges per day, then day and month rows
            out.append((f"INSERT INTO temp.rollup_wide SELECT {_sqlite_bucket(DAY_S, 'ts_ms')}, "
                        f"tenant, substr({expr}, 1, {MAX_VALUE}), {_ROW_VALUES} FROM charges "
                        f"{_NEW_ROWS} AND {expr} IS NOT NULL {fold}", True))
            source, value = "temp.rollup_wide", "value"
        else:
            source, value = "temp.rollup_fresh", f"substr({expr}, 1, {MAX_VALUE})"
        for span in spans:
            out.append((f"{into}SELECT '{dim}', {span}, {_sqlite_bucket(span, 'bucket_ms')}, "
                        f"tenant, {value}, {sums} FROM {source} WHERE true {tail}", False))
        if dim in _WIDE:
            out.append(("DELETE FROM temp.rollup_wide", False))
    tags = ("COALESCE(CASE WHEN f.tags <> '{}' AND json_valid(f.tags) THEN "
            "CASE WHEN json_type(f.tags) = 'object' THEN f.tags END END, '{}')")
    for span in TAG_SPANS:
        out.append((
            f"{into}SELECT 'tag:' || substr(j.key, 1, {MAX_TAG_KEY}), {span}, "
            f"{_sqlite_bucket(span, 'f.bucket_ms')}, f.tenant, "
            f"substr(CAST(j.value AS TEXT), 1, {MAX_VALUE}), "
            f"{', '.join('f.' + c for c in SUM_COLUMNS)} "
            f"FROM temp.rollup_fresh f, json_each({tags}) j WHERE j.value IS NOT NULL {tail}",
            False))
    out.append(("DELETE FROM temp.rollup_fresh", False))
    return tuple(out)


SQLITE_ROLL_UP = _sqlite_statements()


def sqlite_roll_up(conn, after_rowid: int, upto_rowid: int) -> None:
    """Add the charges with rowid in (after_rowid, upto_rowid] to the rollups (caller's txn)."""
    for table in SQLITE_TEMP_TABLES:
        conn.execute(table)
    for statement, ranged in SQLITE_ROLL_UP:
        conn.execute(statement, (after_rowid, upto_rowid) if ranged else ())


# -- PostgreSQL: one statement over a relation of new charges ----------------------

#: Epoch ms of the UTC month start of an epoch-ms value (PostgreSQL).
PG_MONTH_FUNCTION = (
    "CREATE OR REPLACE FUNCTION faregate_month_ms(ms bigint) RETURNS bigint "
    "LANGUAGE sql IMMUTABLE AS $$ SELECT (extract(epoch FROM date_trunc('month', "
    "to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC')) * 1000)::bigint $$"
)


def pg_roll_up_sql(source: str) -> str:
    """INSERT … ON CONFLICT that adds every charge of `source` (a relation or subquery)."""
    exprs = ", ".join(f"('{d}', {span}, {('f.' + e) if e != chr(39) * 2 else e})"
                      for d, spans, e in DIMS for span in spans)
    tags = ("jsonb_each_text(CASE WHEN f.tags <> '{}' AND f.tags IS JSON OBJECT "
            "THEN f.tags::jsonb ELSE '{}'::jsonb END)")
    tag_rows = " UNION ALL ".join(
        f"SELECT 'tag:' || left(t.key, {MAX_TAG_KEY}), {span}, t.value FROM {tags} t"
        for span in TAG_SPANS)
    return (
        f"WITH f AS ({_fine_select('postgresql', source, '')}) "
        f"INSERT INTO rollups AS r ({', '.join(COLUMNS)}) "
        f"SELECT x.dim, x.span_s, CASE WHEN x.span_s = {MONTH_S} THEN "
        f"faregate_month_ms(f.bucket_ms) ELSE f.bucket_ms / (x.span_s * 1000) * "
        f"(x.span_s * 1000) END, f.tenant, left(x.value, {MAX_VALUE}), "
        f"{_resum('postgresql', 'f.')} "
        f"FROM f CROSS JOIN LATERAL (VALUES {exprs} UNION ALL {tag_rows}"
        f") x(dim, span_s, value) WHERE x.value IS NOT NULL "
        f"GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 {_upsert_tail('postgresql')}"
    )


#: The trigger that keeps rollups in step with every statement inserting charges.
PG_TRIGGER_SQL = (
    PG_MONTH_FUNCTION,
    "CREATE OR REPLACE FUNCTION faregate_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    f"BEGIN\n  {pg_roll_up_sql('fresh')};\n  RETURN NULL;\nEND $$",
    "DROP TRIGGER IF EXISTS charges_roll_up ON charges",
    "CREATE TRIGGER charges_roll_up AFTER INSERT ON charges REFERENCING NEW TABLE AS fresh "
    "FOR EACH STATEMENT EXECUTE FUNCTION faregate_roll_up()",
)
