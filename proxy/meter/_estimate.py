"""Worst-case cost of a call before it is made, for reservations.

The worst case is a `Usage` priced by the same `price()` as the real charge:
prompt tokens are over-estimated from the body size, output is the call's
own cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`) or the
policy's default, at the dearest output class the model has.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from faregate.pricing import (
    OUTPUT_CLASSES,
    TOKEN_CLASSES,
    PriceTable,
    Usage,
    cost_of,
    rate_for,
    to_nanos,
    token_counts,
)

from ._endpoints import Endpoint
from ._facts import RequestFacts

#: Fewer bytes per token than any real text, so the estimate errs high.
BYTES_PER_TOKEN_HIGH = 2
#: gpt-image output tokens of the largest, highest-quality image.
MAX_IMAGE_OUTPUT_TOKENS = 6240
#: Upload bytes per second of the most compact audio faregate assumes (32 kbit/s).
AUDIO_BYTES_PER_S = 4000


def _cap(body: Any, *names: str) -> int | None:
    if not isinstance(body, dict):
        return None
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def output_cap(body: Any, default: int) -> int:
    return _cap(body, "max_completion_tokens", "max_tokens", "max_output_tokens") or default


def dearest_output(table: PriceTable, model: str, at: datetime) -> str:
    entry = table.entry(model, at)
    if entry is None:
        return "output"
    rates = {k: entry.rate(k) or Decimal(0) for k in OUTPUT_CLASSES}
    return max(rates, key=lambda k: rates[k])


def worst_case(
    endpoint: Endpoint, facts: RequestFacts, body: Any, default_output: int,
    table: PriceTable, at: datetime,
) -> tuple[Usage, int]:
    """(worst-case usage, tokens it counts against TPM)."""
    model = facts.model or ""
    prompt = facts.prompt_bytes // BYTES_PER_TOKEN_HIGH + 16
    kind = endpoint.kind
    if kind in ("chat", "completions", "responses"):
        out = output_cap(body, default_output)
        n = _cap(body, "n") or 1
        cls = dearest_output(table, model, at)
        return Usage(input=prompt, **{cls: out * n}), prompt + out * n
    if kind == "embeddings":
        return Usage(input=prompt), prompt
    if kind == "transcription":
        seconds = Decimal(max(60, facts.prompt_bytes // AUDIO_BYTES_PER_S))
        tokens = int(seconds) * 20
        return Usage(seconds=seconds, audio_input=tokens, output=default_output), tokens
    if kind == "speech":
        return Usage(characters=facts.characters, input=facts.characters,
                     audio_output=facts.characters * 20), facts.characters
    if kind == "images":
        n = facts.images
        return Usage(images=n, image_size=facts.image_size, image_quality=facts.image_quality,
                     input=prompt, image_output=n * MAX_IMAGE_OUTPUT_TOKENS), prompt
    return Usage(), 0


def cost_nanos(usage: Usage, model: str | None, table: PriceTable, at: datetime) -> int:
    if not model:
        return 0
    return to_nanos(cost_of(usage, model, at, table))


#: Audio tokens per second of a Realtime conversation (the upstream counts about one
#: input token per 100 ms and one output token per 50 ms of audio).
AUDIO_INPUT_TOKENS_PER_S = 10
AUDIO_OUTPUT_TOKENS_PER_S = 20
#: The longest Realtime session the upstream allows: a session cap when none is set.
MAX_REALTIME_SESSION_S = 3600
#: The model a Realtime session gets when the request names none.
DEFAULT_REALTIME_MODEL = "gpt-realtime"


def unseen_session_seconds(max_session_seconds: int | None) -> int:
    """How long a session faregate cannot meter may run: the caller's session cap,
    else the longest the upstream allows."""
    return max_session_seconds or MAX_REALTIME_SESSION_S


def session_reservation(model: str | None, seconds: int, table: PriceTable,
                        at: datetime) -> int:
    """Nano-USD to hold for a Realtime session faregate will not meter (a minted key,
    a WebRTC/SIP call): `seconds` at the model's per-second rate, or its audio rates
    for a conversation that long. An unpriced model holds the default model's rates."""
    name = model if model and table.entry(model, at) is not None else DEFAULT_REALTIME_MODEL
    usage = Usage(seconds=Decimal(seconds), audio_input=seconds * AUDIO_INPUT_TOKENS_PER_S,
                  audio_output=seconds * AUDIO_OUTPUT_TOKENS_PER_S)
    return to_nanos(cost_of(usage, name, at, table))


#: (table version, families, UTC day) -> the dearest rate of each token class
_DEAREST: dict[tuple[str, frozenset[str] | None, object], tuple[Decimal, ...]] = {}


def _dearest_rates(table: PriceTable, at: datetime, families: frozenset[str] | None
                   ) -> tuple[Decimal, ...]:
    """USD per token of each class at the dearest model among `families` (None: all)."""
    key = (table.version, families, at.date())
    rates = _DEAREST.get(key)
    if rates is None:
        best = [Decimal(0)] * len(TOKEN_CLASSES)
        for family in families if families is not None else table.periods:
            entry = table.entry(family, at)
            if entry is None:
                continue
            for i, r in enumerate(table.per_token(entry, TOKEN_CLASSES, rate_for)):
                best[i] = max(best[i], r)
        if len(_DEAREST) > 256:
            _DEAREST.clear()
        rates = _DEAREST[key] = tuple(best)
    return rates


def dearest_nanos(usage: Usage, table: PriceTable, at: datetime,
                  models: frozenset[str] | None = None) -> int:
    """What `usage` costs at the dearest rates of `models` (a caller's allowlist; None: the
    whole table): the reservation of a call whose model faregate cannot price or does not
    know yet (a stored prompt). Per-unit prices (images, seconds) count at the dearest
    model's token rates only, so those shapes reserve their token classes."""
    families = None
    if models is not None:
        resolved = {table.resolve(m) for m in models}
        families = frozenset(f for f in resolved if f is not None) or None
    rates = _dearest_rates(table, at, families)
    total = sum((n * r for n, r in zip(token_counts(usage), rates) if n), Decimal(0))
    return to_nanos(total)
