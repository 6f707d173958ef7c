"""Reservations for Realtime sessions faregate cannot meter (issue 23).

An ephemeral key minted through faregate, or a WebRTC/SIP call created
through it, opens a session whose media flows between the browser and the
upstream. Its admission (`Quota.admit`, taken at the mint or the call) is
kept here under the secret's or the call's reference until a session through
faregate meters it (`release`), or until the time such a session could still
be running has passed. Separate from the quota's internals: it only holds
`Admission` values and hands them back to `Quota.release`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from ._quota import Admission, Quota

MAX_HOLDS = 100_000


class UnseenHolds:
    """Admissions kept past their call, by reference, each with a deadline."""

    def __init__(self, quota: Quota, capacity: int = MAX_HOLDS) -> None:
        self._quota = quota
        self._capacity = capacity
        self._holds: OrderedDict[str, tuple[Admission, asyncio.TimerHandle]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holds)

    def __contains__(self, ref: str) -> bool:
        return ref in self._holds

    def keep(self, ref: str, admission: Admission, seconds: float) -> None:
        """Hold `admission` for at most `seconds` (then it is released by itself)."""
        self.release(ref)
        timer = asyncio.get_running_loop().call_later(max(0.0, seconds), self.release, ref)
        self._holds[ref] = (admission, timer)
        while len(self._holds) > self._capacity:  # bounded: the oldest goes first
            self.release(next(iter(self._holds)))

    def take(self, ref: str) -> Admission | None:
        """The hold under `ref`, removed but still held (it moves to a new owner)."""
        entry = self._holds.pop(ref, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def release(self, ref: str) -> bool:
        """A session through faregate now meters it (or its time is up): drop the hold."""
        admission = self.take(ref)
        if admission is None:
            return False
        self._quota.release(admission)
        return True

    def release_all(self) -> None:
        for ref in list(self._holds):
            self.release(ref)
