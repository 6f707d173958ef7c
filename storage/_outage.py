"""Outages said in words: which backend, at which address, and what went wrong.

`/readyz`, the logs and a failed start name the ledger's trouble the way an
operator would: "PostgreSQL at /run/postgresql:5432 (database faregate,
user app) is unreachable: no server is listening on that socket", not a bare
`FileNotFoundError`. Passwords are never part of an address. Pure functions;
nothing here touches a connection.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from urllib.parse import parse_qs, unquote, urlsplit

#: Exception types (by name, so asyncpg need not be imported) and what they mean.
_PG_WORDS = {
    "InvalidPasswordError": "the password was refused",
    "InvalidAuthorizationSpecificationError": "the user was refused",
    "InvalidCatalogNameError": "the database does not exist",
    "TooManyConnectionsError": "the server has no free connections",
    "CannotConnectNowError": "the server is starting up or shutting down",
    "ConnectionDoesNotExistError": "the connection was closed by the server",
    "InterfaceError": "the client connection is not usable",
    "ReadOnlySQLTransactionError": "the server is read-only (a standby?)",
    "DiskFullError": "the server's disk is full",
    "QueryCanceledError": "a statement was cancelled (statement timeout?)",
    "AdminShutdownError": "the server is shutting down",
}
_ERRNO_WORDS = {
    errno.ENOENT: "the path does not exist",
    errno.ECONNREFUSED: "nothing is listening there (connection refused)",
    errno.ECONNRESET: "the connection was reset",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error on the device",
    errno.EMFILE: "this process has no free file descriptors",
    errno.ENFILE: "the system has no free file descriptors",
}


def postgres_address(url: str) -> str:
    """'host:port (database d, user u)' or '<socket dir> (…)' of a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = (query.get("host") or [parts.hostname or os.environ.get("PGHOST") or "localhost"])[-1]
    port = (query.get("port") or [str(parts.port or 5432)])[-1]
    where = f"{host} (Unix socket)" if host.startswith("/") else f"{host}:{port}"
    database = unquote(parts.path.lstrip("/")) or (parts.username or "postgres")
    user = unquote(parts.username or "") or os.environ.get("PGUSER") or "the current user"
    return f"{where}, database {database}, user {user}"


def errno_words(exc: OSError) -> str:
    """An OSError as words: its errno's meaning and the errno's name."""
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    words = _ERRNO_WORDS.get(code) if code is not None else None
    if words is None:
        words = exc.strerror or str(exc) or type(exc).__name__
    return f"{words} ({name})" if name else words


def _pg_words(exc: BaseException) -> str | None:
    name = type(exc).__name__
    for cls in type(exc).__mro__:
        if cls.__name__ in _PG_WORDS:
            detail = str(exc).strip()
            base = _PG_WORDS[cls.__name__]
            return f"{base}: {detail}" if detail and name not in ("InterfaceError",) else base
    return None


def error_words(exc: BaseException, backend: str = "") -> str:
    """What went wrong, in words (never just an exception class name)."""
    if isinstance(exc, OSError) and exc.errno is None and str(exc):
        return str(exc)  # raised with a message of its own, not by the system
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "it did not answer in time"
    if isinstance(exc, socket.gaierror):
        return f"the host name could not be resolved ({exc.strerror or exc})"
    if isinstance(exc, FileNotFoundError) and backend == "PostgreSQL":
        return "no server is listening on that socket (is PostgreSQL running?)"
    if isinstance(exc, ConnectionRefusedError) and backend == "PostgreSQL":
        return "nothing is listening on that address (is PostgreSQL running?)"
    if isinstance(exc, OSError):
        return errno_words(exc)
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "locked" in text:
            return "the database file is locked by another process or connection"
        if "unable to open" in text:
            return "the database file cannot be opened (missing directory or no permission?)"
        if "disk I/O" in text:
            return "a disk I/O error on the database file"
        if "full" in text:
            return "the disk holding the database file is full"
        if "readonly" in text or "read-only" in text:
            return "the database file is read-only"
        return f"SQLite says: {text}"
    words = _pg_words(exc)
    if words is not None:
        return words
    text = str(exc).strip()
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


def describe_failure(where: str, exc: BaseException) -> str:
    """'<backend at address> is unreachable/failing: <words>' for a store error."""
    backend = where.split(" ", 1)[0]
    return f"{where}: {error_words(exc, backend)}"


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free for an unprivileged writer on the file system holding `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
