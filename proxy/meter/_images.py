"""Upper bounds on the input tokens of one image, from the model's image-token rules.

OpenAI counts an input image in one of two ways, by model family:

* Tiles: the image is fitted into 2048×2048, its short side scaled to 768,
  and cut into 512-px tiles: `base + per_tile × tiles` (`detail: "low"`:
  `base` alone). The largest count is 8 tiles (a 768×2048 image).
* Patches: 32-px patches, at most 1,536, times a per-family multiplier.

faregate never decodes an image (it may be a URL): it reserves the largest
count the part's `detail` allows, and the largest of all when the detail is
missing, `auto`, or one it does not know. A family without a rule here gets
`UNKNOWN_FAMILY_TOKENS`, above every rule's largest image.
"""

from __future__ import annotations

import math

MAX_TILES = 8
MAX_PATCHES = 1536

#: family prefix -> (base tokens, tokens per tile); longest prefix wins.
TILES: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (2833, 5667),
    "gpt-4o": (85, 170),
    "chatgpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4-turbo": (85, 170),
    "ft:gpt-4o-mini": (2833, 5667),
    "ft:gpt-4o": (85, 170),
    "ft:gpt-4.1": (85, 170),
    "o1": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
    "gpt-6": (70, 140),
    "computer-use": (65, 129),
}

#: family prefix -> patch multiplier (tokens = patches × multiplier).
PATCHES: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "ft:gpt-4.1-mini": 1.62,
    "ft:gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
    "gpt-5-nano": 2.46,
    "gpt-5.4-nano": 2.46,
    "gpt-5.4-mini": 1.62,
}

UNKNOWN_FAMILY_TOKENS = 6000
#: `detail` values above `high` (full resolution): this many times the high bound.
ORIGINAL_FACTOR = 4


def _longest(table: dict, family: str):
    best = None
    for prefix in table:
        if family.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def image_tokens(family: str | None, detail: str | None) -> int:
    """The most input tokens one image with this `detail` can count for `family`."""
    family = family or ""
    tile, patch = _longest(TILES, family), _longest(PATCHES, family)
    if patch is not None and (tile is None or len(patch) >= len(tile)):
        high = math.ceil(MAX_PATCHES * PATCHES[patch])
        low = high  # patch-counted models have no cheaper low detail to rely on
    elif tile is not None:
        base, per_tile = TILES[tile]
        high, low = base + per_tile * MAX_TILES, base
    else:
        return UNKNOWN_FAMILY_TOKENS
    if detail == "low":
        return low
    if detail in (None, "auto", "high"):
        return high
    return high * ORIGINAL_FACTOR  # "original" and anything newer: assume the largest
