"""Model name -> price-table family: how `gpt-4o-2024-08-06` finds `gpt-4o`.

Rules, in order (the first that names a known entry wins):

1. the name itself (so an entry or override for an exact snapshot beats its
   family);
2. the explicit alias table (`chatgpt-4o-latest`-style names that no rule
   could derive);
3. the name with its snapshot suffix stripped: `-YYYY-MM-DD`, `-YYYYMMDD` or
   `-MMDD` (`gpt-4-0613`). Only a trailing date is removed and the remainder
   must be an exact entry, so `gpt-4o-mini-2024-07-18` can only become
   `gpt-4o-mini`, never `gpt-4o`: there is no prefix matching anywhere.

Fine-tuned models (`ft:<base>:<org>:<suffix>:<id>`) are priced differently
from their base, so they are never billed at the base price: the base is
resolved as above and the call is priced at the `ft:<base family>` entry if
the table has one (the shipped table lists the current fine-tunable bases),
else it is unpriced. Operators can price any fine-tune by adding
`[pricing.models."ft:<base>"]` or the exact `ft:...` name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

MAX_NAME = 256

_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


def normalise_name(name: str) -> str:
    """Trim and lowercase; names are compared case-insensitively."""
    return name.strip().lower()[:MAX_NAME]


def resolve_family(
    name: str,
    known: Callable[[str], bool],
    aliases: Mapping[str, str],
) -> str | None:
    """The family `name` is priced as, or None. `known(f)` tells if `f` has an entry."""
    if not isinstance(name, str) or not name.strip():
        return None
    n = normalise_name(name)
    if n.startswith("ft:"):
        return _resolve_fine_tune(n, known, aliases)
    return _resolve_plain(n, known, aliases)


def _resolve_plain(
    n: str, known: Callable[[str], bool], aliases: Mapping[str, str]
) -> str | None:
    # A snapshot can carry its own entry or alias; try before and after each
    # strip (at most two strips: `-YYYY-MM-DD` cannot hide another date).
    for _ in range(3):
        if known(n):
            return n
        target = aliases.get(n)
        if target is not None and known(target):
            return target
        stripped = _DATE_SUFFIX.sub("", n)
        if stripped == n:
            return None
        n = stripped
    return None


def _resolve_fine_tune(
    n: str, known: Callable[[str], bool], aliases: Mapping[str, str]
) -> str | None:
    if known(n):  # an entry/override for this exact fine-tune
        return n
    parts = n.split(":")
    if len(parts) < 2 or not parts[1]:
        return None
    base = _resolve_plain(parts[1], known, aliases)
    if base is None:
        return None
    family = "ft:" + base
    return family if known(family) else None
