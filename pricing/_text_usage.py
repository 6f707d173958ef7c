"""The text endpoints' token reports: Chat Completions, Responses, Embeddings.

Overlapping provider counts are split so the classes are disjoint: chat
`prompt_tokens` = input + cached_input + audio_input and `completion_tokens`
= output + audio_output (reasoning is the part of output spent thinking);
Responses `input_tokens` = input + cached_input. Each of chat and Responses
has a quick path for a well-formed report (every count a plain int that adds
up) and the careful `Reader` path for anything else.

Prompt-cache writes (`input_tokens_details.cache_write_tokens`, chat
`prompt_tokens_details.cache_write_tokens`) are a part of the uncached
input, split by retention in `cache_write_tokens_details` (`ttl_30m_tokens`,
`ttl_12h_tokens`); writes the details do not explain are 30-minute writes,
the default retention.
"""

from __future__ import annotations

from typing import Any

from ._counts import MISSING, Reader, details_of, plain_counts, plain_details, top_of
from ._usage import Usage


def _chat_quick(u: Any) -> Usage | None:
    """`usage_from_chat` for a well-formed report (no flags), else None."""
    if type(u) is not dict:
        return None
    pd = plain_details(u, "prompt_tokens_details")
    cd = plain_details(u, "completion_tokens_details")
    if pd is None or cd is None:
        return None
    if "cache_write_tokens" in pd:
        return None  # rare on chat: the careful path splits the writes
    counts = plain_counts(u.get("prompt_tokens"), u.get("completion_tokens"),
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
    idt = plain_details(u, "input_tokens_details", "input_token_details")
    odt = plain_details(u, "output_tokens_details", "output_token_details")
    if idt is None or odt is None:
        return None
    wdt = plain_details(idt, "cache_write_tokens_details")
    if wdt is None:
        return None
    counts = plain_counts(u.get("input_tokens"), u.get("output_tokens"),
                           idt.get("cached_tokens"), odt.get("reasoning_tokens"),
                           idt.get("cache_write_tokens"), wdt.get("ttl_12h_tokens"),
                           wdt.get("ttl_30m_tokens"))
    if counts is None:
        return None
    inp, out, cached, reasoning, written, w12, w30 = counts
    if cached > inp or reasoning > out or written > inp - cached or w12 + w30 > written:
        return None
    return Usage(input=inp - cached, cached_input=cached, output=out, reasoning=reasoning,
                 cache_write=written - w12, cache_write_12h=w12)


def usage_from_chat(u: Any) -> Usage:
    """Chat Completions (and legacy Completions) `usage`."""
    return _chat_quick(u) or _chat_read(u)


def _chat_read(u: Any) -> Usage:
    r = Reader()
    top = top_of(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    prompt = r.count(top, "prompt_tokens")
    completion = r.count(top, "completion_tokens")
    pd = details_of(r, top, "prompt_tokens_details")
    cd = details_of(r, top, "completion_tokens_details")
    cached = r.part(r.count(pd, "cached_tokens"), prompt)
    audio_in = r.part(r.count(pd, "audio_tokens"), prompt - cached)
    audio_out = r.part(r.count(cd, "audio_tokens"), completion)
    reasoning = r.part(r.count(cd, "reasoning_tokens"), completion - audio_out)
    text_in = prompt - cached - audio_in
    written, w12 = cache_writes(r, pd, text_in)
    return Usage(
        input=text_in,
        cached_input=cached,
        audio_input=audio_in,
        output=completion - audio_out,
        audio_output=audio_out,
        reasoning=reasoning,
        cache_write=written - w12,
        cache_write_12h=w12,
        flags=r.flags(),
    )


def cache_writes(r: Reader, details: Any, uncached: int) -> tuple[int, int]:
    """(tokens written to the cache, of which with 12-hour retention), each clamped
    to what it can be part of."""
    written = r.part(r.count(details, "cache_write_tokens"), uncached)
    wdt = details_of(r, details, "cache_write_tokens_details")
    w12 = r.part(r.count(wdt, "ttl_12h_tokens"), written)
    r.part(r.count(wdt, "ttl_30m_tokens"), written - w12)  # only checked: the rest is 30m
    return written, w12


def usage_from_responses(u: Any) -> Usage:
    """Responses API `usage` (also inside `response.completed` events)."""
    return _responses_quick(u) or _responses_read(u)


def _responses_read(u: Any) -> Usage:
    r = Reader()
    top = top_of(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    inp = r.count(top, "input_tokens")
    out = r.count(top, "output_tokens")
    idt = details_of(r, top, "input_tokens_details", "input_token_details")
    odt = details_of(r, top, "output_tokens_details", "output_token_details")
    cached = r.part(r.count(idt, "cached_tokens"), inp)
    reasoning = r.part(r.count(odt, "reasoning_tokens"), out)
    written, w12 = cache_writes(r, idt, inp - cached)
    return Usage(
        input=inp - cached, cached_input=cached, output=out, reasoning=reasoning,
        cache_write=written - w12, cache_write_12h=w12, flags=r.flags()
    )


def usage_from_embeddings(u: Any) -> Usage:
    """Embeddings `usage`: `prompt_tokens` (or `total_tokens`), all input."""
    r = Reader()
    top = top_of(r, u)
    if top is None:
        return Usage(flags=(MISSING,))
    key = "prompt_tokens" if r.has(top, "prompt_tokens") else "total_tokens"
    return Usage(input=r.count(top, key), flags=r.flags())
