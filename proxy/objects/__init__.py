"""objects — who owns what: every object created through faregate belongs to its tenant.

Stored responses, conversations, files, uploads, batches, vector stores,
containers, fine-tuning jobs, Realtime calls and stored chat completions
are bound to the tenant whose call created them (`Owners`: memory in front
of the ledger's `objects` table, shared by replicas). The REST edge calls
`Objects.check` before forwarding — the object in the path and every object
the body names (`previous_response_id`, `conversation`, `file_id`, …) must
be the caller's, else a `Denial` (404 as if it did not exist) — and
`bind_created`/`after_answer` once an answer names what was made;
`keep_own` filters list answers. `object_route` reads which object a path
creates, lists or uses.
"""

from ._guard import DERIVED_FILES, KEEP_BYTES, UNANSWERED, Denial, Objects, not_found
from ._owners import LookupFailed, Owners
from ._refs import references
from ._routes import COLLECTIONS, ObjectRoute, object_route

__all__ = [
    "COLLECTIONS",
    "DERIVED_FILES",
    "KEEP_BYTES",
    "UNANSWERED",
    "Denial",
    "LookupFailed",
    "ObjectRoute",
    "Objects",
    "Owners",
    "not_found",
    "object_route",
    "references",
]
