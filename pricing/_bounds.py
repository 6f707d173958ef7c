"""What one call can possibly have used: usage beyond it is not believed.

A provider report of 10^18 tokens, more output than the model can write, or
more tokens than fit its context window cannot be true; neither can a count
that is negative or not a number (the normalisers flag those
`usage_implausible`). `implausible()` says why a usage cannot be true, from
the model's `context_window` and `max_output_tokens` in the price table, or
global bounds for a model without them. Pure.
"""

from __future__ import annotations

import operator

from ._counts import IMPLAUSIBLE
from ._period import Price
from ._usage import INPUT_CLASSES, OUTPUT_CLASSES, Usage

_INPUT = operator.attrgetter(*INPUT_CLASSES)
_OUTPUT = operator.attrgetter(*OUTPUT_CLASSES)


def _inputs(usage: Usage) -> int:
    return sum(_INPUT(usage))


def _outputs(usage: Usage) -> int:
    return sum(_OUTPUT(usage))


#: Bounds for a model the table gives no limits for (no model comes near them).
GLOBAL_CONTEXT_WINDOW = 10_000_000
GLOBAL_MAX_OUTPUT = 1_000_000
#: Embeddings: the context window bounds each input, and one call has at most this many.
MAX_EMBEDDING_INPUTS = 2048
#: A Responses call with built-in tools runs several model turns and reports their sum.
MAX_TOOL_TURNS = 64


def implausible(usage: Usage, entry: Price | None, kind: str, tools: bool = False
                ) -> str | None:
    """Why `usage` cannot be what one call of `kind` used, or None if it can.

    `tools`: the call used built-in tools (a Responses call then sums the
    usage of up to `MAX_TOOL_TURNS` model turns).
    """
    if IMPLAUSIBLE in usage.flags:
        return "counts that are negative, not numbers, or absurd"
    window = (entry.context_window if entry is not None else None) or GLOBAL_CONTEXT_WINDOW
    most = (entry.max_output_tokens if entry is not None else None) or min(
        window, GLOBAL_MAX_OUTPUT)
    if kind == "embeddings":
        window *= MAX_EMBEDDING_INPUTS
    elif kind == "responses" and tools:
        window, most = window * MAX_TOOL_TURNS, most * MAX_TOOL_TURNS
    used_in, used_out = _inputs(usage), _outputs(usage)
    if isinstance(used_in, int) and isinstance(used_out, int) and used_in + used_out <= 4096 \
            and window > 4096:
        return None  # the common small call: nothing to compare
    if used_out > most:
        return f"{used_out} output tokens, above the {most} this model can write"
    if used_in + used_out > window:
        return f"{used_in + used_out} tokens, above this model's context window of {window}"
    return None


def most_possible(entry: Price | None, kind: str) -> Usage:
    """The most one call of `kind` can use: its context window, the largest output
    inside it (a ceiling for a call whose report cannot be true and that held no
    reservation, such as a batch line)."""
    window = (entry.context_window if entry is not None else None) or GLOBAL_CONTEXT_WINDOW
    most = (entry.max_output_tokens if entry is not None else None) or min(
        window, GLOBAL_MAX_OUTPUT)
    if kind == "embeddings":
        return Usage(input=window * MAX_EMBEDDING_INPUTS)
    most = min(most, window)
    return Usage(input=window - most, output=most)
