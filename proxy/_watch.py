"""Files faregate follows while it runs: the config (hot reload) and the TLS pair.

A file is polled (its mtime and size, once a second, off the event loop)
rather than watched with inotify: that works the same on every filesystem,
including the symlink swaps of a Kubernetes ConfigMap or Secret mount.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence

from ._tasks import stop_task

POLL_INTERVAL_S = 1.0

Stamp = tuple[int, int] | None  # (mtime_ns, size); None while the file is missing
Stamps = tuple[Stamp, ...]


def stamp(path: str | os.PathLike[str]) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class FileWatch:
    """Calls `on_change(stamps)` when any of `paths` changes on disk.

    `on_change` answers whether it took the change: if not, it is offered
    again at the next poll (a certificate pair caught half-written).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]],
                 on_change: Callable[[Stamps], Awaitable[bool]],
                 interval_s: float = POLL_INTERVAL_S) -> None:
        self.paths = tuple(paths)
        self._on_change = on_change
        self.interval_s = interval_s
        self.stamps = self.read()
        self._task: asyncio.Task | None = None

    def read(self) -> Stamps:
        return tuple(stamp(p) for p in self.paths)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            stamps = await asyncio.to_thread(self.read)
            if stamps != self.stamps and await self._on_change(stamps):
                self.stamps = stamps
