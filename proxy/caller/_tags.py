"""Attribution tags: caller-chosen `key=value` labels on a call or a session.

Sources, strongest first: the `x-faregate-tags` header (REST calls and
WebSocket upgrades), the `faregate_tags` query parameter (for browsers,
which cannot set headers on a WebSocket; faregate removes it before
forwarding), then the request body's `metadata` where the API has one.

Tags are untrusted text that ends up in the ledger and in reports, so the
header and query forms are validated strictly (a bad one is a 400
`invalid_tags`): at most `MAX_TAGS` tags, keys of `[A-Za-z0-9_.-]` up to 40
characters, values of `[A-Za-z0-9_.:/@+-]` up to 128. Body metadata is the
upstream's own feature with looser rules, so entries that do not fit are
skipped rather than refused. Tags are never Prometheus labels (their
cardinality is unbounded) unless the operator promotes a key in config.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import unquote_plus

HEADER = "x-faregate-tags"
QUERY = "faregate_tags"
MAX_TAGS = 10
MAX_HEADER = 2048
KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")
VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,128}")

Tags = dict[str, str]


class BadTags(ValueError):
    """The caller's tags break the rules; the message says which."""


def parse_tags(text: str) -> Tags:
    """`feature=voice,kb_id=kb_42` → {"feature": "voice", "kb_id": "kb_42"}."""
    if len(text) > MAX_HEADER:
        raise BadTags(f"tags are limited to {MAX_HEADER} characters")
    tags: Tags = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not KEY.fullmatch(key):
            raise BadTags(f"tag {part[:60]!r}: keys are 1-40 of A-Z a-z 0-9 _ . - "
                          "followed by =value")
        if not VALUE.fullmatch(value):
            raise BadTags(f"tag {key!r}: values are 1-128 of A-Z a-z 0-9 _ . : / @ + -")
        if key in tags:
            raise BadTags(f"tag {key!r} is given twice")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise BadTags(f"at most {MAX_TAGS} tags per call")
    return tags


def from_metadata(metadata: Any) -> Tags:
    """The body's `metadata` entries that are valid tags (others are skipped)."""
    if not isinstance(metadata, dict):
        return {}
    out: Tags = {}
    for key, value in metadata.items():
        if len(out) >= MAX_TAGS:
            break
        if (isinstance(key, str) and isinstance(value, str) and KEY.fullmatch(key)
                and VALUE.fullmatch(value)):
            out[key] = value
    return out


def request_tags(headers: Mapping[str, str], query: Mapping[str, str],
                 metadata: Any = None) -> Tags:
    """All tags of a request; raises `BadTags` for a bad header or query value."""
    tags = from_metadata(metadata)
    for text in (query.get(QUERY), headers.get(HEADER)):
        if text:
            tags.update(parse_tags(text))
    if len(tags) > MAX_TAGS:
        raise BadTags(f"at most {MAX_TAGS} tags per call (header, query and metadata together)")
    return tags


def strip_query(path_qs: str) -> str:
    """The request target without `faregate_tags` (the upstream never sees it);
    every other parameter is kept byte for byte."""
    path, sep, qs = path_qs.partition("?")
    if not sep or QUERY not in unquote_plus(qs):
        return path_qs
    kept = [p for p in qs.split("&") if unquote_plus(p.partition("=")[0]) != QUERY]
    return f"{path}?{'&'.join(kept)}" if kept else path
