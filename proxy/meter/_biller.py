"""The biller: the one place a charge is priced, recorded, settled, counted and
noted for alerts.

REST calls (`bill_call`), Realtime/Live responses and batch output lines
(`bill`) all end here: `price()` from the table in force, one ledger row
(with the tenant's markup frozen into it), the Prometheus counters, the
budget hold swapped for the real amount (or spend without a hold), and the
model's spend noted for the alert's top models. A pricing bug never loses
the record: it is kept at $0, flagged `pricing_error`.

Usage that cannot be true (beyond the model's context window or maximum
output, negative, mistyped) is not charged at face value, nor at $0: the
call is charged at its reservation, flagged `usage_implausible`, logged and
noted for the budget alert. Before a metered call goes upstream, `start()`
journals its start marker: the charge it gets at its reservation, flagged
`interrupted`, if a crash comes before it settles (its real charge reuses
the marker's id, so only one of them can ever be in the ledger).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Awaitable, Callable, Protocol

from faregate.pricing import (
    IMPLAUSIBLE,
    INPUT_CLASSES,
    OUTPUT_CLASSES,
    Charge,
    PriceTable,
    Usage,
    implausible,
    most_possible,
    token_counts,
)
from faregate.storage import SESSION_START, LedgerRecord, StartMarker, new_id

from .._metrics import Metrics
from .._runtime import Runtime
from ..alerts import Alerting
from ..caller import Caller
from ..quota import Admission, Policy, Quota
from ._charges import (
    Account,
    charge_record,
    count_charge,
    images_made,
    model_label,
    observe,
    priced_charge,
    unpriced,
    unpriced_charge,
)
from ._consumed import call_usage, usage_estimate
from ._context import Contexts
from ._flow import Flow
from ._reading import Metered

log = logging.getLogger("faregate.meter")

_NOTHING = Usage()


class Journal(Protocol):
    """What the biller needs of the ledger beyond `record`: start markers, and
    whether a charge can be kept at all (`faregate.storage.Ledger`)."""

    accepting: bool

    def mark(self, marker: StartMarker) -> bool: ...

    def unmark(self, charge_id: str) -> None: ...


class Biller:
    def __init__(self, runtime: Callable[[], Runtime], record: Callable[..., None],
                 metrics: Metrics, quota: Quota, alerting: Alerting,
                 journal: Journal | None = None, contexts: Contexts | None = None) -> None:
        self._runtime = runtime
        self._record = record
        self.metrics = metrics
        self.quota = quota
        self.alerting = alerting
        self._journal = journal
        self.contexts = contexts if contexts is not None else Contexts()

    def accepting(self) -> bool:
        """Can the ledger keep a charge now (journal, or memory with the database up)?"""
        return self._journal is None or self._journal.accepting

    # -- start markers --------------------------------------------------------

    def start(self, flow: Flow) -> None:
        """A metered call is about to go upstream: journal its start marker."""
        admission = flow.admission
        if admission is None or flow.caller is None or flow.endpoint is None:
            return
        flow.charge_id = new_id()
        if self._journal is not None:
            self._journal.mark(self._marker(
                flow.caller, admission, flow.facts.model, flow.endpoint.path, flow.request_id,
                flow.tags, flow.charge_id))

    def start_response(self, account: Account, hold: Admission, model: str | None) -> None:
        """A Realtime response was reserved: journal its start marker (the hold keeps its id)."""
        hold.marker = new_id()
        if self._journal is not None:
            self._journal.mark(self._marker(
                account.caller, hold, model, account.endpoint, account.request_id, account.tags,
                hold.marker, account.session_id))

    def unmark(self, hold: Admission) -> None:
        """A reserved response that will never be charged (released): its marker is done."""
        if hold.marker is not None and self._journal is not None:
            self._journal.unmark(hold.marker)

    def _marker(self, caller: Caller, hold: Admission, model: str | None, endpoint: str,
                request_id: str, tags: dict[str, str], record_id: str,
                session_id: str | None = None) -> StartMarker:
        """The charge a call gets if a crash comes before it settles: its reservation."""
        worst = hold.reserved_usage if isinstance(hold.reserved_usage, Usage) else _NOTHING
        amount = hold.hold.amount
        markup = self._runtime().markup(caller.tenant)
        return StartMarker(
            record_id, caller.tenant, caller.user, caller.key_id, (model or "unknown")[:128],
            endpoint, request_id, amount, token_counts(worst),
            None if markup is None else int(amount * (1 + markup)), tags, session_id)

    # -- charges ----------------------------------------------------------------

    def bill_call(self, flow: Flow, with_records: list | tuple = ()) -> Charge | None:
        """A finished REST call, once: priced, recorded (with `with_records`, in the same
        journal write), counted, its hold settled.

        Calls faregate refused itself (unknown key, too large, model refused)
        never reached the upstream and cost nothing: they are counted in
        metrics but not written to the ledger, so a flood of bad requests
        cannot grow it.
        """
        if flow.billed:
            return None
        flow.billed = True
        if flow.endpoint is None or not flow.forwarded:
            if not flow.forwarded:  # faregate's own refusal: counted (model "none"), no row
                observe(self.metrics, flow, None, None)
            self._release(flow)
            if with_records:
                self._record(*with_records)
            return None
        if flow.endpoint.kind == "batch" or flow.hold_open:
            self._charged_elsewhere(flow, with_records)
            return None
        rt = self._runtime()
        at = datetime.now(timezone.utc)
        usage, problem, believed = self._call_usage(flow, rt.prices, at)
        model = flow.model or "unknown"
        if flow.endpoint.metered:
            charge = priced_charge(usage, model, at, rt.prices, flow.request_id)
        else:
            charge = unpriced_charge(usage, model, rt.prices)
        if charge.usage.flags == ("pricing_error",):
            problem = "pricing_error"
        elif flow.status >= 400 and usage.is_empty():
            charge.priced = True  # the upstream refused it: nothing to price, nothing unpriced
        markup = rt.markup(flow.caller.tenant) if flow.caller is not None else None
        images = images_made(charge.usage)
        self._record(charge_record(
            charge, flow.caller, model=model, endpoint=flow.endpoint.path, status=flow.status,
            at=at, request_id=flow.request_id, latency_ms=round(flow.elapsed_ms(), 3),
            response_id=flow.reading.response_id, markup=markup, tags=flow.tags,
            images=images, record_id=flow.charge_id, conversation_id=flow.conversation_id),
            *with_records)
        observe(self.metrics, flow, charge, problem)
        if unpriced(charge):
            self.alerting.note_unpriced(model, flow.caller.tenant if flow.caller else "default", at)
        self._settle_call(flow, charge, images, believed is not None, at)
        return charge

    def _charged_elsewhere(self, flow: Flow, with_records: list | tuple) -> None:
        """A batch is recorded as a batch event and charged line by line; a pending
        background response is charged (one row) when it is final — its own ledger row
        keeps it across a crash, so its start marker is done. Each line, and the final
        response, is a request of its own (counted when billed)."""
        if flow.charge_id is not None and self._journal is not None:
            self._journal.unmark(flow.charge_id)
        if not flow.hold_open:
            self._release(flow)
        if with_records:
            self._record(*with_records)

    def _call_usage(self, flow: Flow, table: PriceTable, at: datetime
                    ) -> tuple[Usage, str | None, Usage | None]:
        """(usage to charge, its problem, what replaced a report that cannot be true)."""
        assert flow.endpoint is not None
        try:
            usage, problem = call_usage(flow, table)
        except Exception:  # a usage-reading bug must not lose the record either
            log.exception("usage reading failed", extra={"request_id": flow.request_id})
            usage, problem = Usage(estimated=True, flags=("pricing_error",)), "pricing_error"
        tools = flow.facts.hosted_tools or bool(usage.tool_calls)
        believed = self._believable(usage, flow.model or "unknown", at, table,
                                    flow.endpoint.kind, tools, flow.admission,
                                    lambda: usage_estimate(flow), flow.request_id)
        if believed is not None:
            return believed, IMPLAUSIBLE, believed
        return usage, problem, None

    def _settle_call(self, flow: Flow, charge: Charge, images: int, implausible: bool,
                     at: datetime) -> None:
        """The call's hold: released if the upstream never answered, else settled at its
        charge (its images counted; what it teaches remembered, if its report was true)."""
        admission = flow.admission
        if flow.status in (502, 504):  # the upstream never answered: nothing was spent
            self._release(flow)
        elif admission is not None:
            if implausible:
                self.alerting.note_implausible(admission.policy, at, charge.cost_nanos)
            self.quota.count_images(admission.policy, admission, images, at)
            self._settle(admission.policy, admission, charge, at)
            if not implausible:
                self._remember(flow, charge.usage)

    def _remember(self, flow: Flow, usage: Usage) -> None:
        """What this call teaches the next one's estimate: its real input, and what a
        call continuing it (`previous_response_id`, `conversation`) carries."""
        if flow.status >= 400 or usage.estimated or flow.admission is None:
            return
        inputs = sum(getattr(usage, c) for c in INPUT_CLASSES)
        self.quota.learn(flow.admission, inputs)
        response_id = flow.reading.response_id
        responses = flow.endpoint is not None and flow.endpoint.kind == "responses"
        if flow.conversation_id or (response_id and responses):
            carried = inputs + sum(getattr(usage, c) for c in OUTPUT_CLASSES)
            self.contexts.note(flow.caller.tenant if flow.caller else "default", carried,
                               response_id if responses else None, flow.conversation_id)

    def _believable(self, usage: Usage, model: str, at: datetime, table: PriceTable,
                    kind: str, tools: bool, hold: Admission | None,
                    fallback: Callable[[], Usage], context: str) -> Usage | None:
        """None if `usage` can be true; else what to charge instead — the reservation
        (or `fallback()` when nothing was reserved), flagged `usage_implausible`."""
        if usage.estimated and IMPLAUSIBLE not in usage.flags:
            return None  # faregate's own estimate, not a report
        why = implausible(usage, table.entry(model, at), kind, tools)
        if why is None:
            return None
        held = hold.reserved_usage if hold is not None else None
        worst = held if isinstance(held, Usage) else fallback()
        log.warning("usage report not believed; charged at the reservation",
                    extra={"request_id": context, "model": model, "why": why})
        return dataclasses.replace(worst, estimated=True, flags=(IMPLAUSIBLE,),
                                   service_tier=None, tool_calls=())

    def _release(self, flow: Flow) -> None:
        if flow.admission is not None:
            self.quota.release(flow.admission, uncount=True)

    def bill(self, metered: Metered, account: Account, *, policy: Policy,
             hold: Admission | None = None, spend: bool = True,
             opens_session: bool = False) -> LedgerRecord:
        """One metered usage of a session or a batch file: priced, recorded and,
        with `spend`, counted and settled against `hold` (or spent unreserved).

        A request in `faregate_requests_total` and in reports is a charge of its
        own (a batch line, a background response) or a session's first charge
        (`opens_session`, flagged `SESSION_START`): a session is one request."""
        rt = self._runtime()
        at = datetime.now(timezone.utc)
        model = metered.model or "unknown"
        usage = metered.usage
        believed = None
        if metered.kind != "live":  # Live reports cumulative counters, not one call
            entry = rt.prices.entry(model, at)
            kind = _kind_of(account.endpoint)
            believed = self._believable(
                usage, model, at, rt.prices, kind, kind == "responses", hold,
                lambda: metered.fallback or most_possible(entry, kind), account.request_id)
            usage = believed or usage
        charge = priced_charge(usage, model, at, rt.prices, account.request_id)
        row = charge_record(
            charge, account.caller, model=model, endpoint=account.endpoint, status=200, at=at,
            request_id=metered.request_id or account.request_id,
            session_id=account.session_id, response_id=metered.response_id,
            markup=rt.markup(account.caller.tenant), tags=account.tags,
            record_id=metered.record_id or (hold.marker if hold is not None else None))
        images = images_made(charge.usage)
        row.images = images
        if opens_session:
            row.flags = (*row.flags, SESSION_START)
        self._record(row)
        if spend:
            problem = IMPLAUSIBLE if believed is not None else None
            if opens_session or account.session_id is None:
                self.metrics.requests.labels(account.caller.tenant, model_label(charge),
                                             account.endpoint, "101" if opens_session
                                             else "200").inc()
            count_charge(self.metrics, account.caller.tenant, charge, account.endpoint, problem)
            if believed is not None:
                self.alerting.note_implausible(policy, at, charge.cost_nanos)
            if images:
                self.quota.count_images(policy, hold, images, at)
            self._settle(policy, hold, charge, at)
            if unpriced(charge):
                self.alerting.note_unpriced(model, account.caller.tenant, at)
        elif hold is not None:
            self.quota.release(hold)
        return row

    async def bill_from_provider(self, account: Account, *, model: str, nanos: int,
                                 at: datetime, record_id: str, response_id: str,
                                 policy: Policy | None,
                                 claim: Callable[[LedgerRecord], Awaitable[bool]],
                                 note: str = "") -> bool:
        """The provider's cost for traffic faregate could not meter, attributed to the
        session's creator by reconciliation: written as the provider billed it
        (flagged `from_provider`) through `claim` — an insert that says whether this
        process wrote it, so a charge found again (another replica, a restart, a
        re-run) is counted nowhere twice — then counted and spent against the
        creator's budgets (`policy`; None: recorded and counted only)."""
        caller = account.caller
        row = LedgerRecord(
            tenant=caller.tenant, user=caller.user, key_id=caller.key_id, model=model[:128],
            endpoint=account.endpoint, status=200, cost_nanos=nanos, id=record_id, ts=at,
            request_id=account.request_id, breakdown={"from_provider": nanos},
            price_version=f"provider:{note}" if note else "provider", flags=("from_provider",),
            session_id=account.session_id, response_id=response_id, tags=account.tags)
        if not await claim(row):
            return False
        if nanos > 0:  # Prometheus counters are floats; the ledger keeps the exact amount
            family = self._runtime().prices.resolve(model) or "unpriced"
            self.metrics.cost.labels(caller.tenant, family).inc(float(Decimal(nanos).scaleb(-9)))
        if policy is not None:
            self.quota.spend(policy, nanos, at)
            self.alerting.note_model(policy, at, model, nanos)
        return True

    def _settle(self, policy: Policy, hold: Admission | None, charge: Charge,
                at: datetime) -> None:
        if hold is not None:
            self.quota.settle(hold, charge.cost_nanos, at, charge.usage.total_tokens)
        else:
            self.quota.spend(policy, charge.cost_nanos, at)
        self.alerting.note_model(policy, at, charge.family or charge.model, charge.cost_nanos)


def _kind_of(endpoint: str) -> str:
    """The usage shape a session or batch line is bounded as."""
    if endpoint.startswith("/v1/realtime") or endpoint.startswith("/v1/live"):
        return "realtime"
    if "embeddings" in endpoint:
        return "embeddings"
    return "responses" if "responses" in endpoint else "chat"
