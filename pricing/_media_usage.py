"""Audio and image endpoints: transcription, image generation, text-to-speech.

These bill in more than tokens: transcription by tokens or by seconds of
audio, images by tokens (gpt-image) or by the image count at a size and
quality (dall-e), speech by characters (tts-1) or by tokens
(gpt-4o-mini-tts). The request facts the report lacks (image count, size,
quality; the speech input's length) come from the caller; how a speech model
is billed comes from the price table in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._counts import MISSING, Reader, details_of, top_of
from ._usage import Usage

if TYPE_CHECKING:
    from ._table import PriceTable


def usage_from_transcription(u: Any) -> Usage:
    """Transcription/translation `usage`, token-billed or duration-billed.

    `{"type": "tokens", "input_tokens", "input_token_details": {"text_tokens",
    "audio_tokens"}, "output_tokens"}` or `{"type": "duration", "seconds"}`.
    Input tokens not explained by the details are counted as audio.
    """
    r = Reader()
    top = top_of(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    kind = top.get("type")
    if kind == "duration" or (kind is None and r.has(top, "seconds")):
        return Usage(seconds=r.seconds(top.get("seconds")), flags=r.flags())
    if kind not in (None, "tokens"):
        r.malformed = True
    inp = r.count(top, "input_tokens")
    details = details_of(r, top, "input_token_details", "input_tokens_details")
    text = r.part(r.count(details, "text_tokens"), inp)
    audio = r.part(r.count(details, "audio_tokens"), inp - text)
    audio += inp - text - audio  # unexplained remainder: the audio itself
    return Usage(
        input=text, audio_input=audio, output=r.count(top, "output_tokens"), flags=r.flags()
    )


def usage_from_images(
    u: Any, n_images: int = 1, size: str | None = None, quality: str | None = None
) -> Usage:
    """Image generation/edit: gpt-image token usage, and always the image count.

    dall-e responses carry no usage; they are billed by `n_images` at
    `size`/`quality`. gpt-image `usage` (`input_tokens`,
    `input_tokens_details.{text_tokens,image_tokens}`, `output_tokens`) is
    split into text input, image input and image output.
    """
    r = Reader()
    n = r.as_count(n_images)
    size = size if isinstance(size, str) and size else None
    quality = quality if isinstance(quality, str) and quality else None
    top = top_of(r, u)
    if top is None:
        return Usage(images=n, image_size=size, image_quality=quality, flags=r.flags())
    inp = r.count(top, "input_tokens")
    idt = details_of(r, top, "input_tokens_details", "input_token_details")
    image_in = r.part(r.count(idt, "image_tokens"), inp)
    cached = r.part(r.count(idt, "cached_tokens"), inp - image_in)
    out = r.count(top, "output_tokens")
    odt = details_of(r, top, "output_tokens_details", "output_token_details")
    text_out = r.part(r.count(odt, "text_tokens"), out)
    return Usage(
        input=inp - image_in - cached,
        cached_input=cached,
        image_input=image_in,
        output=text_out,
        image_output=out - text_out,
        images=n,
        image_size=size,
        image_quality=quality,
        flags=r.flags(),
    )


def usage_from_speech(characters: int, model: str, table: "PriceTable", reported: Any = None
                      ) -> Usage:
    """Text-to-speech: the request's `input` length, and the tokens the upstream reports.

    `table` (the table in force) decides how `model` is billed. A model with a
    `per_1k_chars` rate (tts-1, tts-1-hd) is billed on `characters`, which is
    exact. Any other model is billed per token, from `reported`: the usage a
    streamed answer ends with (`speech.audio.done`: `input_tokens` of text,
    `output_tokens` of audio). Without one (an audio body carries no usage)
    the text input is estimated at characters / 4 and the usage is marked
    `estimated`. For a model the table does not price, what is known
    (characters, reported tokens) is kept for the unpriced record.
    """
    r = Reader()
    chars = r.as_count(characters)
    entry = table.entry(model)
    if entry is not None and entry.rate("per_1k_chars") is not None:
        return Usage(characters=chars, flags=r.flags())
    top = top_of(r, reported)
    if top and (r.has(top, "input_tokens") or r.has(top, "output_tokens")):
        return Usage(characters=chars, input=r.count(top, "input_tokens"),
                     audio_output=r.count(top, "output_tokens"), flags=r.flags())
    if entry is None:
        return Usage(characters=chars, flags=r.flags())
    return Usage(characters=chars, input=-(-chars // 4), estimated=True, flags=r.flags())
