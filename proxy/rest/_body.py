"""Bounded reading of request bodies.

A JSON body is read whole (it must be parsed); an upload streams through
while being counted. Anything past `max_body_bytes` is refused. A metered
upload's form fields are read from its head; if a field that sets the model
or the images turns up later in the stream, the upload is broken off before
the upstream has it whole (`BodyUnreadable`).
"""

from __future__ import annotations

import re
from typing import AsyncIterator

from aiohttp import StreamReader

READ_CHUNK = 64 * 1024
#: Longer than any form-field header faregate looks for, so none is missed across chunks.
CARRY = 512


class BodyTooLarge(Exception):
    pass


class BodyUnreadable(Exception):
    """A metered upload set its model (or images) again after its head."""


async def read_bounded(stream: StreamReader, limit: int) -> bytes:
    """The whole request body, or `BodyTooLarge` as soon as it passes `limit`."""
    if stream.is_eof():  # a small body arrives whole with its headers: no iteration
        data = stream.read_nowait()
        if len(data) > limit:
            raise BodyTooLarge()
        return data
    buf = bytearray()
    async for chunk in stream.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge()
    return bytes(buf)


async def read_head(stream: StreamReader, size: int, until: re.Pattern[bytes] | None = None,
                    limit: int = 0) -> bytes:
    """Up to `size` bytes from the start of a body (fewer at its end); with `until`,
    more (up to `limit`, else `BodyTooLarge`) until `until` matches in them."""
    buf = bytearray()
    while len(buf) < size:
        chunk = await stream.read(size - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    while until is not None and until.search(buf) is None:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge()
    return bytes(buf)


class UploadCounter:
    """Streams an upload onward, failing the upload once it passes `limit`."""

    def __init__(self, head: bytes, stream: StreamReader, limit: int,
                 watch: re.Pattern[bytes] | None = None):
        self.head = head
        self.stream = stream
        self.limit = limit
        self.size = len(head)
        self.too_large = False
        self.watch = watch  # what may not appear after the head (metered uploads)
        self.unreadable = False

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        if self.size > self.limit:  # the head alone is over (no Content-Length to refuse early)
            self.too_large = True
            raise BodyTooLarge()
        if self.head:
            yield self.head
        carry = self.head[-CARRY:]
        async for chunk in self.stream.iter_chunked(READ_CHUNK):
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            if self.watch is not None:
                window = carry + chunk
                # Matches ending in the carried-over bytes were seen in the head already.
                if any(m.end() > len(carry) for m in self.watch.finditer(window)):
                    self.unreadable = True
                    raise BodyUnreadable()
                carry = window[-CARRY:]
            yield chunk
