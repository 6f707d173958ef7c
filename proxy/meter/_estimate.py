"""What a call may cost before it is made: its reservation and its worst case.

Both are `Usage` values priced by the same `price()` as the real charge.

* The **reservation** is the best estimate faregate can make: the prompt
  over-estimated from the body's text bytes; each image at the most its
  `detail` can count for the model (`_images`); a `previous_response_id` or
  `conversation` at what faregate recorded for it (`_context`); files and
  whatever else it cannot size at a nominal size; all of it times the
  tenant's learned ratio of real to estimated input (`quota.InputRatios`).
  Output is the call's own cap, else the policy's `default_max_output_tokens`,
  else the model's `max_output_tokens` from the price table — never a flat
  guess — at the dearest output class the model has.
* The **worst case** is the most the call can cost at all: the model's
  context window filled at its dearest input class, and the output cap it
  really has (the model's longest answer when the call sets none). Budgets
  admit calls side by side while worst cases fit, one at a time after that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
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

from ..quota import DEFAULT_MAX_OUTPUT_TOKENS, Sizing
from ._endpoints import Endpoint
from ._facts import RequestFacts
from ._images import image_tokens
from ._inputs import InputShape

#: Fewer bytes per token than any real text, so the estimate errs high.
BYTES_PER_TOKEN_HIGH = 2
#: gpt-image output tokens of the largest, highest-quality image.
MAX_IMAGE_OUTPUT_TOKENS = 6240
#: Upload bytes per second of the most compact audio faregate assumes (32 kbit/s),
#: and of the most compact there is (4 kbit/s) for the worst case.
AUDIO_BYTES_PER_S = 4000
AUDIO_BYTES_PER_S_LEAST = 500
#: A part faregate cannot size (a file, a stored prompt, an item reference), before
#: the learned ratio; and a `previous_response_id` / `conversation` it never recorded.
UNSIZED_TOKENS = 2048
UNKNOWN_CONTEXT_TOKENS = 8192
#: The context window of a model the price table says nothing about.
DEFAULT_CONTEXT_WINDOW = 1_050_000
INPUT_KINDS = ("input", "audio_input", "image_input")
TEXT_KINDS = ("chat", "completions", "responses")
#: Where each endpoint kind caps output, in the order faregate reads them.
CAP_FIELDS = {"chat": ("max_completion_tokens", "max_tokens"),
              "completions": ("max_tokens",), "responses": ("max_output_tokens",)}


@dataclass(frozen=True, slots=True)
class Estimate:
    usage: Usage  # the reservation
    worst: Usage | None  # the most the call can cost; None: the reservation is a bound
    tpm_tokens: int  # tokens it counts against TPM
    raw_input: int = 0  # estimated input tokens before the learned ratio (what it learns from)
    recorded: int = 0  # input tokens known from earlier charges (not scaled, not learned)
    unsized: bool = False  # parts faregate could not size
    choices: int = 1
    output_class: str = "output"
    cap_field: str | None = None  # the body field that caps output (None: no cap set)


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _cap(body: Any, *names: str) -> tuple[int | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    for name in names:
        value = _positive(body.get(name))
        if value is not None:
            return value, name
    return None, None


_DEAREST: dict[tuple[int, tuple[str, ...]], tuple[object, str]] = {}


def _dearest(entry: Any, classes: tuple[str, ...]) -> str:
    """The class of `classes` with the highest own rate in a price period (memoised)."""
    if entry is None:
        return classes[0]
    key = (id(entry), classes)
    hit = _DEAREST.get(key)
    if hit is not None and hit[0] is entry:
        return hit[1]
    rates = {k: entry.rate(k) or Decimal(0) for k in classes}
    best = max(rates, key=lambda k: rates[k])
    if len(_DEAREST) > 4096:
        _DEAREST.clear()
    _DEAREST[key] = (entry, best)
    return best


def estimate(endpoint: Endpoint, facts: RequestFacts, body: Any, *, table: PriceTable,
             at: datetime, shape: InputShape | None = None, default_output: int | None = None,
             hidden_tokens: int = 0, hidden_known: bool = True, factor: float = 1.0,
             with_worst: bool = True) -> Estimate:
    """The reservation and worst case of one REST call (see the module docstring);
    `with_worst=False` skips the worst case (a caller with no budget has no use for it)."""
    prompt = facts.prompt_bytes // BYTES_PER_TOKEN_HIGH + 16
    kind = endpoint.kind
    if kind in TEXT_KINDS:
        return _text_call(kind, facts, body, table, at, shape or InputShape(), default_output,
                          hidden_tokens, hidden_known, factor, with_worst)
    if kind == "embeddings":  # every token is at least one byte of the body
        return Estimate(Usage(input=prompt), Usage(input=facts.prompt_bytes + 16), prompt)
    if kind == "transcription":
        seconds = max(60, facts.prompt_bytes // AUDIO_BYTES_PER_S)
        most = max(60, facts.prompt_bytes // AUDIO_BYTES_PER_S_LEAST)
        out = default_output or DEFAULT_MAX_OUTPUT_TOKENS
        return Estimate(
            Usage(seconds=Decimal(seconds), audio_input=seconds * 20, output=out),
            Usage(seconds=Decimal(most), audio_input=most * 20, output=out), seconds * 20)
    if kind == "speech":
        return Estimate(Usage(characters=facts.characters, input=facts.characters,
                              audio_output=facts.characters * 20), None, facts.characters)
    if kind == "images":
        n = facts.images
        return Estimate(Usage(images=n, image_size=facts.image_size,
                              image_quality=facts.image_quality, input=prompt,
                              image_output=n * MAX_IMAGE_OUTPUT_TOKENS), None, prompt)
    return Estimate(Usage(), None, 0)


def _text_call(kind: str, facts: RequestFacts, body: Any, table: PriceTable, at: datetime,
               shape: InputShape, default_output: int | None, hidden_tokens: int,
               hidden_known: bool, factor: float, with_worst: bool) -> Estimate:
    model = facts.model or ""
    entry = table.entry(model, at)
    longest = (entry.max_output_tokens if entry is not None else None)
    cap, field = _cap(body, *CAP_FIELDS[kind])
    if cap is not None and longest is not None:
        cap = min(cap, longest)
    longest = longest or DEFAULT_MAX_OUTPUT_TOKENS
    out = cap or default_output or longest
    n = (_cap(body, "n")[0] or 1) if kind != "responses" else 1
    visible = max(0, facts.prompt_bytes - shape.inline_bytes) // BYTES_PER_TOKEN_HIGH + 16
    images = sum(image_tokens(entry.family if entry else None, d) for d in shape.images)
    unsized = shape.unsized * UNSIZED_TOKENS + (0 if hidden_known else UNKNOWN_CONTEXT_TOKENS)
    # The learned ratio scales what faregate estimated, not what it recorded.
    raw = visible + images + unsized
    text_in = math.ceil((visible + unsized) * factor) + hidden_tokens
    image_in = math.ceil(images * factor)
    out_cls = _dearest(entry, OUTPUT_CLASSES)
    usage = Usage(input=text_in, image_input=image_in, **{out_cls: out * n})
    worst = None
    if with_worst:
        worst_out = (cap or longest) * n
        window = (entry.context_window if entry is not None else None) or DEFAULT_CONTEXT_WINDOW
        worst_in = max(window - worst_out, text_in + image_in)
        worst = Usage(**{_dearest(entry, INPUT_KINDS): worst_in, out_cls: worst_out})
    return Estimate(usage, worst, text_in + image_in + out * n, raw_input=raw,
                    recorded=hidden_tokens, unsized=bool(shape.unsized) or not hidden_known, choices=n,
                    output_class=out_cls, cap_field=field)


def with_output(est: Estimate, tokens: int) -> Estimate:
    """The estimate once faregate itself capped the call's output at `tokens`."""
    n, cls = est.choices, est.output_class
    usage = replace(est.usage, **{cls: tokens * n})
    worst = replace(est.worst, **{cls: tokens * n}) if est.worst is not None else None
    old = getattr(est.usage, cls)
    return replace(est, usage=usage, worst=worst,
                   tpm_tokens=est.tpm_tokens - old + tokens * n)


