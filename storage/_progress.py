"""How far long work got: rows done, rate and time left, for an operator to watch.

Migration backfills and `faregate ledger copy` report through `Progress`.
On a terminal (stderr is a tty) it rewrites one line in place; otherwise
(a service, a pipe, a log collector) it logs a structured INFO line. Either
way at most one update every `EVERY_S` seconds, plus one when the work is done.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TextIO

log = logging.getLogger("faregate.ledger")

#: Seconds between two progress updates (the last one, "done", always comes).
EVERY_S = 2.0


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Progress of one piece of long work over about `total` rows (0: unknown)."""

    def __init__(self, what: str, total: int, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total = what, max(0, int(total))
        self.done = 0
        self._clock = clock
        self._every_s = EVERY_S
        self.started = self._last = clock()
        out = sys.stderr if stream is None else stream
        self._tty = out if _is_terminal(out) else None

    def add(self, n: int) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self._every_s:
            self._last = now
            self._show("in progress", now)

    def finish(self) -> None:
        self._show("done", self._clock())

    def figures(self, now: float) -> dict[str, float | int | None]:
        """rows, rows_total (at least `rows`), seconds, rows_per_s and eta_s (None unknown)."""
        took = now - self.started
        rate = self.done / took if took > 0 else None
        total = max(self.total, self.done)
        eta = (total - self.done) / rate if rate else None
        return {"rows": self.done, "rows_total": total, "seconds": round(took, 1),
                "rows_per_s": None if rate is None else round(rate),
                "eta_s": None if eta is None else round(eta, 1)}

    def _show(self, state: str, now: float) -> None:
        f = self.figures(now)
        if self._tty is None:
            log.info(f"{self.what}: {state}", extra={"work": self.what, "state": state, **f})
            return
        rate = "" if f["rows_per_s"] is None else f", {f['rows_per_s']:,} rows/s"
        if state == "done":
            tail = f" in {_duration(float(f['seconds'] or 0))}"
        else:
            tail = "" if f["eta_s"] is None else f", {_duration(float(f['eta_s']))} left"
        self._tty.write(f"\r{self.what}: {f['rows']:,} of ~{f['rows_total']:,} rows"
                        f"{rate}{tail}\x1b[K" + ("\n" if state == "done" else ""))
        self._tty.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
