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


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, sql) of every shipped migration for `dialect`, in order."""
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
    return [(v, sql) for v, (_, sql) in sorted(found.items())]


def split_sql(sql: str) -> list[str]:
    """Statements of a migration file (no semicolons inside our SQL)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
