"""Bounded reading of request bodies.

A JSON body is read whole (it must be parsed); an upload streams through
while being counted. Anything past `max_body_bytes` is refused.
"""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import StreamReader

READ_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    pass


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


async def read_head(stream: StreamReader, size: int) -> bytes:
    """Up to `size` bytes from the start of a body (fewer at its end)."""
    buf = bytearray()
    while len(buf) < size:
        chunk = await stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class UploadCounter:
    """Streams an upload onward, failing the upload once it passes `limit`."""

    def __init__(self, head: bytes, stream: StreamReader, limit: int):
        self.head = head
        self.stream = stream
        self.limit = limit
        self.size = len(head)
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        if self.size > self.limit:  # the head alone is over (no Content-Length to refuse early)
            self.too_large = True
            raise BodyTooLarge()
        if self.head:
            yield self.head
        async for chunk in self.stream.iter_chunked(READ_CHUNK):
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            yield chunk
