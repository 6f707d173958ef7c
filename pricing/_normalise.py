"""Provider usage reports -> one `Usage` with disjoint token classes, by endpoint.

Each endpoint reports usage in its own shape; `usage_for_endpoint` picks the
reader for an endpoint kind: the text endpoints' token reports
(`_text_usage`), Realtime `response.done` (`_realtime_usage`), and the
audio and image endpoints, which bill in seconds, images and characters too
(`_media_usage`). Every reader takes already-parsed JSON, never raises, and
flags what it could not believe (`_counts`).

Overlapping provider counts are split so the classes are disjoint:
chat `prompt_tokens` = input + cached_input + audio_input, Realtime
`text_tokens` = input + cached_input (its cached part is in
`cached_tokens_details`), and so on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._media_usage import usage_from_images, usage_from_speech, usage_from_transcription
from ._realtime_usage import usage_from_realtime
from ._text_usage import usage_from_chat, usage_from_embeddings, usage_from_responses
from ._usage import Usage

if TYPE_CHECKING:
    from ._table import PriceTable

UNKNOWN_ENDPOINT = "usage_unknown_endpoint"


def usage_for_endpoint(
    endpoint_kind: str,
    usage_dict: Any,
    *,
    table: "PriceTable",
    n_images: int = 1,
    size: str | None = None,
    quality: str | None = None,
    characters: int = 0,
    model: str = "",
) -> Usage:
    """Dispatch on the endpoint kind (`Endpoint.kind` in the proxy).

    Kinds: chat, completions, responses, embeddings, transcription, images,
    realtime, speech, moderations (free: always an empty usage). The keyword
    arguments carry request facts the usage report lacks (image count/size/
    quality, speech characters and model) and the table in force, which
    decides how a speech model is billed.
    """
    if endpoint_kind in ("chat", "completions"):
        return usage_from_chat(usage_dict)
    if endpoint_kind == "responses":
        return usage_from_responses(usage_dict)
    if endpoint_kind == "embeddings":
        return usage_from_embeddings(usage_dict)
    if endpoint_kind == "transcription":
        return usage_from_transcription(usage_dict)
    if endpoint_kind == "images":
        return usage_from_images(usage_dict, n_images, size, quality)
    if endpoint_kind == "realtime":
        return usage_from_realtime(usage_dict)
    if endpoint_kind == "speech":
        return usage_from_speech(characters, model, table, usage_dict)
    if endpoint_kind == "moderations":
        return Usage()
    return Usage(flags=(UNKNOWN_ENDPOINT,))
