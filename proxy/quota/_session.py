"""Budget enforcement inside a Realtime/Live session.

Every response the upstream will bill is reserved, like a REST call:

* A client `response.create` holds its estimate — the conversation so far
  (the last response's input and output), what was added since (items,
  appended audio), or for an out-of-band response its own inline `input`,
  plus its output cap — before it is forwarded, side by side while its worst
  case fits and one at a time near a limit (waiting at most
  `[server] admission_wait_s`; then the client gets a non-fatal `error`
  event and may ask again). If the budget cannot pay for its output cap, the
  cap is *clamped* to what it can; if the budget cannot pay even for a
  minimal response, the session is cut.
* A response the upstream starts by itself (server VAD turns) is reserved
  when its `response.created` arrives; if the budget cannot pay for it, it is
  cancelled and the session is cut. After each response, if the next
  server-created response at the session's output cap would not be paid
  for, faregate lowers that cap with its own `session.update`, or cuts the
  session when not even a minimal response fits. So a VAD session passes a
  limit by at most one response.

When spend reaches a limit, or the session outlives `max_session_seconds`,
the session is cut: an error event, then close 1008 once the in-flight
response has settled. `session.update` frames naming a model outside the
allowlist cut the session too. Opt-in `degrade_to_text_at` forces text-only
output once that share of the budget is used.

Client events arrive already parsed (type and object): nothing here reads
a frame's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Protocol

import orjson

from faregate.pricing import OUTPUT_CLASSES, PriceTable, Usage

from .._ids import new_event_id

from ._cuts import Cut, budget_cut, model_cut, notice, tool_cut, unpriced_cut
from ._policy import DEFAULT_MAX_OUTPUT_TOKENS, Policy
from ._asks import Admission, Ask, Sizing
from ._quota import Quota
from ._refusals import Refusal, budget_refusal

MIN_RESPONSE_TOKENS = 16
INPUT_OVERHEAD_TOKENS = 256
AUDIO_TOKENS_PER_BYTE = 10 / 48_000  # ~10 tokens per second of 24 kHz PCM16
#: The context window of a realtime model the price table says nothing about.
DEFAULT_CONTEXT_WINDOW = 128_000
CANCEL_EVENT = orjson.dumps({"type": "response.cancel"}).decode()


class Added(Protocol):
    """Input tokens added to a session by class (the meter's `Added`)."""

    text: int
    audio: int
    image: int


class SessionState(Protocol):
    """What the session's meter knows that sizing a response needs."""

    audio_in_bytes: int
    added: Any  # Added
    auto_responses: bool
    ga: bool
    tool_calls: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of one client event."""

    frame: str | None  # to forward upstream (perhaps rewritten), or None
    cut: Cut | None = None  # end the session
    reply: str | None = None  # an event for the client (the session goes on)


@dataclass(frozen=True, slots=True)
class Sized:
    amount: int  # nano-USD reserved
    worst: int  # the most the response can cost
    in_nanos: int  # of which input
    in_tokens: int
    raw: int  # estimated input tokens, before the learned ratio
    recorded: int  # input tokens known from the last charge (the conversation)
    audio_tokens: int = 0  # of `in_tokens`, audio
    image_tokens: int = 0  # ... and images

    def usage(self, out_class: str, out_tokens: int) -> Usage:
        """The reservation as a usage (what a response whose report cannot be true costs)."""
        text = max(0, self.in_tokens - self.audio_tokens - self.image_tokens)
        return Usage(input=text, audio_input=self.audio_tokens, image_input=self.image_tokens,
                     **{out_class: out_tokens})


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _per_token(table: PriceTable, model: str, cls: str, at: datetime) -> Decimal:
    """Nano-USD per token of one class (0 when unpriced)."""
    entry = table.entry(model, at)
    rate = entry.rate(cls) if entry is not None else None
    return (rate or Decimal(0)) * 1000  # USD per 1M tokens -> nano-USD per token


def first_response(table: PriceTable, model: str | None, at: datetime) -> tuple[int, int]:
    """(reservation, worst case) in nano-USD of the smallest response faregate admits
    (the input allowance and `MIN_RESPONSE_TOKENS` of the dearest output): what a
    new session must afford."""
    model = model or ""
    text = _per_token(table, model, "input", at)
    dearest_in = max(_per_token(table, model, c, at) for c in ("input", "audio_input"))
    out = max(_per_token(table, model, c, at) for c in OUTPUT_CLASSES)
    entry = table.entry(model, at)
    window = (entry.context_window if entry is not None else None) or DEFAULT_CONTEXT_WINDOW
    amount = int(INPUT_OVERHEAD_TOKENS * text + MIN_RESPONSE_TOKENS * out)
    return amount, max(amount, int(window * dearest_in + MIN_RESPONSE_TOKENS * out))


class SessionQuota:
    """The money side of one session's events."""

    def __init__(self, quota: Quota, policy: Policy, prices: PriceTable, model: str | None,
                 wait_s: float = 0.0):
        self.quota = quota
        self.policy = policy
        self.prices = prices
        self.model = model
        self.wait_s = wait_s
        self.pending: list[Admission] = []  # client-asked responses not yet started
        self.bound: dict[str, Admission] = {}  # started responses, by id
        self.context_tokens = 0  # the conversation: last response's input + output
        self.context_nanos = 0  # ... and what it costs again as the next input
        self.session_max_output: int | None = None
        #: told of every response reserved (the session journals its start marker)
        self.on_hold: Callable[[Admission], None] | None = None

    @property
    def holds(self) -> list[Admission]:
        """Every reservation still held: asked for, and started."""
        return [*self.pending, *self.bound.values()]

    # -- sizing ---------------------------------------------------------------

    def rates(self, now: datetime) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Nano-USD per token: text input, audio input, image input, dearest output."""
        model = self.model or ""
        text = _per_token(self.prices, model, "input", now)
        audio = _per_token(self.prices, model, "audio_input", now) or text
        image = _per_token(self.prices, model, "image_input", now) or text
        rout = max(_per_token(self.prices, model, c, now) for c in OUTPUT_CLASSES)
        return text, audio, image, rout

    def _key(self) -> tuple[str, str, bool]:
        model = self.model or ""
        return (self.policy.tenant, self.prices.resolve(model) or model[:64], False)

    def default_output(self) -> int:
        entry = self.prices.entry(self.model or "", None)
        return (self.session_max_output or self.policy.default_max_output_tokens
                or (entry.max_output_tokens if entry is not None else None)
                or DEFAULT_MAX_OUTPUT_TOKENS)

    def size(self, now: datetime, out_tokens: int, state: SessionState,
             inline: Added | None = None) -> Sized:
        """A response's reservation: its input (the conversation and what was added,
        or its own inline input) and `out_tokens` of the dearest output."""
        text, audio, image, rout = self.rates(now)
        known_tokens, known_nanos = 0, 0
        if inline is not None:  # out of band: its own input instead of the conversation
            tokens = INPUT_OVERHEAD_TOKENS + inline.text + inline.audio + inline.image
            heard_audio, seen_images = inline.audio, inline.image
            cost = ((INPUT_OVERHEAD_TOKENS + inline.text) * text + inline.audio * audio
                    + inline.image * image)
        else:
            added = state.added
            heard = int(state.audio_in_bytes * AUDIO_TOKENS_PER_BYTE)
            tokens = INPUT_OVERHEAD_TOKENS + added.text + added.audio + added.image + heard
            heard_audio, seen_images = added.audio + heard, added.image
            cost = ((INPUT_OVERHEAD_TOKENS + added.text) * text + (added.audio + heard) * audio
                    + added.image * image)
            known_tokens, known_nanos = self.context_tokens, self.context_nanos
        # The learned ratio scales what faregate estimated, and only until the session's
        # own last charge tells what its conversation holds (instructions and all).
        factor = Decimal(self.quota.ratios.factor(self._key())) if not known_tokens else 1
        in_nanos = int(cost * factor) + known_nanos
        entry = self.prices.entry(self.model or "", now)
        window = (entry.context_window if entry is not None else None) or DEFAULT_CONTEXT_WINDOW
        amount = in_nanos + int(out_tokens * rout)
        worst = max(in_nanos, int(max(0, window - out_tokens) * max(text, audio, image)))
        audio_tokens = int(heard_audio * factor) if entry and entry.rate("audio_input") else 0
        return Sized(amount, worst + int(out_tokens * rout), in_nanos,
                     int(tokens * factor) + known_tokens, tokens, known_tokens,
                     audio_tokens, int(seen_images * factor))

    def _hold(self, admission: Admission, sized: Sized, out_tokens: int, now: datetime
              ) -> Admission:
        """`admission`, knowing its reservation as a usage (for an unbelievable report)."""
        model = self.model or ""
        dearest = max(OUTPUT_CLASSES, key=lambda c: _per_token(self.prices, model, c, now))
        admission.reserved_usage = sized.usage(dearest, out_tokens)
        if self.on_hold is not None:
            self.on_hold(admission)
        return admission

    def _ask(self, sized: Sized, out_tokens: int, force: bool = False) -> Ask:
        in_nanos = sized.in_nanos
        return Ask(sized.amount, sized.worst, count_request=False, force=force,
                   tpm_tokens=0 if force else sized.in_tokens + out_tokens,
                   learn=(self._key(), sized.raw, sized.recorded),
                   sizing=Sizing(sized.in_tokens, out_tokens, self.model, None, "response",
                                 input_cost=lambda: (in_nanos, in_nanos)))

    # -- client events ----------------------------------------------------------

    async def client_event(self, kind: str | None, event: dict[str, Any] | None, frame: str,
                           state: SessionState, inline: Added | None = None) -> Verdict:
        """What to do with one parsed client event."""
        if event is None:
            return Verdict(frame)  # the upstream answers malformed events itself
        if kind == "session.update" or kind == "session.start":
            return self._session_update(event, frame)
        if kind == "response.create":
            cap = self.policy.max_tool_calls_per_session
            if cap is not None and state.tool_calls >= cap:
                return Verdict(None, tool_cut(cap))
            return await self._response_create(event, frame, state, inline)
        return Verdict(frame)

    def _session_update(self, event: dict[str, Any], frame: str) -> Verdict:
        session = event.get("session") if isinstance(event.get("session"), dict) else {}
        model = session.get("model")
        if isinstance(model, str) and not self.policy.allows(model):
            return Verdict(None, model_cut(model))
        if (isinstance(model, str) and self.policy.unknown_model == "reject"
                and self.prices.entry(model, None) is None):
            return Verdict(None, unpriced_cut(model))
        if isinstance(model, str):
            self.model = model
        cap = _positive(session.get("max_output_tokens")) or _positive(
            session.get("max_response_output_tokens"))
        if cap is not None:
            self.session_max_output = cap
        return Verdict(frame)

    async def _response_create(self, event: dict[str, Any], frame: str, state: SessionState,
                               inline: Added | None) -> Verdict:
        now = datetime.now(timezone.utc)
        policy = self.policy
        response = event.get("response") if isinstance(event.get("response"), dict) else {}
        out = (_positive(response.get("max_output_tokens"))
               or _positive(response.get("max_response_output_tokens")) or self.default_output())
        sized = self.size(now, out, state, inline)
        await self.quota.prepare(policy, self._ask(sized, out), now)
        changed = False
        remaining = self.quota.remaining(policy, now)
        rout = self.rates(now)[3]
        if remaining is not None and policy.block and sized.amount > remaining and rout > 0:
            out = max(MIN_RESPONSE_TOKENS, min(out, int((remaining - sized.in_nanos) / rout)))
            sized = self.size(now, out, state, inline)
            event.setdefault("response", {})["max_output_tokens"] = out
            changed = True
        if policy.degrade_to_text_at is not None and (
            self.quota.used_ratio(policy, now) >= policy.degrade_to_text_at
        ):
            event.setdefault("response", {})["output_modalities"] = ["text"]
            changed = True
        result = await self.quota.reserve(policy, self._ask(sized, out), now, self.wait_s)
        if isinstance(result, Refusal):
            if result.code == "budget_exceeded":
                return Verdict(None, budget_cut(result))
            return Verdict(None, reply=notice(result, new_event_id()))
        self.pending.append(self._hold(result, sized, out, now))
        return Verdict(orjson.dumps(event).decode() if changed else frame)

    # -- server events --------------------------------------------------------------

    async def response_started(self, rid: str, state: SessionState
                               ) -> tuple[list[str], Cut | None]:
        """A `response.created`: bind it to the client's reservation, or reserve a
        response the upstream started itself (frames to send upstream, and a cut)."""
        if rid in self.bound:
            return [], None
        if self.pending:
            self.bound[rid] = self.pending.pop(0)
            return [], None
        now = datetime.now(timezone.utc)
        out = self.default_output()
        sized = self.size(now, out, state)
        await self.quota.prepare(self.policy, self._ask(sized, out, force=True), now)
        frames: list[str] = []
        remaining = self.quota.remaining(self.policy, now)
        rout = self.rates(now)[3]
        if remaining is not None and self.policy.block and sized.amount > remaining and rout:
            # Already under way: hold what the budget can pay, and cap the next ones.
            out = max(MIN_RESPONSE_TOKENS, int((remaining - sized.in_nanos) / rout))
            sized = self.size(now, out, state)
            frames.append(self._cap_update(out, state))
        result = self.quota.admit(self.policy, self._ask(sized, out, force=True), now)
        if isinstance(result, Admission):
            self.bound[rid] = self._hold(result, sized, out, now)
            return frames, None
        if isinstance(result, Refusal) and result.code == "budget_exceeded":
            return [CANCEL_EVENT], budget_cut(result)
        return frames, None  # not reserved (e.g. alert only): charged when it is done

    def take_hold(self, rid: str | None) -> Admission | None:
        """The reservation a finished response settles (None: it had none)."""
        if rid is not None and rid in self.bound:
            return self.bound.pop(rid)
        return self.pending.pop(0) if self.pending else None  # never seen starting

    def after_charge(self, usage: Usage, input_nanos: int, hold: Admission | None,
                     in_conversation: bool) -> Cut | None:
        """A response was charged: learn from it, remember the conversation it leaves;
        cut if a budget is now spent."""
        now = datetime.now(timezone.utc)
        real_input = usage.input + usage.cached_input + usage.audio_input + \
            usage.cached_audio_input + usage.image_input + usage.cached_image_input
        if hold is not None:
            self.quota.learn(hold, real_input)
        if in_conversation:
            text, audio, _image, _ = self.rates(now)
            out_text = usage.output
            out_audio = usage.audio_output + usage.image_output
            self.context_tokens = real_input + out_text + out_audio
            self.context_nanos = input_nanos + int(out_text * text + out_audio * audio)
        refusal = self.quota.exhausted(self.policy, now)
        return budget_cut(refusal) if refusal is not None else None

    async def next_turn(self, state: SessionState) -> tuple[list[str], Cut | None]:
        """After a response in a session whose server starts responses itself: can the
        budget pay for the next one? Lower the session's output cap to what it can
        (faregate's own `session.update`), or cut when not even a minimal one fits."""
        policy = self.policy
        if not state.auto_responses or not policy.block or not policy.budgets:
            return [], None
        if self.pending or self.bound:
            return [], None  # a response is under way: sized again once it is done
        now = datetime.now(timezone.utc)
        out = self.default_output()
        sized = self.size(now, out, state)
        await self.quota.prepare(policy, self._ask(sized, out), now)
        remaining = self.quota.remaining(policy, now)
        rout = self.rates(now)[3]
        if remaining is None or sized.amount <= remaining or rout <= 0:
            return [], None
        affordable = int((remaining - sized.in_nanos) / rout)
        if affordable < MIN_RESPONSE_TOKENS:
            tightest = self.quota.tightest(policy, now)
            assert tightest is not None
            smallest = self._ask(self.size(now, MIN_RESPONSE_TOKENS, state), MIN_RESPONSE_TOKENS)
            return [], budget_cut(budget_refusal(tightest[0], tightest[1].used(), smallest,
                                                 remaining))
        return [self._cap_update(affordable, state)], None

    def _cap_update(self, tokens: int, state: SessionState) -> str:
        """faregate's own `session.update`: the session's responses answer in at most
        `tokens` (the GA or the beta field, as the session speaks)."""
        self.session_max_output = tokens
        session: dict[str, Any] = ({"type": "realtime", "max_output_tokens": tokens}
                                   if state.ga else {"max_response_output_tokens": tokens})
        return orjson.dumps({"type": "session.update", "event_id": "fg_cap",
                             "session": session}).decode()

    def release_all(self) -> None:
        for hold in [*self.pending, *self.bound.values()]:
            self.quota.release(hold)
        self.pending.clear()
        self.bound.clear()
