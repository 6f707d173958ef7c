"""Opt-in conversation capture: transcripts and bodies, redacted and encrypted.

Off unless a tenant sets `capture = true` *and* the key in
`[capture] key_env` is present (32 bytes, base64 or hex): without a key
nothing is ever written, so capture can never fall back to plaintext.

What is captured: Realtime/Live text and transcription events (never raw
audio) and the caller's text items, one JSON Lines file per session per
UTC day; REST request and response bodies (each up to `MAX_TEXT`), one file
per tenant per day. Every line is AES-GCM encrypted on its own (random
96-bit nonce, base64), so a torn last line loses only itself.

The relay only enqueues (`put_nowait`); parsing, PII redaction (e-mail
addresses, phone and card numbers, plus operator regexes), encryption and
file I/O happen on a writer thread. A full queue drops the record and
counts it: capture never slows a session or a call. Days older than
`retention_days` are deleted by `purge()` (at start and hourly).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import queue
import re
import shutil
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from ._config import Settings
    from ._metrics import Metrics

log = logging.getLogger("faregate.capture")

#: Takes the upstream key's fragments out of bytes (`caller.KeyScrubber.bytes`).
Scrub = Callable[[bytes], bytes]

MAX_TEXT = 64 * 1024
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")

BUILTIN_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "phone": r"(?<![\w+])\+?\d[\d ().-]{7,}\d\b",
}

#: Server events whose text is worth keeping, and where the text is.
SERVER_TEXT = {
    "conversation.item.input_audio_transcription.completed": "transcript",
    "response.output_text.done": "text",
    "response.text.done": "text",
    "response.output_audio_transcript.done": "transcript",
    "response.audio_transcript.done": "transcript",
    "session.input_transcript.done": "transcript",
    "session.output_transcript.done": "transcript",
}
CLIENT_TEXT = frozenset({"conversation.item.create"})


def load_key(env: str) -> bytes | None:
    """The 32-byte AES key from the environment (base64 or hex), None if unusable."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return None
    for decode in (bytes.fromhex, lambda v: base64.b64decode(v, validate=True)):
        try:
            key = decode(raw)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    return None


class Redactor:
    def __init__(self, patterns: list[str], builtin: bool = True) -> None:
        rules = [(name, re.compile(p)) for name, p in BUILTIN_PATTERNS.items()] if builtin else []
        rules += [("redacted", re.compile(p)) for p in patterns]
        self.rules = rules

    def __call__(self, text: str) -> str:
        for name, rule in self.rules:
            text = rule.sub(f"[{name}]", text)
        return text


class Sealer:
    """AES-GCM per line: base64(nonce ‖ ciphertext ‖ tag)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plain, None))

    def open(self, line: bytes) -> bytes:
        blob = base64.b64decode(line)
        return self._aead.decrypt(blob[:12], blob[12:], None)


def _text_of(direction: str, kind: str, raw: str) -> str | None:
    """The human text of a captured frame (None: nothing to keep)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if direction == "server":
        value = obj.get(SERVER_TEXT.get(kind, ""))
        return value if isinstance(value, str) else None
    item = obj.get("item") if isinstance(obj.get("item"), dict) else {}
    parts = [p.get("text") for p in item.get("content") or [] if isinstance(p, dict)]
    texts = [t for t in parts if isinstance(t, str)]
    return "\n".join(texts) if texts else None


