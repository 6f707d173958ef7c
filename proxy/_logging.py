"""Structured (JSON lines) logging for the server.

Fields passed with `extra=` become keys of the line. Nothing logs API keys
or message contents: callers pass fingerprints and counts only. As a last
net, every line is scrubbed of the upstream keys in force (`hide`), whole
or masked, on the listener thread.

The access log (one line per REST call) skips the `logging` machinery once
`setup_logging` ran: `AccessLines` builds each line as bytes on the event loop
and hands the listener thread one batch at a time, so a call costs one small
dict and one `orjson.dumps`, not a record, a queue hand-off and a thread wake.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import logging.handlers
import queue
import sys
import time
from datetime import datetime, timezone

import orjson

from .caller import KeyScrubber

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


_hidden = KeyScrubber(())


def hide(keys: list[str]) -> None:
    """The upstream keys no log line may show (replaced on every config load)."""
    global _hidden
    _hidden = KeyScrubber(keys)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _hidden.text(self._line(record))

    def _line(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "exc_text":
                # A field named like one of the line's own keys must not replace it.
                line["extra_" + key if key in line else key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


ACCESS_LOGGER = "faregate.access"


class AccessLines:
    """Access-log lines, batched on the event loop for the listener thread.

    A batch goes when it holds `max_lines` lines or its first line is
    `delay_s` old, and at exit (before the listener stops).
    """

    def __init__(self, records: queue.SimpleQueue, delay_s: float = 0.1,
                 max_lines: int = 512) -> None:
        self._records = records
        self.delay_s = delay_s
        self.max_lines = max_lines
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._prefix = ""

    def write(self, fields: dict) -> None:
        """One line, shaped as `JsonFormatter` shapes a record with these `extra=` fields."""
        line = {"ts": self._stamp(time.time()), "level": "info", "logger": ACCESS_LOGGER,
                "msg": "request"}
        line.update(fields)
        self._lines.append(orjson.dumps(line, default=str))
        if len(self._lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.delay_s, self.flush)
            except RuntimeError:  # no loop: nothing would ever flush a batch
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            batch = logging.makeLogRecord({"name": ACCESS_LOGGER, "levelno": logging.INFO,
                                           "levelname": "INFO"})
            batch.lines, self._lines = self._lines, []
            self._records.put(batch)

    def _stamp(self, now: float) -> str:
        """`JsonFormatter`'s timestamp (UTC, milliseconds), its seconds formatted once."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"


class _Lines(logging.StreamHandler):
    """Records as JSON lines; an access batch as its lines, scrubbed here (off the loop)."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(record, "lines", None)
        if lines is None:
            super().emit(record)
            return
        try:
            self.stream.write(_hidden.text(b"\n".join(lines).decode()) + "\n")
            self.flush()
        except Exception:  # noqa: BLE001 - the stdlib's way: report, never raise
            self.handleError(record)


_access: AccessLines | None = None


def log_access(fields: dict) -> None:
    """One access-log line: batched once `setup_logging` ran, else an ordinary record."""
    if _access is not None:
        _access.write(fields)
    else:
        logging.getLogger(ACCESS_LOGGER).info("request", extra=fields)


def setup_logging(level: str = "INFO") -> logging.handlers.QueueListener:
    """JSON lines to stderr, formatted and written on a listener thread.

    The event loop only enqueues the record (access lines: a batch of them),
    so a slow terminal or log pipe never stalls requests.
    """
    global _access
    handler = _Lines(sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)
    _access = AccessLines(records)
    atexit.register(_access.flush)  # runs first: atexit calls are last in, first out
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return listener


class _Enqueue(logging.handlers.QueueHandler):
    """Keep `extra=` fields and the exception text; the stdlib version drops them."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record
