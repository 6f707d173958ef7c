"""What faregate cannot size, learned: real input over estimated input.

A file input, a stored prompt or an id faregate never saw has no size in the
body. Its estimate starts from a nominal size; what the upstream then reports
teaches the next estimate. Learned per (tenant, model family, shape) — the
shape says whether the call had parts faregate could not size — as the ratio
of real to estimated input tokens: a higher ratio is taken at once (the
estimate must not lag a tenant that grows its prompts), a lower one slowly.
Calls with unsized parts start at a conservative ratio; the ratio is never
below 1 (the visible part is already over-estimated) and never above
`MAX_RATIO`. In memory and per process: a restart learns again within a few
calls, and the one-at-a-time lane keeps the budget promise meanwhile.
"""

from __future__ import annotations

#: Ratio of a (tenant, family) with unsized parts before anything was learned.
START_RATIO = 4.0
MAX_RATIO = 64.0
#: How far one lower observation pulls the ratio down (higher ones are taken whole).
EASE = 0.25
MAX_KEYS = 10_000

Key = tuple[str, str, bool]  # (tenant, family, has unsized parts)


class InputRatios:
    def __init__(self) -> None:
        self._ratio: dict[Key, float] = {}

    def factor(self, key: Key) -> float:
        """What to multiply a raw input estimate by."""
        ratio = self._ratio.get(key)
        if ratio is None:
            return START_RATIO if key[2] else 1.0
        return ratio

    def observe(self, key: Key, raw: int, real: int) -> None:
        """A call estimated at `raw` input tokens really had `real`."""
        if raw <= 0 or real < 0:
            return
        seen = min(MAX_RATIO, max(1.0, real / raw))
        ratio = self._ratio.get(key)
        if ratio is None or seen >= ratio:
            new = seen
        else:
            new = ratio + (seen - ratio) * EASE
        if ratio is None and len(self._ratio) >= MAX_KEYS:
            self._ratio.clear()
        self._ratio[key] = new
