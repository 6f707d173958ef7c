"""Re-checking a `Usage` before it is priced: a charge is never negative or absurd.

A `Usage` normally comes from the readers in `_normalise`, which already
clamp and flag; but any caller can build one by hand (an estimate, a
reservation, a test). `sane` clamps negative or absurd counts and seconds,
drops malformed tool calls and blank or overlong tier names, and flags the
usage `usage_malformed` if anything had to change. `plainly_sane` is the
common case, checked in C, for which nothing needs to.
"""

from __future__ import annotations

import dataclasses
import decimal
import operator
from decimal import Decimal

from ._counts import MALFORMED, MAX_COUNT, MAX_SECONDS, believable
from ._usage import TOKEN_CLASSES, Usage

_ZERO = Decimal(0)

MAX_TIER_NAME = 32
MAX_TOOL_KEY = 96
MAX_TOOL_CALLS = 10**6


def _tool_calls(calls: object) -> tuple[tuple[str, int], ...]:
    """Only well-formed (key, positive count) pairs, counts capped."""
    if not isinstance(calls, tuple):
        return ()
    kept = []
    for item in calls:
        if not (isinstance(item, tuple) and len(item) == 2):
            continue
        key, n = item
        if (isinstance(key, str) and 0 < len(key) <= MAX_TOOL_KEY and isinstance(n, int)
                and not isinstance(n, bool) and n > 0):
            kept.append((key, min(n, MAX_TOOL_CALLS)))
    return tuple(kept)


_COUNTED = TOKEN_CLASSES + ("reasoning", "characters", "images", "cache_write",
                            "cache_write_12h")
_counts = operator.attrgetter(*_COUNTED)


def sane(usage: Usage) -> Usage:
    """Clamp negative/absurd quantities; flag the usage if any was bad."""
    if plainly_sane(usage):
        return usage
    changes: dict[str, object] = {}
    bad = False
    for name in _COUNTED:
        n = getattr(usage, name)
        if isinstance(n, bool) or not isinstance(n, int):
            bad = True
            try:
                n = int(n)
            except (TypeError, ValueError, OverflowError, decimal.InvalidOperation):
                n = 0
            changes[name] = n
        if n < 0 or n > MAX_COUNT:
            bad = True
            changes[name] = max(0, min(n, MAX_COUNT))
    for name in ("seconds", "standby_seconds"):
        bad = _seconds(usage, name, changes) or bad
    bad = _parts(usage, changes) or bad
    tier = usage.service_tier
    clean = tier.strip().lower() if isinstance(tier, str) else None
    if tier is not None and not (clean and len(clean) <= MAX_TIER_NAME):
        bad = True  # not a string, blank, or absurdly long
        changes["service_tier"] = None
    elif clean != tier:
        changes["service_tier"] = clean
    calls = _tool_calls(usage.tool_calls)
    if calls != usage.tool_calls:
        bad = True
        changes["tool_calls"] = calls
    if not changes:
        return usage
    flags = usage.flags
    if bad and MALFORMED not in flags:
        flags = flags + (MALFORMED,)
    return dataclasses.replace(usage, flags=flags, **changes)


def _seconds(usage: Usage, name: str, changes: dict[str, object]) -> bool:
    """Clamp a seconds field into changes; True if it was bad."""
    s = getattr(usage, name)
    if not isinstance(s, Decimal):
        try:
            s = Decimal(str(s)) if not isinstance(s, bool) else Decimal("NaN")
        except (decimal.InvalidOperation, ValueError):
            s = Decimal("NaN")
        changes[name] = s
    if not s.is_finite() or s < 0:
        changes[name] = _ZERO
        return True
    if s > MAX_SECONDS:
        changes[name] = MAX_SECONDS
        return True
    return False


def _parts(usage: Usage, changes: dict[str, object]) -> bool:
    """Parts never claim more than their whole (cache writes of input, standby of
    seconds); True if one had to be cut."""
    get = lambda name: changes.get(name, getattr(usage, name))  # noqa: E731
    bad = False
    room = get("input")
    for name in ("cache_write_12h", "cache_write"):
        n = get(name)
        if n > room:
            changes[name], n, bad = room, room, True
        room -= n
    if get("standby_seconds") > get("seconds"):
        changes["standby_seconds"], bad = get("seconds"), True
    return bad


def plainly_sane(usage: Usage) -> bool:
    """The common case, checked in C where possible: `sane` would change nothing."""
    if not believable(_counts(usage)):
        return False
    s, tier = usage.seconds, usage.service_tier
    return (type(s) is Decimal and s.is_finite() and 0 <= s <= MAX_SECONDS
            and usage.cache_write + usage.cache_write_12h <= usage.input
            and (usage.standby_seconds == 0 or (
                type(usage.standby_seconds) is Decimal and 0 <= usage.standby_seconds <= s))
            and usage.tool_calls == ()
            and (tier is None or (type(tier) is str and 0 < len(tier) <= MAX_TIER_NAME
                                  and tier == tier.strip().lower())))
