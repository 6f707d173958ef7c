"""One migration history for both dialects.

`migrations/NNNN_name.sql` is shared by SQLite and PostgreSQL (portable types
only: TEXT, BIGINT, INTEGER, DOUBLE PRECISION). When a change cannot be
written portably, ship `NNNN_name.sqlite.sql` and `NNNN_name.postgresql.sql`
with the same version instead: a version is applied once per database
whichever file carried it, so the two histories never diverge.
"""

from __future__ import annotations

from importlib import resources

DIALECTS = ("sqlite", "postgresql")


def migrations(dialect: str, upto: int | None = None) -> list[tuple[int, str]]:
    """(version, sql) of every shipped migration for `dialect`, in order.

    `upto` stops at that version (tests and benchmarks build an older schema
    to upgrade from)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    found: dict[int, tuple[str, str]] = {}
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        name = entry.name
        if not (name.endswith(".sql") and name[:4].isdigit()):
            continue
        parts = name[: -len(".sql")].split(".")
        if len(parts) == 2 and parts[1] != dialect:
            continue  # the other dialect's variant
        version = int(name[:4])
        if version in found:
            raise RuntimeError(f"two migrations for version {version}: {found[version][0]}, {name}")
        found[version] = (name, entry.read_text(encoding="utf-8"))
    return [(v, sql) for v, (_, sql) in sorted(found.items()) if upto is None or v <= upto]


def split_sql(sql: str) -> list[str]:
    """Statements of a migration file: split at `;`, except inside `$$ … $$` bodies."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    out, current = [], []
    for n, part in enumerate("\n".join(lines).split("$$")):
        if n % 2:  # inside a dollar-quoted body: keep it whole
            current.append(f"$${part}$$")
            continue
        pieces = part.split(";")
        current.append(pieces[0])
        for piece in pieces[1:]:
            out.append("".join(current))
            current = [piece]
    out.append("".join(current))
    return [s.strip() for s in out if s.strip()]
