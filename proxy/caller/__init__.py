"""caller — who is calling: identity, attribution tags, ephemeral secrets.

A request's credential and headers become a `Caller` (tenant, user, tier,
key fingerprint, the authorization that goes upstream) through the
`Directory` of configured keys, or through the `SecretBook` of ephemeral
Realtime secrets minted via faregate. `IdentityError` subclasses carry the
HTTP answer for a caller that cannot be served. `KeyScrubber` takes the
upstream key's fragments (whole or masked) out of text that leaves. Attribution tags are the
caller's own `key=value` labels, validated here.
"""

from ._identity import (
    DEFAULT_TENANT,
    SUBPROTOCOL_KEY_PREFIX,
    Caller,
    Directory,
    IdentityError,
    MissingUpstreamKey,
    UnknownKey,
    bearer_matches,
    bearer_token,
    digest,
    key_id,
)
from ._scrub import MAX_FRAGMENT, REPLACEMENT, KeyScrubber, call_scrubber, scrubber_for
from ._secrets import SecretBook, minted_secret, secret_ref
from ._tags import QUERY as TAGS_QUERY
from ._tags import BadTags, parse_tags, request_tags, strip_query

__all__ = [
    "DEFAULT_TENANT",
    "SUBPROTOCOL_KEY_PREFIX",
    "TAGS_QUERY",
    "BadTags",
    "Caller",
    "Directory",
    "IdentityError",
    "KeyScrubber",
    "MAX_FRAGMENT",
    "REPLACEMENT",
    "MissingUpstreamKey",
    "SecretBook",
    "UnknownKey",
    "bearer_matches",
    "bearer_token",
    "call_scrubber",
    "digest",
    "key_id",
    "minted_secret",
    "parse_tags",
    "request_tags",
    "secret_ref",
    "scrubber_for",
    "strip_query",
]