def affordable_output(est: Estimate, room_nanos: int, model: str, table: PriceTable,
                      at: datetime) -> int:
    """Output tokens per choice that `room_nanos` pays for beside the call's input."""
    cls = est.output_class
    input_only = replace(est.usage, **{cls: 0})
    per_token = cost_nanos(Usage(**{cls: 1_000_000}), model, table, at) / 1_000_000
    if per_token <= 0:
        return 0
    left = room_nanos - cost_nanos(input_only, model, table, at)
    return max(0, int(left / per_token) // max(1, est.choices))


_NO_OUTPUT = {"output": 0, "audio_output": 0, "image_output": 0}


def sizing(est: Estimate, model: str | None, table: PriceTable, at: datetime,
           models: frozenset[str] | None, cap_field: str | None, noun: str = "call"
           ) -> Sizing:
    """What `est`'s reservation is made of, for a refusal's words: its tokens, its
    model (None: reserved at the dearest rates of `models`), the body field that caps
    its output; what the input alone costs is priced only when a refusal is written."""
    u = est.usage
    tokens_in = (u.input + u.cached_input + u.audio_input + u.cached_audio_input
                 + u.image_input + u.cached_image_input)
    growth = 0  # a cap the body lacks makes it longer: the input the retry is sized at
    if cap_field and est.cap_field is None:
        factor = (u.input + u.image_input - est.recorded) / est.raw_input if est.raw_input else 1
        growth = math.ceil((len(cap_field) + 12) / BYTES_PER_TOKEN_HIGH * max(1.0, factor))

    def price(usage: Usage) -> int:
        return (cost_nanos(usage, model, table, at) if model
                else dearest_nanos(usage, table, at, models))

    def input_cost() -> tuple[int, int]:
        alone = replace(u, **_NO_OUTPUT)
        return price(alone), price(replace(alone, input=alone.input + growth))

    return Sizing(tokens_in, u.output + u.audio_output + u.image_output, model, cap_field,
                  noun, est.choices, input_cost)


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


_WORST: dict[tuple, tuple[object, int]] = {}


def worst_nanos(usage: Usage, model: str | None, table: PriceTable, at: datetime) -> int:
    """`cost_nanos` of a worst case, memoised per table, model, UTC day and token counts:
    calls to one model with one cap share their worst case (a context window and an
    output cap), so the hot path prices it once."""
    if not model:
        return 0
    key = (id(table), model, at.date(), usage.input, usage.audio_input, usage.image_input,
           usage.output, usage.audio_output, usage.image_output)
    hit = _WORST.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    nanos = cost_nanos(usage, model, table, at)
    if len(_WORST) > 4096:
        _WORST.clear()
    _WORST[key] = (table, nanos)
    return nanos


def estimate_nanos(est: Estimate, model: str | None, table: PriceTable, at: datetime,
                   models: frozenset[str] | None, with_worst: bool) -> tuple[int, int | None]:
    """(reservation, worst case) of `est` in nano-USD: at `model`'s rates, or — `model`
    None (unpriced, or not known before the answer) — at the dearest rates of `models`
    (the caller's allowlist; None: the whole table). The worst case only `with_worst`
    (a caller with a budget that blocks) and when `est` has one."""
    worst = est.worst if with_worst else None
    if model is not None:
        return (cost_nanos(est.usage, model, table, at),
                worst_nanos(worst, model, table, at) if worst is not None else None)
    return (dearest_nanos(est.usage, table, at, models),
            dearest_nanos(worst, table, at, models) if worst is not None else None)
