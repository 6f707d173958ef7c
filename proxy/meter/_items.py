"""How much input a Realtime frame adds: conversation items and inline response input.

A `conversation.item.create` puts text, audio or an image into the
conversation every later response reads; a `response.create` with its own
`input` (an out-of-band response) reads that instead. Sized once when the
frame is read: audio by its decoded bytes (PCM16 at 24 kHz, ~10 tokens a
second), images by the model's image-token rules, and everything else —
text, function outputs, the JSON around them — by its bytes, over-estimated
as text. Bounded: at most `MAX_PARTS` parts are looked at, the rest counts
as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._images import image_tokens

#: Input audio tokens per decoded byte of PCM16 24 kHz (about 10 tokens a second).
AUDIO_TOKENS_PER_BYTE = 10 / 48_000
BYTES_PER_TOKEN_HIGH = 2
ITEM_OVERHEAD_TOKENS = 8
MAX_PARTS = 4096


@dataclass(frozen=True, slots=True)
class Added:
    """Input tokens a frame adds, by class."""

    text: int = 0
    audio: int = 0
    image: int = 0

    def __add__(self, other: "Added") -> "Added":
        return Added(self.text + other.text, self.audio + other.audio, self.image + other.image)

    @property
    def tokens(self) -> int:
        return self.text + self.audio + self.image


NOTHING = Added()


def items_added(items: Any, frame_bytes: int, family: str | None) -> Added:
    """What `items` (one item or a list) add, given the size of the frame carrying them."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return Added(text=frame_bytes // BYTES_PER_TOKEN_HIGH)
    audio_b64 = images = image_bytes = seen = 0
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            seen += 1
            if seen > MAX_PARTS or not isinstance(part, dict):
                break
            kind = part.get("type")
            if kind in ("input_audio", "audio") and isinstance(part.get("audio"), str):
                audio_b64 += len(part["audio"])
            elif kind == "input_image":
                url = part.get("image_url")
                image_bytes += len(url) if isinstance(url, str) else 0
                images += image_tokens(family, part.get("detail")
                                       if isinstance(part.get("detail"), str) else None)
    text_bytes = max(0, frame_bytes - audio_b64 - image_bytes)
    return Added(text=text_bytes // BYTES_PER_TOKEN_HIGH + ITEM_OVERHEAD_TOKENS * len(items),
                 audio=int(audio_b64 * 3 // 4 * AUDIO_TOKENS_PER_BYTE), image=images)
