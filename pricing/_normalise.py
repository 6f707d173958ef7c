"""Provider usage reports -> one `Usage` with disjoint token classes.

Each endpoint reports usage in its own shape; the functions here read those
shapes from already-parsed JSON and never raise. Missing or null fields count
as 0. A field of the wrong type, a negative or absurd count, or parts that do
not add up (more cached tokens than input tokens) count as 0 / are clamped,
and the result carries the flag `usage_malformed`; a value that cannot be a
count at all (wrong type, negative, absurd) also `usage_implausible`, on
which the proxy charges the call's reservation instead. No usage at all where the
endpoint should report it gives an empty `Usage` flagged `usage_missing`.

Overlapping provider counts are split so the classes are disjoint:
chat `prompt_tokens` = input + cached_input + audio_input, Realtime
`text_tokens` = input + cached_input (its cached part is in
`cached_tokens_details`), and so on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ._usage import Usage

if TYPE_CHECKING:
    from ._table import PriceTable

MALFORMED = "usage_malformed"
#: Counts that cannot be true (negative, mistyped, absurd): the proxy charges the
#: call's reservation instead of this report (always flagged with MALFORMED too).
IMPLAUSIBLE = "usage_implausible"
MISSING = "usage_missing"
UNKNOWN_ENDPOINT = "usage_unknown_endpoint"

#: Counts above this are not believed (a trillion tokens in one call).
MAX_COUNT = 10**12
#: Seconds above this are not believed (a year of audio in one call).
MAX_SECONDS = Decimal(366 * 24 * 3600)


class _Reader:
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


def _top(r: _Reader, u: Any) -> Mapping[str, Any] | None:
    """The usage dict, or None when there is none to read."""
    if u is None:
        return None
    if isinstance(u, Mapping):
        return u
    r.bad()
    return {}


def _details(r: _Reader, u: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    """The first present details object among spelling variants."""
    for name in names:
        if u.get(name) is not None:
            return r.obj(u.get(name))
    return {}


def believable(counts: Sequence[Any]) -> bool:
    """Every value a plain int (not a bool) from 0 to MAX_COUNT, checked in C:
    the common case, for which the careful per-field paths can be skipped."""
    return set(map(type, counts)) == {int} and min(counts) >= 0 and max(counts) <= MAX_COUNT


def _plain_counts(*values: Any) -> list[int] | None:
    """The values as counts when every one is None or a believable int, else None.

    The common, well-formed report, so the `_Reader` path with its per-field
    checks and flags runs only for reports that need it.
    """
    counts = [0 if v is None else v for v in values]
    return counts if believable(counts) else None


def _plain_details(u: Mapping[str, Any], *names: str) -> Mapping[str, Any] | None:
    """`_details` for a well-formed report: the first present details dict, {} if
    none, None (take the slow path) if it is not a dict."""
    for name in names:
        value = u.get(name)
        if value is not None:
            return value if type(value) is dict else None
    return _NO_DETAILS


_NO_DETAILS: Mapping[str, Any] = {}


def _chat_quick(u: Any) -> Usage | None:
    """`usage_from_chat` for a well-formed report (no flags), else None."""
    if type(u) is not dict:
        return None
    pd = _plain_details(u, "prompt_tokens_details")
    cd = _plain_details(u, "completion_tokens_details")
    if pd is None or cd is None:
        return None
    counts = _plain_counts(u.get("prompt_tokens"), u.get("completion_tokens"),
                           pd.get("cached_tokens"), pd.get("audio_tokens"),
                           cd.get("audio_tokens"), cd.get("reasoning_tokens"))
    if counts is None:
        return None
    prompt, completion, cached, audio_in, audio_out, reasoning = counts
    if (cached > prompt or audio_in > prompt - cached or audio_out > completion
            or reasoning > completion - audio_out):
        return None
    return Usage(input=prompt - cached - audio_in, cached_input=cached, audio_input=audio_in,
                 output=completion - audio_out, audio_output=audio_out, reasoning=reasoning)


def _responses_quick(u: Any) -> Usage | None:
    """`usage_from_responses` for a well-formed report (no flags), else None."""
    if type(u) is not dict:
        return None
    idt = _plain_details(u, "input_tokens_details", "input_token_details")
    odt = _plain_details(u, "output_tokens_details", "output_token_details")
    if idt is None or odt is None:
        return None
    counts = _plain_counts(u.get("input_tokens"), u.get("output_tokens"),
                           idt.get("cached_tokens"), odt.get("reasoning_tokens"))
    if counts is None:
        return None
    inp, out, cached, reasoning = counts
    if cached > inp or reasoning > out:
        return None
    return Usage(input=inp - cached, cached_input=cached, output=out, reasoning=reasoning)


def usage_from_chat(u: Any) -> Usage:
    """Chat Completions (and legacy Completions) `usage`."""
    return _chat_quick(u) or _chat_read(u)


def _chat_read(u: Any) -> Usage:
    r = _Reader()
    top = _top(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    prompt = r.count(top, "prompt_tokens")
    completion = r.count(top, "completion_tokens")
    pd = _details(r, top, "prompt_tokens_details")
    cd = _details(r, top, "completion_tokens_details")
    cached = r.part(r.count(pd, "cached_tokens"), prompt)
    audio_in = r.part(r.count(pd, "audio_tokens"), prompt - cached)
    audio_out = r.part(r.count(cd, "audio_tokens"), completion)
    reasoning = r.part(r.count(cd, "reasoning_tokens"), completion - audio_out)
    return Usage(
        input=prompt - cached - audio_in,
        cached_input=cached,
        audio_input=audio_in,
        output=completion - audio_out,
        audio_output=audio_out,
        reasoning=reasoning,
        flags=r.flags(),
    )


def usage_from_responses(u: Any) -> Usage:
    """Responses API `usage` (also inside `response.completed` events)."""
    return _responses_quick(u) or _responses_read(u)


def _responses_read(u: Any) -> Usage:
    r = _Reader()
    top = _top(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    inp = r.count(top, "input_tokens")
    out = r.count(top, "output_tokens")
    idt = _details(r, top, "input_tokens_details", "input_token_details")
    odt = _details(r, top, "output_tokens_details", "output_token_details")
    cached = r.part(r.count(idt, "cached_tokens"), inp)
    reasoning = r.part(r.count(odt, "reasoning_tokens"), out)
    return Usage(
        input=inp - cached, cached_input=cached, output=out, reasoning=reasoning, flags=r.flags()
    )


def usage_from_embeddings(u: Any) -> Usage:
    """Embeddings `usage`: `prompt_tokens` (or `total_tokens`), all input."""
    r = _Reader()
    top = _top(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    key = "prompt_tokens" if r.has(top, "prompt_tokens") else "total_tokens"
    return Usage(input=r.count(top, key), flags=r.flags())


def usage_from_transcription(u: Any) -> Usage:
    """Transcription/translation `usage`, token-billed or duration-billed.

    `{"type": "tokens", "input_tokens", "input_token_details": {"text_tokens",
    "audio_tokens"}, "output_tokens"}` or `{"type": "duration", "seconds"}`.
    Input tokens not explained by the details are counted as audio.
    """
    r = _Reader()
    top = _top(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    kind = top.get("type")
    if kind == "duration" or (kind is None and r.has(top, "seconds")):
        return Usage(seconds=r.seconds(top.get("seconds")), flags=r.flags())
    if kind not in (None, "tokens"):
        r.malformed = True
    inp = r.count(top, "input_tokens")
    details = _details(r, top, "input_token_details", "input_tokens_details")
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
    r = _Reader()
    n = r.as_count(n_images)
    size = size if isinstance(size, str) and size else None
    quality = quality if isinstance(quality, str) and quality else None
    top = _top(r, u)
    if top is None:
        return Usage(images=n, image_size=size, image_quality=quality, flags=r.flags())
    inp = r.count(top, "input_tokens")
    idt = _details(r, top, "input_tokens_details", "input_token_details")
    image_in = r.part(r.count(idt, "image_tokens"), inp)
    cached = r.part(r.count(idt, "cached_tokens"), inp - image_in)
    out = r.count(top, "output_tokens")
    odt = _details(r, top, "output_tokens_details", "output_token_details")
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


def usage_from_speech(
    characters: int,
    model: str | None = None,
    *,
    input_tokens: int | None = None,
    audio_output_tokens: int | None = None,
    table: "PriceTable | None" = None,
) -> Usage:
    """Text-to-speech: the request's `input` length, plus tokens if token-billed.

    tts-1/tts-1-hd are billed per character, so the count is exact. A
    token-billed model (gpt-4o-mini-tts, any model without a per-character
    price) cannot be priced from characters: the caller's token estimates are
    used (text input defaults to characters / 4) and the usage is marked
    `estimated`.
    """
    r = _Reader()
    chars = r.as_count(characters)
    if model is None or _billed_per_character(model, table):
        return Usage(characters=chars, flags=r.flags())
    text = r.as_count(input_tokens) if input_tokens is not None else -(-chars // 4)
    audio = r.as_count(audio_output_tokens)
    return Usage(
        characters=chars, input=text, audio_output=audio, estimated=True, flags=r.flags()
    )


def _billed_per_character(model: str, table: "PriceTable | None") -> bool:
    from ._table import load_price_table  # the shipped table; read once

    entry = (table or load_price_table()).entry(model)
    return entry is None or entry.rate("per_1k_chars") is not None


def usage_from_realtime(u: Any) -> Usage:
    """Realtime `response.done` → `response.usage`.

    `input_token_details.{text,audio,image}_tokens` include their cached
    parts, reported in `cached_tokens_details`; those are split out. With no
    per-modality cached split, cached tokens are taken from text first, then
    audio, then image.
    """
    r = _Reader()
    top = _top(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    inp = r.count(top, "input_tokens")
    out = r.count(top, "output_tokens")
    idt = _details(r, top, "input_token_details", "input_tokens_details")
    odt = _details(r, top, "output_token_details", "output_tokens_details")

    if any(r.has(idt, k) for k in ("text_tokens", "audio_tokens", "image_tokens")):
        text = r.count(idt, "text_tokens")
        audio = r.count(idt, "audio_tokens")
        image = r.count(idt, "image_tokens")
        if text + audio + image > inp:
            r.malformed = r.malformed or r.has(top, "input_tokens")
            inp = text + audio + image
        text += inp - text - audio - image  # unexplained remainder: text
    else:
        text, audio, image = inp, 0, 0

    cached_total = r.part(r.count(idt, "cached_tokens"), inp)
    cdt = _details(r, idt, "cached_tokens_details")
    if any(r.has(cdt, k) for k in ("text_tokens", "audio_tokens", "image_tokens")):
        c_text = r.part(r.count(cdt, "text_tokens"), text)
        c_audio = r.part(r.count(cdt, "audio_tokens"), audio)
        c_image = r.part(r.count(cdt, "image_tokens"), image)
    else:
        c_text = min(cached_total, text)
        c_audio = min(cached_total - c_text, audio)
        c_image = min(cached_total - c_text - c_audio, image)

    if any(r.has(odt, k) for k in ("text_tokens", "audio_tokens")):
        out_text = r.count(odt, "text_tokens")
        out_audio = r.count(odt, "audio_tokens")
        if out_text + out_audio > out:
            r.malformed = r.malformed or r.has(top, "output_tokens")
            out = out_text + out_audio
        out_text += out - out_text - out_audio
    else:
        out_text, out_audio = out, 0

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


def _speech_usage(
    u: Any, characters: int, model: str | None, table: "PriceTable | None"
) -> Usage:
    """Speech: a reported token usage (SSE `speech.audio.done`) wins over estimates."""
    if isinstance(u, Mapping) and u.get("input_tokens") is not None:
        r = _Reader()
        return Usage(
            characters=r.as_count(characters),
            input=r.count(u, "input_tokens"),
            audio_output=r.count(u, "output_tokens"),
            flags=r.flags(),
        )
    return usage_from_speech(characters, model, table=table)


def usage_for_endpoint(
    endpoint_kind: str,
    usage_dict: Any,
    *,
    n_images: int = 1,
    size: str | None = None,
    quality: str | None = None,
    characters: int = 0,
    model: str | None = None,
    table: "PriceTable | None" = None,
) -> Usage:
    """Dispatch on the endpoint kind (`Endpoint.kind` in the proxy).

    Kinds: chat, completions, responses, embeddings, transcription, images,
    realtime, speech, moderations (free: always an empty usage). The keyword
    arguments carry request facts the usage report lacks (image count/size/
    quality, speech characters and model; `table` decides whether a speech
    model is billed per character, default the shipped one).
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
        return _speech_usage(usage_dict, characters, model, table)
    if endpoint_kind == "moderations":
        return Usage()
    return Usage(flags=(UNKNOWN_ENDPOINT,))
