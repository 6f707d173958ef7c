"""Unpriced models, said once a day: a call faregate could not price is loud.

A model that resolves to no price is recorded at $0, so a tenant using it
spends nothing against its budget. The biller calls `UnpricedNotes.note`
for every such call; the first one of each model on a UTC day becomes one
`Notice` — logged as a warning and sent through the alert channels — naming
the model, the tenant and the exact config lines that price it. A day holds
at most `MAX_PER_DAY` notices (then one saying more were left out), so
callers naming endless models cannot flood the channels. Remembered in
memory only: a restart may say a model again the same day.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime
from typing import Callable

from faregate.pricing import override_snippet

from ._alert import Notice

log = logging.getLogger("faregate.alerts")

MAX_PER_DAY = 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,95}")


def unpriced_notice(model: str, tenant: str, day: date, at: datetime) -> Notice:
    """The line for `model`'s first unpriced call on `day`."""
    snippet = override_snippet(model)
    text = (f"faregate: model {model!r} has no price, so its calls are recorded at $0 and "
            f"count nothing against budgets (first today, {day.isoformat()}, tenant "
            f"{tenant}). Add to the config:\n{snippet}")
    return Notice(id=f"unpriced|{day.isoformat()}|{model}",
                  subject=f"model {model} has no price", text=text,
                  fields={"model": model, "tenant": tenant, "day": day.isoformat(),
                          "config": snippet}, at=at)


class UnpricedNotes:
    """Which models were said unpriced today; sends each day's first call of each."""

    def __init__(self, send: Callable[[Notice], None]) -> None:
        self._send = send
        self._day: date | None = None
        self._said: set[str] = set()
        self._overflow = False

    def attach(self, send: Callable[[Notice], None]) -> None:
        self._send = send

    def note(self, model: str, tenant: str, now: datetime) -> None:
        day = now.date()
        if day != self._day:
            self._day, self._said, self._overflow = day, set(), False
        name = model if isinstance(model, str) and _NAME.fullmatch(model) else "other"
        if name in self._said:
            return
        if len(self._said) >= MAX_PER_DAY:
            if not self._overflow:
                self._overflow = True
                log.warning("more unpriced models today than are reported one by one",
                            extra={"day": day.isoformat(), "reported": MAX_PER_DAY})
            return
        self._said.add(name)
        notice = unpriced_notice(name, tenant, day, now)
        log.warning("model has no price", extra={"model": name, "tenant": tenant,
                                                 "config": notice.fields["config"]})
        self._send(notice)
