"""realtime — the WebSocket edge: handshake, relay loops, sessions.

`Relay` upgrades Realtime, Live and Responses WebSocket sessions (and refuses
any other upgrade) after dialling the upstream,
then copies frames both ways; each `Session` reads every client frame once
(its meter and its quota share the parse), bills what server frames meter,
and writes the session row when it ends. `Sessions` lists the active ones.
"""

from ._handshake import is_websocket
from ._relay import Relay
from ._session import Session, Sessions, SessionServices

__all__ = ["Relay", "Session", "SessionServices", "Sessions", "is_websocket"]
