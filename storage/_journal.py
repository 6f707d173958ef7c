"""The local journal: every ledger entry on disk before the database sees it.

Format: append-only segment files `segment-<n>.journal`, one entry per line:
`<crc32 as 8 hex digits> <orjson [kind, appended_at_ms, row]>\\n`. orjson
never emits a raw newline, so a line is an entry; the CRC catches a torn or
garbled line after a crash, which is skipped and counted, never fatal.

Writes and durability are split on purpose. `append()` runs on the event
loop and is one `write(2)` into the page cache: a few microseconds, and once
it returns the entry survives the process being killed (`kill -9`, OOM).
`sync()` runs on the journal's worker thread once per flush interval: one
`fsync` for everything appended since (group commit), rotation to a fresh
segment when the current one is full, and deletion of segments whose every
entry the database has confirmed. Power loss or a kernel crash can lose what
was appended after the last completed `sync()` — at most one flush interval.
Losing the disk loses whatever the database had not yet confirmed.

An exclusive `flock` on `LOCK` keeps two processes from sharing a journal.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SEGMENT_BYTES = 16 << 20
READ_CHUNK = 4 << 20
#: `read()` hands the GIL back every this many lines (see there).
YIELD_EVERY = 64
_PREFIX, _SUFFIX = "segment-", ".journal"
#: A write that proves the journal's disk takes data again (a few charges' worth).
PROBE_BYTES = 64 * 1024
PROBE_NAME = "PROBE"

#: A position in the journal: (segment number, byte offset).
Cursor = tuple[int, int]


class JournalBusy(RuntimeError):
    """Another process holds this journal directory."""


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    at_ms: int  # wall-clock time it was appended
    row: tuple[Any, ...]
    segment: int


def encode_entry(kind: str, at_ms: int, row: tuple[Any, ...]) -> bytes:
    payload = orjson.dumps([kind, at_ms, row])
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes, segment: int) -> Entry | None:
    """An entry from one line without its newline; None if torn or garbled."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        kind, at_ms, row = orjson.loads(payload)
    except ValueError:
        return None
    return Entry(kind, at_ms, tuple(row), segment)