class Capture:
    def __init__(self, directory: str | Path, key: bytes, redactor: Redactor,
                 retention_days: int, queue_limit: int,
                 on_result: Callable[[str], None] = lambda result: None,
                 start: bool = True) -> None:
        self.directory = Path(directory)
        self._sealer = Sealer(key)
        self._redact = redactor
        self.retention_days = retention_days
        self._queue: queue.Queue = queue.Queue(maxsize=queue_limit)
        self._on_result = on_result
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="faregate-capture",
                                            daemon=True)
            self._thread.start()

    # -- the event loop side: enqueue only ----------------------------------

    def frame(self, stream: str, direction: str, kind: str, frame: str,
              scrub: Scrub | None = None) -> None:
        """A session frame whose type is in SERVER_TEXT / CLIENT_TEXT."""
        self._put((stream, "frame", direction, kind, frame[:MAX_TEXT], _now(), scrub))

    def exchange(self, stream: str, request_id: str, endpoint: str, request: bytes,
                 response: bytes, status: int, scrub: Scrub | None = None) -> None:
        """A REST call's bodies (each truncated at MAX_TEXT). `scrub` (run on the writer
        thread) takes the upstream key's fragments out first."""
        self._put((stream, "rest", request_id, endpoint, (request[:MAX_TEXT],
                   response[:MAX_TEXT], len(request) > MAX_TEXT or len(response) > MAX_TEXT,
                   status), _now(), scrub))

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._on_result("dropped")

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(item)
                self._on_result("written")
            except Exception:  # a bad record must not stop capture
                log.exception("capture write failed")
                self._on_result("failed")
            finally:
                self._queue.task_done()

    def _write(self, item: tuple) -> None:
        stream, what, a, b, payload, at, scrub = item
        if what == "frame":
            text = _text_of(a, b, payload)
            if text is None:
                return
            if scrub is not None:
                text = scrub(text.encode("utf-8", "surrogateescape")).decode(
                    "utf-8", "surrogateescape")
            record = {"at": at.isoformat(), "direction": a, "type": b,
                      "text": self._redact(text)}
        else:
            req, resp, truncated, status = payload
            if scrub is not None:
                req, resp = scrub(req), scrub(resp)
            record = {"at": at.isoformat(), "request_id": a, "endpoint": b, "status": status,
                      "request": self._redact(req.decode("utf-8", "replace")),
                      "response": self._redact(resp.decode("utf-8", "replace")),
                      "truncated": truncated}
        path = self.directory / at.date().isoformat() / f"{_SAFE_ID.sub('_', stream)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, self._sealer.seal(orjson.dumps(record)) + b"\n")
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Block until everything queued is written (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    # -- reading and retention ----------------------------------------------

    def read(self, stream: str) -> list[dict[str, Any]]:
        """Every record of a stream, oldest day first (decrypted, already redacted)."""
        name = f"{_SAFE_ID.sub('_', stream)}.jsonl"
        out: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob(f"*/{name}")):
            for line in path.read_bytes().splitlines():
                try:
                    out.append(orjson.loads(self._sealer.open(line)))
                except Exception:  # torn line or another key: skip, never crash
                    continue
        return out

    def purge(self, now: datetime | None = None) -> int:
        """Delete day directories older than the retention; returns how many."""
        today = (now or _now()).date()
        cutoff = today - timedelta(days=self.retention_days)
        removed = 0
        if not self.directory.is_dir():
            return 0
        for day_dir in self.directory.iterdir():
            try:
                day = date.fromisoformat(day_dir.name)
            except ValueError:
                continue
            if day < cutoff:
                shutil.rmtree(day_dir, ignore_errors=True)
                removed += 1
        return removed


def open_capture(settings: "Settings", metrics: "Metrics") -> "Capture | None":
    """Conversation capture runs only with its key; without one, nothing is written."""
    cfg = settings.capture
    key = load_key(cfg.key_env)
    if key is None:
        if any(t.capture for t in settings.tenants.values()):
            log.error("capture is on for some tenants but $%s holds no 32-byte key: "
                      "nothing will be captured", cfg.key_env)
        return None
    return Capture(
        cfg.directory, key, Redactor(cfg.redact, cfg.redact_builtin), cfg.retention_days,
        cfg.queue_limit, lambda result: metrics.capture_records.labels(result).inc())


def _now() -> datetime:
    return datetime.now(timezone.utc)
