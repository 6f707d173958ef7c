"""Reading counts out of untrusted usage reports: never raise, flag what was wrong.

Usage reports are the upstream's JSON, already parsed. A `Reader` takes
counts and seconds out of them: missing or null fields count as 0; a field
of the wrong type, a negative or absurd count, or parts that do not add up
(more cached tokens than input tokens) count as 0 / are clamped, and the
reader remembers it so the `Usage` carries the flag `usage_malformed`; a
value that cannot be a count at all (wrong type, negative, absurd) also
`usage_implausible`, on which the proxy charges the call's reservation
instead (see `_bounds`). No usage at all where the endpoint should report it gives an empty `Usage`
flagged `usage_missing`.

`believable` and the `plain_*` helpers check a well-formed report in C, so
the common case can skip the careful per-field path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

MALFORMED = "usage_malformed"
#: Counts that cannot be true (negative, mistyped, absurd): the proxy charges the
#: call's reservation instead of this report (always flagged with MALFORMED too).
IMPLAUSIBLE = "usage_implausible"
MISSING = "usage_missing"

#: Counts above this are not believed (a trillion tokens in one call).
MAX_COUNT = 10**12
#: Seconds above this are not believed (a year of audio in one call).
MAX_SECONDS = Decimal(366 * 24 * 3600)


class Reader:
    """Reads counts out of untrusted dicts, remembering whether any was bad."""

    def __init__(self) -> None:
        self.malformed = False  # parts that do not add up (clamped)
        self.implausible = False  # values that cannot be counts at all

    def bad(self) -> None:
        self.malformed = self.implausible = True

    def obj(self, value: Any) -> Mapping[str, Any]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        self.bad()
        return {}

    def count(self, container: Mapping[str, Any], key: str) -> int:
        return self.as_count(container.get(key))

    def has(self, container: Mapping[str, Any], key: str) -> bool:
        return container.get(key) is not None

    def as_count(self, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, bool):
            self.bad()
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            self.bad()
            return 0
        if value < 0:
            self.bad()
            return 0
        if value > MAX_COUNT:
            self.bad()
            return MAX_COUNT
        return value

    def seconds(self, value: Any) -> Decimal:
        if value is None:
            return Decimal(0)
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            self.bad()
            return Decimal(0)
        try:
            amount = value if isinstance(value, Decimal) else Decimal(str(value))
        except (InvalidOperation, ValueError):
            self.bad()
            return Decimal(0)
        if not amount.is_finite() or amount < 0:
            self.bad()
            return Decimal(0)
        if amount > MAX_SECONDS:
            self.bad()
            return MAX_SECONDS
        return amount

    def part(self, part: int, whole: int) -> int:
        """`part` of `whole`, clamped (and flagged) when it claims more than all."""
        if part > whole:
            self.malformed = True
            return whole
        return part

    def flags(self, *extra: str) -> tuple[str, ...]:
        return (((MALFORMED,) if self.malformed else ())
                + ((IMPLAUSIBLE,) if self.implausible else ()) + extra)


def top_of(r: Reader, u: Any) -> Mapping[str, Any] | None:
    """The usage dict, or None when there is none to read."""
    if u is None:
        return None
    if isinstance(u, Mapping):
        return u
    r.bad()
    return {}


def details_of(r: Reader, u: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    """The first present details object among spelling variants."""
    for name in names:
        if u.get(name) is not None:
            return r.obj(u.get(name))
    return {}


def believable(counts: Sequence[Any]) -> bool:
    """Every value a plain int (not a bool) from 0 to MAX_COUNT, checked in C:
    the common case, for which the careful per-field paths can be skipped."""
    return set(map(type, counts)) == {int} and min(counts) >= 0 and max(counts) <= MAX_COUNT


def plain_counts(*values: Any) -> list[int] | None:
    """The values as counts when every one is None or a believable int, else None.

    The common, well-formed report, so the `Reader` path with its per-field
    checks and flags runs only for reports that need it.
    """
    counts = [0 if v is None else v for v in values]
    return counts if believable(counts) else None


_NO_DETAILS: Mapping[str, Any] = {}


def plain_details(u: Mapping[str, Any], *names: str) -> Mapping[str, Any] | None:
    """`details_of` for a well-formed report: the first present details dict, {} if
    none, None (take the slow path) if it is not a dict."""
    for name in names:
        value = u.get(name)
        if value is not None:
            return value if type(value) is dict else None
    return _NO_DETAILS

