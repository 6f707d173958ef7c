"""The listening sockets, bound before faregate opens anything else.

`faregate serve` binds `--listen` / `[server] listen` first, so a taken port
is one clear line and exit 2 with nothing created (no ledger, no journal),
and the sockets are handed to aiohttp as they are: no window in which
another process could take the port between the check and the start.
"""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """The address cannot be listened on; the message is one line for the operator."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int) -> list[socket.socket]:
    """One bound TCP socket per address `host` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {_where(host, port)}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(
            (i[0], i[1], i[2], "", i[4]) for i in infos):
        sock = socket.socket(family, kind, proto)
        sockets.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError as exc:
            for s in sockets:
                s.close()
            hint = (" (another faregate or another program is using it; choose a free "
                    "port with --listen or [server] listen)") if exc.errno == errno.EADDRINUSE else ""
            raise ListenError(
                f"cannot listen on {_where(host, port)}: {exc.strerror}{hint}") from None
    return sockets


def bound_address(sockets: list[socket.socket]) -> str:
    """HOST:PORT of the first socket (the real port when 0 was asked for)."""
    host, port = sockets[0].getsockname()[:2]
    return _where(host, port)
