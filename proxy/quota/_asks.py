"""What a call asks the quota for, and what an admitted call holds.

An `Ask` is a call's reservation (what it is charged against until its real
charge arrives), its worst case (the most it can cost at all), and its
counts; an `Admission` is what it holds once admitted, settled or released
exactly once; `Queued` says it must wait: near the limit, calls in flight
hold the room it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._config import UpstreamLimitSettings
from ._budget import Counter, Hold
from ._policy import BudgetLimit, Policy
from ._ratelimit import Bucket
from ._status import Budgets


@dataclass(frozen=True, slots=True)
class Sizing:
    """What a call's reservation is made of, so that a budget refusal can say so:
    "this call could cost up to $X (N input + M output tokens of MODEL)"."""

    input_tokens: int
    output_tokens: int
    model: str | None  # None: reserved at the dearest rates the caller may use
    cap_field: str | None = None  # the body field that caps the output (None: nothing to set)
    noun: str = "call"  # "call" | "response"
    choices: int = 1  # answers asked for (`n`): the cap counts per answer
    #: what the input alone costs, as it is and once the body also sets `cap_field`
    #: (nano-USD; asked only when a refusal is written)
    input_cost: Callable[[], tuple[int, int]] | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """What a call asks to hold: its reservation, its worst case, its counts."""

    amount: int  # nano-USD held until the real charge settles it
    worst: int | None = None  # the most the call can cost (None: `amount` is a bound)
    model: str | None = None
    images: int = 0
    tpm_tokens: int = 0
    count_request: bool = True
    shared: UpstreamLimitSettings | None = None
    force: bool = False  # a response the upstream starts itself: never waits for the lane
    #: False for a hold that may last hours (a batch, a session faregate cannot see):
    #: near a limit it is refused at once (`budget_exceeded`) instead of waiting for room
    wait: bool = True
    #: (ratio key, estimated input tokens, input known from earlier charges)
    learn: tuple[tuple[str, str, bool], int, int] | None = None
    sizing: Sizing | None = None  # what the reservation is made of (for a refusal's words)


@dataclass
class Admission:
    """What an admitted call holds, until it is settled or released."""

    policy: Policy
    hold: Hold
    tpm: Bucket | None = None
    tpm_tokens: int = 0
    budgets: Budgets = ()
    upstream_tokens: int = 0  # taken from the shared [upstream_limits] tpm
    learn: tuple[tuple[str, str, bool], int, int] | None = None
    turns: tuple = ()  # shared lane turns held across replicas (see `_leases`)
    reserved_usage: Any = None  # the reservation as a `Usage`: what an unbelievable report is charged
    marker: str | None = None  # the ledger id of its start marker (the charge's id too)


@dataclass(frozen=True, slots=True)
class Queued:
    """The call must wait: `counter` is held by calls in flight near its limit."""

    counter: Counter
    limit: BudgetLimit

    async def wait(self, timeout: float) -> None:
        if self.counter.wake is None:
            self.counter.wake = asyncio.Event()
        try:
            await asyncio.wait_for(self.counter.wake.wait(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            pass
