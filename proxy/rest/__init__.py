"""rest — the forwarding edge for plain HTTP calls (`ANY /v1/*`).

A thin loop: admission as named steps (body, caller, tags, endpoints, price
check, reservation or billable admission), hop-by-hop headers, bounded
bodies, then the answer streamed back through the meter its shape gets,
billed before its last bytes. The Batch API steps (a batch admitted by its
input file; its output charged once however it is reached) and background
responses (held at create, charged once when final, followed up) live here
too, over the ledger. `OwnQuota` answers `/v1/faregate/quota` itself: a
caller's own limits, never forwarded.
"""

from ._background import Background
from ._batch_book import BatchBook
from ._batches import Batches
from ._forward import Forwarder
from ._own_quota import OwnQuota, own_route

__all__ = ["Background", "BatchBook", "Batches", "Forwarder", "OwnQuota", "own_route"]
