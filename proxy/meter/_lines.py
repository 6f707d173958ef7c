"""Meters for Batch API answers: output files line by line, batch objects whole.

A batch output file is JSON Lines; `LineMeter.feed(chunk)` returns the
`Metered` usage of every successful line (`response.status_code` 200) that
chunk completed, at the `batch` service tier. Each line's ledger id is
derived from the batch id and the line's `custom_id` (`line_id`), so a
line can never be recorded twice, whichever download reads it.
`JsonCollector` keeps a small JSON answer (a batch object or a list of
them) whole, to be read once it has passed. Neither knows of sockets.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime
from typing import Any

import orjson

from faregate.pricing import PriceTable, usage_for_endpoint

from ._reading import Metered

#: Batch endpoints whose output lines carry usage, and the usage shape of each.
KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
}
#: A line's usage shape from its body's `object`, for files of batches faregate did not
#: see created (their endpoint is unknown).
KINDS_BY_OBJECT = {
    "chat.completion": "chat",
    "response": "responses",
    "list": "embeddings",
    "text_completion": "completions",
}
MAX_JSON = 4 * 1024 * 1024  # batch objects and lists (100 batches with metadata)
MAX_LINE = 8 * 1024 * 1024  # one output line (a long completion); longer lines are skipped
MAX_NAME = 128  # model names kept from output lines


def line_id(batch_id: str, custom_id: str, created: datetime) -> str:
    """The ledger id of one output line: time-ordered like `new_id`, but deterministic.

    The float milliseconds are kept on purpose: ids must not change between
    versions, or a file downloaded across an upgrade would be charged twice.
    """
    ms = int(created.timestamp() * 1000)
    digest = int.from_bytes(hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).digest()[:10],
                            "big")
    return f"{(ms << 80) | digest:032x}"


class JsonCollector:
    """Collects a small JSON answer (batch object or list) as it is relayed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        if not self.overflow:
            self.buf += chunk
            self.overflow = len(self.buf) > MAX_JSON

    def value(self) -> Any:
        if self.overflow:
            return None
        try:
            return orjson.loads(bytes(self.buf))
        except orjson.JSONDecodeError:
            return None


class LineMeter:
    """Meters the lines of one batch's output file as the file streams by."""

    def __init__(self, endpoint: str, batch_id: str, created: datetime,
                 table: PriceTable) -> None:
        self.kind = KINDS.get(endpoint)
        self.table = table
        self.batch_id = batch_id
        self.created = created
        self.buf = bytearray()
        self.skipping = False  # inside a line longer than MAX_LINE
        self.counts = {"charged": 0, "failed": 0, "malformed": 0, "too_long": 0}

    def feed(self, chunk: bytes) -> list[Metered]:
        """The lines this chunk completed, metered."""
        out: list[Metered] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return out
            self._keep(chunk[start:end])
            if not self.skipping:
                self._line(bytes(self.buf), out)
            self.buf.clear()
            self.skipping = False
            start = end + 1

    def close(self, complete: bool = True) -> list[Metered]:
        """The file ended (`complete`) or broke off (its last partial line is dropped)."""
        out: list[Metered] = []
        if complete and self.buf and not self.skipping:
            self._line(bytes(self.buf), out)
        self.buf.clear()
        return out

    def _keep(self, part: bytes) -> None:
        if self.skipping or not part:
            return
        if len(self.buf) + len(part) > MAX_LINE:
            self.skipping = True
            self.buf.clear()
            self.counts["too_long"] += 1
            return
        self.buf += part

    def _line(self, raw: bytes, out: list[Metered]) -> None:
        if not raw.strip():
            return
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.counts["malformed"] += 1
            return
        response = line.get("response") if isinstance(line, dict) else None
        if not isinstance(response, dict) or response.get("status_code") != 200:
            self.counts["failed" if isinstance(line, dict) else "malformed"] += 1
            return
        body = response.get("body")
        kind = self.kind or (KINDS_BY_OBJECT.get(body.get("object"))  # type: ignore[arg-type]
                             if isinstance(body, dict) else None)
        if not isinstance(body, dict) or kind is None:
            self.counts["malformed"] += 1
            return
        try:
            out.append(self._metered(line, body, kind))
        except Exception:  # an unreadable usage must not break the download
            self.counts["malformed"] += 1

    def _metered(self, line: dict, body: dict, kind: str) -> Metered:
        reported = usage_for_endpoint(kind, body.get("usage"), table=self.table)
        usage = dataclasses.replace(reported, service_tier="batch")
        model = body.get("model")
        model = model[:MAX_NAME] if isinstance(model, str) and model else "unknown"
        custom = line.get("custom_id")
        request_id = line.get("id") if isinstance(line.get("id"), str) else ""
        key = custom if isinstance(custom, str) and custom else request_id
        return Metered(usage, model, kind="batch",
                       record_id=line_id(self.batch_id, key[:256], self.created),
                       request_id=request_id[:128])
