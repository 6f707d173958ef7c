"""faregate's own TLS: `https://` and `wss://` without a terminator in front.

SDKs that insist on `wss://` (the Node SDK's Realtime client, the Python
SDK's older beta client) can then reach faregate directly. The certificate
chain and key (`[server] tls_cert_file` / `tls_key_file`, PEM) are re-read
into the same `SSLContext` whenever either file changes on disk, so a
renewed certificate (certbot, cert-manager) is served to new connections
without a restart; open connections keep the one they began with. A pair
that does not load (half-written, mismatched) is logged and the previous
one stays in force until the files change again: each reload first copies
both files as they are (a private 0700 directory, removed at once) and checks
the copies load together in a context of their own; only then are they
loaded into the live context, on the event loop, so no handshake ever meets
it half-loaded (OpenSSL drops a context's key when a certificate that does
not match it is loaded).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import tempfile
from pathlib import Path

from ._watch import POLL_INTERVAL_S, FileWatch, Stamps

log = logging.getLogger("faregate.tls")


class TlsError(Exception):
    """The certificate or key cannot be used; the message is one line for the operator."""


def _load(context: ssl.SSLContext, cert_file: str, key_file: str,
          named: tuple[str, str] | None = None) -> None:
    """Load the pair into `context`; `named`: the files to name in errors (the
    originals of copies)."""
    shown_cert, shown_key = named or (cert_file, key_file)
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename or shown_cert}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise TlsError(f"cannot load TLS certificate {shown_cert} with key {shown_key}: "
                       f"{reason}") from None


def _checked_copy(cert_file: str, key_file: str) -> Path:
    """Both files copied as they are now into a new private directory, checked to load
    together (raises `TlsError`, leaving nothing behind)."""
    folder = Path(tempfile.mkdtemp(prefix="faregate-tls-"))
    try:
        for source, name in ((cert_file, "tls.crt"), (key_file, "tls.key")):
            try:
                data = Path(source).read_bytes()
            except FileNotFoundError:
                raise TlsError(f"cannot read {source}: no such file") from None
            except OSError as exc:
                raise TlsError(f"cannot read {source}: {exc.strerror}") from None
            (folder / name).write_bytes(data)
        _load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), str(folder / "tls.crt"),
              str(folder / "tls.key"), (cert_file, key_file))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) holding the certificate pair."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert_file, key_file)
    return context


class CertificateWatcher:
    """Reloads the pair into `context` when either file changes (polled each second)."""

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str,
                 interval_s: float = POLL_INTERVAL_S) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._watch = FileWatch([cert_file, key_file], self.reload, interval_s)
        self._failed: Stamps | None = None

    async def start(self, _app: object = None) -> None:
        """An aiohttp startup hook."""
        self._watch.start()

    async def stop(self, _app: object = None) -> None:
        """An aiohttp cleanup hook."""
        await self._watch.stop()

    async def reload(self, stamps: Stamps | None = None) -> bool:
        """Load the files now; True when the new pair is in force."""
        stamps = stamps or await asyncio.to_thread(self._watch.read)
        try:
            folder = await asyncio.to_thread(_checked_copy, self.cert_file, self.key_file)
        except TlsError as exc:
            if stamps != self._failed:  # once per version of the files, not every second
                log.error("TLS certificate reload failed; the previous one stays in force",
                          extra={"cert_file": self.cert_file, "error": str(exc)})
            self._failed = stamps
            return False
        try:  # a pair known to load, from local copies: quick, and never half-done
            _load(self.context, str(folder / "tls.crt"), str(folder / "tls.key"))
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self._failed = None
        log.info("TLS certificate reloaded", extra={"cert_file": self.cert_file})
        return True
