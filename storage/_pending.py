"""Spend the journal holds and the database does not have yet (start counts everything).

After a crash, or a restart while the database lags or is locked, the
journal of the earlier run holds charges the database may not have. Budget
counters start as rollups plus exactly those charges: each journal charge
is looked up by id (and a session response by its (session, response) key)
in the *same* snapshot the rollups are read from, so a charge the writer
commits meanwhile is counted once — in the snapshot or from the journal,
never both, never neither. Files are opened before the snapshot is taken:
a segment the writer deletes afterwards (all of it confirmed after the
snapshot) is still read through its open file.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterable, Sequence

from ._journal import decode_line
from ._kinds import CHARGES
from ._markers import MARKER, UNMARK, charge_row

_I = {c: n for n, c in enumerate(CHARGES.columns)}
_ID, _TS, _TENANT, _USER = _I["id"], _I["ts_ms"], _I["tenant"], _I["user_id"]
_COST, _IMAGES, _SESSION, _RESPONSE = _I["cost_nanos"], _I["images"], _I["session_id"], \
    _I["response_id"]
CHUNK = 500

#: (id, tenant, user, ts_ms, cost_nanos, is a call, images, session_id, response_id);
#: a call is a charge of its own, not one of a session's responses
Pending = tuple[str, str, Any, int, int, bool, int, Any, Any]


def journal_charges(files: Sequence[BinaryIO], since_ms: int) -> list[Pending]:
    """Charges at or after `since_ms` in these journal files, first of each id (a thread).

    A start marker whose charge never came (nor an `unmark`) is the call a crash cut
    off: it counts at its reservation, as its replay will charge it."""
    seen: set[str] = set()
    out: list[Pending] = []
    markers: dict[str, tuple] = {}
    done: set[str] = set()  # markers charged or unmarked
    for f in files:
        with f:
            data = f.read()
        for line in data.split(b"\n"):
            entry = decode_line(line, 0) if line else None
            if entry is None:
                continue
            if entry.kind == MARKER and entry.row:
                markers.setdefault(str(entry.row[0]), (entry.row, entry.at_ms))
                continue
            if entry.kind == UNMARK and entry.row:
                done.add(str(entry.row[0]))
                continue
            if entry.kind != CHARGES.name:
                continue
            if entry.row:
                done.add(str(entry.row[0]))
            _add(entry.row, seen, since_ms, out)
    for rid, (row, at_ms) in markers.items():
        if rid not in done:
            try:
                _add(charge_row(row, at_ms), seen, since_ms, out)
            except (TypeError, ValueError):
                continue  # an unreadable marker: its replay skips it too
    return out


def _add(row: Any, seen: set[str], since_ms: int, out: list[Pending]) -> None:
    try:
        r = CHARGES.fit(row)
    except ValueError:
        return
    if r[_ID] in seen or int(r[_TS]) < since_ms:
        return
    seen.add(r[_ID])
    out.append((r[_ID], r[_TENANT], r[_USER], int(r[_TS]), int(r[_COST]),
                r[_SESSION] is None, int(r[_IMAGES]), r[_SESSION], r[_RESPONSE]))


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


async def not_stored(view: Any, dialect: str, charges: list[Pending]) -> list[Pending]:
    """The charges the snapshot `view` does not hold (by id, then by session response)."""
    stored: set[str] = set()
    for chunk in _chunks([c[0] for c in charges], CHUNK):
        if dialect == "postgresql":
            rows = await view.read("SELECT id FROM charges WHERE id = ANY($1::text[])", [chunk])
        else:
            marks = ", ".join("?" for _ in chunk)
            rows = await view.read(f"SELECT id FROM charges WHERE id IN ({marks})", chunk)
        stored.update(r[0] for r in rows)
    rest = [c for c in charges if c[0] not in stored]
    pairs = sorted({(c[7], c[8]) for c in rest if c[7] is not None and c[8] is not None})
    taken: set[tuple[str, str]] = set()
    for chunk in _chunks(pairs, CHUNK):
        if dialect == "postgresql":
            rows = await view.read(
                "SELECT session_id, response_id FROM charge_responses WHERE (session_id, "
                "response_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [[s for s, _ in chunk], [r for _, r in chunk]])
        else:
            marks = ", ".join("(?, ?)" for _ in chunk)
            rows = await view.read(
                "SELECT session_id, response_id FROM charges WHERE session_id IS NOT NULL "
                f"AND (session_id, response_id) IN (VALUES {marks})",
                [x for pair in chunk for x in pair])
        taken.update((s, r) for s, r in rows)
    out = []
    for c in rest:
        pair = (c[7], c[8])
        if None not in pair:
            if pair in taken:
                continue  # this response is stored under another id: a repeat
            taken.add(pair)
        out.append(c)
    return out


def spend_rows(charges: Iterable[Pending], day_ms: int) -> dict[tuple[str, Any], list[int]]:
    """(tenant, user) -> [month nanos, calls, images, day nanos, calls, images]."""
    out: dict[tuple[str, Any], list[int]] = {}
    for _, tenant, user, ts, cost, call, images, _, _ in charges:
        acc = out.setdefault((tenant, user), [0] * 6)
        today = ts >= day_ms
        for i, v in enumerate((cost, int(call), images)):
            acc[i] += v
            if today:
                acc[3 + i] += v
    return out
