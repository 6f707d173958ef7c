"""The measured quantities of one API call, normalised across endpoints.

Every endpoint reports usage in its own shape (chat `prompt_tokens`,
Responses `input_tokens`, Realtime `input_token_details.audio_tokens`,
transcription `seconds`, ...). They all become one `Usage` value whose
token classes are *disjoint*: `input` is uncached text input only, cached
text input is in `cached_input`, and so on. Summing the classes gives the
total; pricing multiplies each class by its own rate.

A few counts are *parts* of a class rather than classes of their own, as the
provider reports them: `reasoning` of `output`, the prompt-cache writes
`cache_write` / `cache_write_12h` of `input` (priced at their own rates, see
`_price`), and a Live session's `standby_seconds` of `seconds`. Keeping them
inside their class keeps the ledger's token columns what the provider
counted (input includes the tokens written to the cache).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from decimal import Decimal

#: Token classes, in a stable order (ledger columns, metric `kind` labels).
TOKEN_CLASSES: tuple[str, ...] = (
    "input",
    "cached_input",
    "output",
    "audio_input",
    "cached_audio_input",
    "audio_output",
    "image_input",
    "cached_image_input",
    "image_output",
)


#: The classes a call reads (prompt side), in TOKEN_CLASSES order.
INPUT_CLASSES: tuple[str, ...] = tuple(c for c in TOKEN_CLASSES if c.endswith("input"))

#: The classes a call writes (completion side), in TOKEN_CLASSES order.
OUTPUT_CLASSES: tuple[str, ...] = tuple(c for c in TOKEN_CLASSES if c.endswith("output"))

#: The input classes served from the prompt cache, in TOKEN_CLASSES order.
CACHED_CLASSES: tuple[str, ...] = tuple(c for c in TOKEN_CLASSES if c.startswith("cached_"))

#: The token counts of a `Usage`, in TOKEN_CLASSES order, as one tuple (read in C).
token_counts = operator.attrgetter(*TOKEN_CLASSES)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call consumed. Token classes are disjoint; see module doc."""

    input: int = 0
    cached_input: int = 0
    output: int = 0  # text output, reasoning included
    audio_input: int = 0
    cached_audio_input: int = 0
    audio_output: int = 0
    image_input: int = 0
    cached_image_input: int = 0
    image_output: int = 0
    reasoning: int = 0  # informational: the part of `output` spent reasoning
    cache_write: int = 0  # the part of `input` written to the prompt cache (30-minute retention)
    cache_write_12h: int = 0  # the part of `input` written with 12-hour retention
    seconds: Decimal = Decimal(0)  # duration-billed audio / seconds-billed sessions
    standby_seconds: Decimal = Decimal(0)  # the part of `seconds` a Live session stood by (paused)
    characters: int = 0  # characters-billed speech (tts-1)
    images: int = 0  # generated images (per-image billing)
    image_size: str | None = None  # e.g. "1024x1024", for per-image prices
    image_quality: str | None = None  # e.g. "standard", "hd", "low", "medium", "high"
    service_tier: str | None = None  # the tier the upstream applied ("flex", "batch", ...)
    tool_calls: tuple[tuple[str, int], ...] = ()  # (fee key, count): "web_search", ...
    estimated: bool = False  # true when not from the provider's own report
    flags: tuple[str, ...] = field(default=())  # e.g. ("usage_malformed",)

    def tokens(self) -> dict[str, int]:
        """Token counts by class (all classes, zeros included)."""
        return dict(zip(TOKEN_CLASSES, token_counts(self)))

    @property
    def total_tokens(self) -> int:
        return sum(token_counts(self))

    def is_empty(self) -> bool:
        return (
            self.total_tokens == 0
            and self.seconds == 0
            and self.characters == 0
            and self.images == 0
            and not self.tool_calls
        )

    def __add__(self, other: "Usage") -> "Usage":
        if not isinstance(other, Usage):
            return NotImplemented
        values = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("image_size", "image_quality", "service_tier"):
                values[f.name] = a or b
            elif f.name == "tool_calls":
                values[f.name] = merge_tool_calls(a, b)
            elif f.name == "estimated":
                values[f.name] = a or b
            elif f.name == "flags":
                values[f.name] = tuple(dict.fromkeys(a + b))
            else:
                values[f.name] = a + b
        return Usage(**values)


def merge_tool_calls(*parts: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """Tool-call counts summed per fee key, keys sorted (one spelling per value)."""
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part:
            total[key] = total.get(key, 0) + n
    return tuple(sorted((k, n) for k, n in total.items() if n > 0))
