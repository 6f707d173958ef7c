"""Relative paths in a config file are relative to the file, not to the shell.

`faregate report --config other/faregate.toml` must read the ledger that
`faregate serve --config other/faregate.toml` writes, from any working
directory: a SQLite ledger, the journal, the capture directory, the
operator's price file and the TLS files named (or defaulted) by a file are anchored at its directory. Without
a file, the built-in defaults stay relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Settings


def _anchor(path: str | None, base: Path) -> str | None:
    if path is None or os.path.isabs(path):
        return path
    return str(base / path)


def _anchor_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix):]
    if not path or path.startswith(":") or os.path.isabs(path):  # ":memory:", absolute
        return url
    return prefix + str(base / path)


def anchored(settings: Settings, base: Path) -> Settings:
    """`settings` with every relative file path made relative to `base`."""
    server, storage, capture = settings.server, settings.storage, settings.capture
    pricing = settings.pricing
    return settings.model_copy(update={
        "pricing": pricing.model_copy(update={"table": _anchor(pricing.table, base)}),
        "server": server.model_copy(update={
            "tls_cert_file": _anchor(server.tls_cert_file, base),
            "tls_key_file": _anchor(server.tls_key_file, base)}),
        "storage": storage.model_copy(update={
            "url": _anchor_sqlite(storage.url, base),
            "journal_dir": _anchor(storage.journal_dir, base)}),
        "capture": capture.model_copy(update={"directory": _anchor(capture.directory, base)}),
    })
