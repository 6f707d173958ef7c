"""What a config error says beyond "invalid": the key or tier the operator meant.

pydantic checks a file level by level and runs a model's own validator only
when all of its fields parse, so references between sections (a tenant's or
key's `tier`) are checked here on the raw document too: every error comes
out in one pass. Unknown names get a "did you mean" from `difflib`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _inner(annotation: Any) -> Any:
    """`X | None` -> X (the config's optional sections and values)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the table at `loc` accepts (None when `loc` is not a table of settings)."""
    current: Any = root
    for part in loc:
        current = _inner(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _inner(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def unknown_key(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The message for an unknown key at `loc`: a close key of the same table, or
    the section the key belongs to when it is in the wrong one."""
    name = str(loc[-1])
    here = allowed_keys(root, loc[:-1]) or []
    hint = did_you_mean(name, here)
    if not hint and len(loc) == 2:
        homes = [s for s in root.model_fields if name in (allowed_keys(root, (s,)) or [])]
        if homes:
            hint = f" (it belongs in [{homes[0]}])"
    return "unknown key" + hint


def unknown_tiers(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key path, message) for every `tier` naming no `[tiers.NAME]`, read from the
    raw document so they are found whatever else is wrong in it."""
    tiers = data.get("tiers")
    names = [str(n) for n in tiers] if isinstance(tiers, Mapping) else []
    out = []

    def check(path: str, entry: Any) -> None:
        tier = entry.get("tier") if isinstance(entry, Mapping) else None
        if isinstance(tier, str) and tier not in names:
            out.append((f"{path}.tier", f"unknown tier {tier!r}" + did_you_mean(tier, names)))

    keys = data.get("keys")
    for i, entry in enumerate(keys if isinstance(keys, list) else []):
        check(f"keys[{i}]", entry)
    tenants = data.get("tenants")
    for name, entry in (tenants.items() if isinstance(tenants, Mapping) else ()):
        check(f"tenants.{name}", entry)
    return out
