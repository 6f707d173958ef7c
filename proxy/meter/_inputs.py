"""What a request body holds that its size does not tell: the input's shape.

A chat or Responses body's bytes over-estimate its text, but say nothing
true of what else the call carries: images (counted by the model's
image-token rules, not by the bytes of their URL or base64 data), files
(`input_file`, `file`), a `previous_response_id` or `conversation` (the
input of everything before), a stored `prompt`, an `item_reference`. This
walks the parsed body once, bounded, and reports that shape; the estimate
prices it (`_estimate`). Untrusted input: anything unexpected is skipped,
never trusted to be small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_PARTS = 4096  # content parts looked at; a body with more counts as unsized
MAX_ID = 128


@dataclass(slots=True)
class InputShape:
    images: list[str | None] = field(default_factory=list)  # each image part's `detail`
    unsized: int = 0  # parts faregate cannot size (files, stored prompts, references)
    inline_bytes: int = 0  # body bytes that are image or file data, not text
    previous_response_id: str | None = None
    conversation: str | None = None

    @property
    def hidden(self) -> bool:
        """The call carries input the body does not show."""
        return bool(self.unsized or self.previous_response_id or self.conversation)


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value[:MAX_ID] if isinstance(value, str) and value else None


def input_shape(kind: str, body: Any) -> InputShape:
    """The shape of a chat, completions or Responses request body."""
    shape = InputShape()
    if not isinstance(body, dict):
        return shape
    if kind == "responses":
        shape.previous_response_id = _id(body.get("previous_response_id"))
        shape.conversation = _id(body.get("conversation"))
        if body.get("prompt") is not None:
            shape.unsized += 1  # a stored prompt: its text lives upstream
        items = body.get("input")
    elif kind == "chat":
        items = body.get("messages")
    else:
        return shape
    if isinstance(items, list):
        _walk(items, shape)
    return shape


def _walk(items: list, shape: InputShape) -> None:
    seen = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "item_reference":
            shape.unsized += 1
            continue
        content = item.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            seen += 1
            if seen > MAX_PARTS:
                shape.unsized += 1
                return
            if isinstance(part, dict):
                _part(part, shape)


def _part(part: dict, shape: InputShape) -> None:
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        detail = part.get("detail")
        if isinstance(image, dict):
            detail = image.get("detail", detail)
            image = image.get("url")
        if isinstance(image, str) and image.startswith("data:"):
            shape.inline_bytes += len(image)
        shape.images.append(detail if isinstance(detail, str) else None)
    elif kind in ("file", "input_file"):
        holder = part.get("file") if isinstance(part.get("file"), dict) else part
        data = holder.get("file_data")
        if isinstance(data, str):
            shape.inline_bytes += len(data)
        shape.unsized += 1
