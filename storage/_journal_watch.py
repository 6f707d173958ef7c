"""Is the journal taking writes? Its state, said once per change, and when to retry.

A journal write can fail (disk full, I/O error, a file system remounted
read-only). The ledger then keeps new charges in memory (bounded) and asks
this watch when to try again; the watch logs the failure once — with the
journal's path and the free space — and the recovery once, and says in words
what is wrong for `/readyz`. Nothing here does I/O beyond `statvfs`.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ._outage import errno_words, free_bytes

log = logging.getLogger("faregate.ledger")

#: Seconds between two attempts to bring a failing journal back.
RETRY_S = 1.0
#: The reasons a metric may carry (bounded); anything else is "other".
REASONS = ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EACCES", "EMFILE", "other")
#: After the first dropped charge of an episode, one log line per this many more.
DROP_LOG_EVERY = 1000


@dataclass(slots=True)
class Trouble:
    since: float  # time.monotonic() of the failure
    reason: str  # one of REASONS
    words: str  # what failed, in words


def reason_of(exc: BaseException) -> str:
    name = errno.errorcode.get(getattr(exc, "errno", None) or -1, "")
    return name if name in REASONS else "other"


class JournalWatch:
    """The journal's health: ok, or failing since when and why."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.trouble: Trouble | None = None
        self.dropped = 0  # charges that could be kept nowhere in this episode
        self._next_try = 0.0

    @property
    def ok(self) -> bool:
        return self.trouble is None

    @property
    def reason(self) -> str | None:
        return self.trouble.reason if self.trouble is not None else None

    def failed(self, exc: BaseException, doing: str) -> None:
        """A write or fsync failed: from now on the journal is failing (logged once)."""
        if self.trouble is not None:
            return
        words = errno_words(exc) if isinstance(exc, OSError) else str(exc)
        self.trouble = Trouble(time.monotonic(), reason_of(exc), f"cannot {doing}: {words}")
        self.dropped = 0
        self._next_try = time.monotonic() + RETRY_S
        log.error("journal failing: new charges are kept in memory until it recovers",
                  extra={"path": str(self.directory), "error": self.trouble.words,
                         "reason": self.trouble.reason,
                         "free_bytes": free_bytes(self.directory)})

    def due(self) -> bool:
        """Time for another recovery attempt?"""
        return self.trouble is not None and time.monotonic() >= self._next_try

    def still_failing(self) -> None:
        """A recovery attempt failed: try again later (not logged again)."""
        self._next_try = time.monotonic() + RETRY_S

    def recovered(self, rejournaled: int) -> None:
        """The journal takes writes again (logged once)."""
        trouble, self.trouble = self.trouble, None
        if trouble is None:
            return
        log.warning("journal recovered: charges are journaled again",
                    extra={"path": str(self.directory), "free_bytes": free_bytes(self.directory),
                           "failing_s": round(time.monotonic() - trouble.since, 3),
                           "rejournaled": rejournaled, "dropped": self.dropped})

    def dropped_one(self, kind: str) -> None:
        """A record that neither the journal nor memory could keep (counted, logged)."""
        self.dropped += 1
        if self.dropped == 1 or self.dropped % DROP_LOG_EVERY == 0:
            log.error("ledger record lost: the journal is failing and the memory queue is full",
                      extra={"path": str(self.directory), "kind": kind,
                             "lost_in_this_outage": self.dropped})

    def describe(self, in_memory: int) -> str:
        """What is wrong, for `/readyz`."""
        trouble = self.trouble
        if trouble is None:
            return "ok"
        free = free_bytes(self.directory)
        text = (f"journal at {self.directory}: {trouble.words}, for "
                f"{time.monotonic() - trouble.since:.0f} s; "
                f"{'unknown' if free is None else free} bytes free; "
                f"{in_memory} records kept in memory only")
        if self.dropped:
            text += f"; {self.dropped} lost"
        return text
