"""Realtime `response.done` usage: text, audio and image classes, cached parts split out.

A Realtime response reports `input_token_details.{text,audio,image}_tokens`
*including* their cached parts, and the cached parts again in
`cached_tokens_details`; output is `output_token_details.{text,audio}_tokens`.
Each is split here into the disjoint `Usage` classes. Counts that do not add
up are trusted in their details (the total grows to cover them) and flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._counts import MISSING, Reader, details_of, top_of
from ._usage import Usage

_INPUT_KINDS = ("text_tokens", "audio_tokens", "image_tokens")
_OUTPUT_KINDS = ("text_tokens", "audio_tokens")


def usage_from_realtime(u: Any) -> Usage:
    """Realtime `response.done` → `response.usage`.

    `input_token_details.{text,audio,image}_tokens` include their cached
    parts, reported in `cached_tokens_details`; those are split out. With no
    per-modality cached split, cached tokens are taken from text first, then
    audio, then image.
    """
    r = Reader()
    top = top_of(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    idt = details_of(r, top, "input_token_details", "input_tokens_details")
    odt = details_of(r, top, "output_token_details", "output_tokens_details")
    inp, text, audio, image = _inputs(r, top, idt)
    c_text, c_audio, c_image = _cached(r, idt, inp, text, audio, image)
    out_text, out_audio = _outputs(r, top, odt)
    return Usage(
        input=text - c_text,
        cached_input=c_text,
        audio_input=audio - c_audio,
        cached_audio_input=c_audio,
        image_input=image - c_image,
        cached_image_input=c_image,
        output=out_text,
        audio_output=out_audio,
        reasoning=r.part(r.count(odt, "reasoning_tokens"), out_text),
        flags=r.flags(),
    )


def _inputs(r: Reader, top: Mapping[str, Any], idt: Mapping[str, Any]
            ) -> tuple[int, int, int, int]:
    """(all input, text, audio, image), cached parts still included."""
    inp = r.count(top, "input_tokens")
    if not any(r.has(idt, k) for k in _INPUT_KINDS):
        return inp, inp, 0, 0
    text = r.count(idt, "text_tokens")
    audio = r.count(idt, "audio_tokens")
    image = r.count(idt, "image_tokens")
    if text + audio + image > inp:
        r.malformed = r.malformed or r.has(top, "input_tokens")
        inp = text + audio + image
    text += inp - text - audio - image  # unexplained remainder: text
    return inp, text, audio, image


def _cached(r: Reader, idt: Mapping[str, Any], inp: int, text: int, audio: int, image: int
            ) -> tuple[int, int, int]:
    """The cached part of text, audio and image input."""
    cached_total = r.part(r.count(idt, "cached_tokens"), inp)
    cdt = details_of(r, idt, "cached_tokens_details")
    if any(r.has(cdt, k) for k in _INPUT_KINDS):
        return (r.part(r.count(cdt, "text_tokens"), text),
                r.part(r.count(cdt, "audio_tokens"), audio),
                r.part(r.count(cdt, "image_tokens"), image))
    c_text = min(cached_total, text)
    c_audio = min(cached_total - c_text, audio)
    return c_text, c_audio, min(cached_total - c_text - c_audio, image)


def _outputs(r: Reader, top: Mapping[str, Any], odt: Mapping[str, Any]) -> tuple[int, int]:
    """(text output, audio output)."""
    out = r.count(top, "output_tokens")
    if not any(r.has(odt, k) for k in _OUTPUT_KINDS):
        return out, 0
    out_text = r.count(odt, "text_tokens")
    out_audio = r.count(odt, "audio_tokens")
    if out_text + out_audio > out:
        r.malformed = r.malformed or r.has(top, "output_tokens")
        out = out_text + out_audio
    out_text += out - out_text - out_audio
    return out_text, out_audio
