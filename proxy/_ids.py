"""Identifiers faregate makes: one format per kind, made in one place.

Request ids (`fg_…`, REST calls and WebSocket upgrades alike) come back to
the client in `x-faregate-request-id`; session ids are `fgs_…`; event ids
of faregate's own Realtime events are `fg_evt_…`.
"""

from __future__ import annotations

from faregate.storage import new_id, random_hex


def new_request_id() -> str:
    return "fg_" + random_hex(96)


def new_session_id() -> str:
    """Time-ordered like ledger ids: the admin API pages sessions by id."""
    return "fgs_" + new_id()[:24]


def new_event_id() -> str:
    return "fg_evt_" + random_hex(80)
