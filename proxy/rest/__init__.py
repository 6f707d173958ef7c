"""rest — the forwarding edge for plain HTTP calls (`ANY /v1/*`).

A thin loop: admission as named steps (body, caller, tags, price check,
reservation), hop-by-hop headers, bounded bodies, then the answer streamed
back through the meter its shape gets, billed before its last bytes. The
Batch API steps (who created a batch; its output charged once) live here
too, over the ledger. `OwnQuota` answers `/v1/faregate/quota` itself: a
caller's own limits, never forwarded.
"""

from ._batch_book import BatchBook
from ._batches import Batches
from ._forward import Forwarder
from ._own_quota import OwnQuota, own_route
from ._paths import safe_path

__all__ = ["BatchBook", "Batches", "Forwarder", "OwnQuota", "own_route", "safe_path"]
