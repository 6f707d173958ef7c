"""Objects a request body names: `previous_response_id`, `conversation`, files, stores.

A body can reach another tenant's object without naming it in the path: a
response continued with `previous_response_id`, a `conversation`, a file in
an `input_file` part (`file_id`), a batch's `input_file_id`, a fine-tuning
job's `training_file`, the `file_ids` of a vector store or container, the
`vector_store_ids` of a `file_search` tool, a code interpreter's
`container`. `references()` finds every such id anywhere in a parsed body
(bounded walk), after a byte search that skips the walk for the common body
that names none.
"""

from __future__ import annotations

import re
from typing import Any

from ._routes import KIND_OF_PREFIX, OBJECT_ID

#: Field -> the kind of object its value names (None: known by the id's prefix).
FIELDS: dict[str, str | None] = {
    "previous_response_id": "response",
    "conversation": "conversation",
    "conversation_id": "conversation",
    "file_id": "file",
    "input_file_id": "file",
    "training_file": "file",
    "validation_file": "file",
    "file_ids": "file",
    "vector_store_id": "vector_store",
    "vector_store_ids": "vector_store",
    "container": "container",
    "container_id": "container",
}
_NEEDLE = re.compile(b'"(?:' + b"|".join(re.escape(n.encode()) for n in FIELDS) + b')"')
#: A body nested deeper, or with more values than this, is walked this far only.
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_REFS = 256


def mentions(raw: bytes) -> bool:
    """Could the body name an object at all? (A byte search, no parse.)"""
    return _NEEDLE.search(raw) is not None


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return [value["id"]]  # "conversation": {"id": "conv_…"}
    if isinstance(value, list):
        return [v for v in value[:MAX_REFS] if isinstance(v, str)]
    return []


def _kind(field: str, ident: str) -> str | None:
    kind = FIELDS[field]
    for prefix, k in KIND_OF_PREFIX.items():
        if ident.startswith(prefix):
            return k if kind in (None, k) else kind
    return kind


def references(body: Any) -> tuple[list[tuple[str, str, str]], bool]:
    """(field, kind, id) of every object the parsed body names, and whether the walk
    saw all of the body (False: too deep, too many values or references to check)."""
    out: list[tuple[str, str, str]] = []
    stack: list[tuple[Any, int]] = [(body, 0)]
    nodes = 0
    complete = True
    while stack:
        if nodes >= MAX_NODES or len(out) > MAX_REFS:
            return out, False
        node, depth = stack.pop()
        nodes += 1
        if depth >= MAX_DEPTH and isinstance(node, (dict, list)):
            complete = False
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                if key in FIELDS:
                    for ident in _ids(value):
                        if OBJECT_ID.fullmatch(ident) and (kind := _kind(key, ident)):
                            out.append((key, kind, ident))
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return out, complete