@dataclass(slots=True)
class _Segment:
    no: int
    path: Path
    size: int = 0
    entries: int | None = 0  # None: from an earlier run, not counted until read through
    seen: int = 0  # entries counted while reading an earlier run's segment
    confirmed: int = 0  # entries the database has committed
    sealed: bool = False

    @property
    def finished(self) -> bool:
        return self.sealed and self.entries is not None and self.confirmed >= self.entries


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Segments in one directory. Blocking methods belong on a worker thread."""

    def __init__(self, directory: Path, lock_fd: int, old: list[_Segment], segment_bytes: int):
        self.directory = directory
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # append (loop) vs rotate/confirm/delete
        self._segments: dict[int, _Segment] = {s.no: s for s in old}
        #: Where entries from an earlier run start, if any are left to replay.
        self.backlog: Cursor | None = (old[0].no, 0) if old else None
        self.first_own = (old[-1].no + 1) if old else 1
        self._current, self._fd = self._create(self.first_own)
        self._segments[self._current.no] = self._current
        self._appended = 0
        self._durable = 0

    @classmethod
    def open(cls, directory: str | os.PathLike[str], segment_bytes: int = SEGMENT_BYTES) -> "Journal":
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalBusy(f"journal {path} is in use by another faregate process") from None
        old = []
        for p in path.glob(f"{_PREFIX}*{_SUFFIX}"):
            number = p.name[len(_PREFIX) : -len(_SUFFIX)]
            if number.isdigit():
                old.append(_Segment(int(number), p, p.stat().st_size, None, sealed=True))
        old.sort(key=lambda s: s.no)
        journal = cls(path, lock_fd, old, segment_bytes)
        _fsync_dir(path)
        return journal

    def _create(self, no: int) -> tuple[_Segment, int]:
        path = self.directory / f"{_PREFIX}{no:012d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        return _Segment(no, path, os.fstat(fd).st_size), fd

    # -- event loop side (cheap, never fsyncs) --------------------------------

    def append(self, line: bytes, entries: int = 1) -> Cursor:
        """Write encoded entries (one line each, `entries` of them) with one `write(2)`;
        returns where they start. Raises OSError."""
        with self._lock:
            seg = self._current
            start = seg.size
            written = os.write(self._fd, line)
            seg.size += written
            if written != len(line):  # the disk filled mid-line: the rest says why (ENOSPC)
                more = os.write(self._fd, line[written:])
                seg.size += more
                if written + more != len(line):  # a torn line: the CRC will reject it
                    raise OSError(errno.ENOSPC, f"short journal write ({written + more} of "
                                                f"{len(line)} bytes)")
            seg.entries = (seg.entries or 0) + entries
            self._appended += entries
            return seg.no, start

    def end(self) -> Cursor:
        with self._lock:
            return self._current.no, self._current.size

    def at_end(self, cursor: Cursor) -> bool:
        """Is there nothing appended at or after `cursor`?"""
        no, off = cursor
        with self._lock:
            return all(
                s.size <= (off if s.no == no else 0) for s in self._segments.values() if s.no >= no
            )

    def read_past(self, cursor: Cursor) -> None:
        """Everything before `cursor` has been read: an earlier run's segments are counted."""
        no, off = cursor
        with self._lock:
            for s in self._segments.values():
                if s.entries is None and (s.no < no or (s.no == no and off >= s.size)):
                    s.entries = s.seen

    def confirm(self, counts: dict[int, int]) -> None:
        """The database committed `n` entries of each segment."""
        with self._lock:
            for no, n in counts.items():
                seg = self._segments.get(no)
                if seg is not None:
                    seg.confirmed += n

    def open_earlier(self) -> list:
        """Open files of the segments an earlier run left that are still here.

        An open file stays readable after the writer deletes the segment, so
        what the caller reads is exactly what was unconfirmed when it asked.
        """
        with self._lock:
            paths = sorted(s.path for s in self._segments.values() if s.no < self.first_own)
        files = []
        for path in paths:
            try:
                files.append(open(path, "rb"))
            except FileNotFoundError:  # confirmed and deleted meanwhile
                pass
        return files

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments.values())

    # -- worker thread side ------------------------------------------------

    def sync(self) -> int:
        """Group commit: fsync, rotate if full, drop finished segments.

        Returns how many entries became durable with this call.
        """
        with self._lock:
            fd, full, appended = self._fd, self._current.size >= self._segment_bytes, self._appended
        if full:
            nxt, new_fd = self._create(self._current.no + 1)
            with self._lock:
                self._segments[nxt.no] = nxt
                self._current.sealed = True
                self._current, self._fd = nxt, new_fd
                appended = self._appended
            os.fsync(fd)
            os.close(fd)
            _fsync_dir(self.directory)
        else:
            os.fsync(fd)
        durable, self._durable = appended - self._durable, appended
        self._delete_finished()
        return durable

    def _delete_finished(self) -> None:
        with self._lock:
            done = [s for s in self._segments.values() if s.finished]
            for s in done:
                del self._segments[s.no]
        for s in done:
            s.path.unlink(missing_ok=True)

    def read(self, cursor: Cursor, end: Cursor, limit: int) -> tuple[list[Entry], Cursor, int]:
        """Up to `limit` entries from `cursor` to `end`: (entries, next cursor, bad lines)."""
        out: list[Entry] = []
        bad = lines = 0
        no, off = cursor
        while len(out) < limit and (no, off) < end:
            with self._lock:
                seg = self._segments.get(no)
                later = [n for n in self._segments if n > no]
            stop = end[1] if no == end[0] else (seg.size if seg else 0)
            if seg is None or off >= stop:
                if no == end[0]:
                    break
                if seg is not None and seg.entries is None:
                    seg.entries = seg.seen  # an earlier run's segment, now counted
                no, off = (min(later), 0) if later else end
                continue
            with open(seg.path, "rb") as f:
                f.seek(off)
                chunk = f.read(min(stop - off, READ_CHUNK))
            pos = 0
            while len(out) < limit:
                lines += 1
                if lines % YIELD_EVERY == 0:
                    # Pure Python on the journal thread: each time the event loop
                    # makes a syscall it lets go of the GIL, and would then wait up
                    # to the 5 ms switch interval to get it back. sleep(0) hands it
                    # back sooner (event-loop ping p99 while replaying into SQLite:
                    # 7 -> 2.5 ms).
                    time.sleep(0)
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    break
                entry = decode_line(chunk[pos:nl], no)
                pos = nl + 1
                if entry is None:
                    bad += 1
                    continue
                out.append(entry)
                if seg.entries is None:
                    seg.seen += 1
            if pos == 0 and len(chunk) == stop - off:  # torn last line of a segment
                bad += 1
                pos = len(chunk)
            off += pos
        return out, (no, off), bad

    def probe(self, size: int = PROBE_BYTES) -> None:
        """Can the directory take `size` bytes now? Write, fsync and remove a probe
        file; raises OSError if not (disk full, I/O error, read-only)."""
        path = self.directory / PROBE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(bytes(size))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    def reopen(self) -> None:
        """After a failed write or fsync: continue in a fresh segment.

        The old segment is sealed as it is (a line a full disk cut short is
        skipped on replay, like a crash's torn line); nothing is appended to
        it again, so no later entry is glued to a torn one. An empty current
        segment is kept (a failing disk must not leave a trail of empty files).
        Raises OSError if the directory cannot take a new file yet.
        """
        with self._lock:
            old, old_fd = self._current, self._fd
            if old.size == 0:
                return
        nxt, fd = self._create(old.no + 1)
        with self._lock:
            self._segments[nxt.no] = nxt
            old.sealed = True
            self._current, self._fd = nxt, fd
        try:
            os.fsync(old_fd)
        except OSError:
            pass  # what the failing disk kept of it is read back on replay, torn lines skipped
        os.close(old_fd)

    def close(self) -> None:
        """Seal and fsync; delete what the database has; release the lock."""
        with self._lock:
            self._current.sealed = True
            fd = self._fd
        try:
            os.fsync(fd)
        except OSError:
            pass  # a failing disk: what it kept is replayed at the next start
        os.close(fd)
        self._delete_finished()
        os.close(self._lock_fd)
