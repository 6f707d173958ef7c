"""faregate.pricing: usage in, exact charge out. Pure; no I/O at call time.

- `Usage` / `TOKEN_CLASSES`: what a call consumed, in disjoint token classes.
- `usage_for_endpoint` and `usage_from_*`: provider usage reports -> `Usage`.
- `find_usage` / `find_json_str`: read `usage` / `model` from a response body
  without parsing all of it.
- `PriceTable` / `Price` / `load_price_table`: the shipped, versioned rates
  (`prices.toml`), with config overrides; `resolve_model` maps snapshots to
  their family.
- `price(usage, model, at)` -> `Charge`, with a per-class breakdown.
- `ToolScan` / `find_service_tier` / `request_tool_options`: the hosted-tool
  calls and the applied service tier, read from response bytes.
- `implausible(usage, price, kind)`: why a usage cannot be what one call used
  (beyond the model's `context_window` / `max_output_tokens`, or flagged).
- `check_price_table`: whole-table checks for `faregate prices --check`.
- `format_price_table`: the table as text, for `faregate prices`.
"""

from ._bounds import implausible, most_possible
from ._charge import Charge, to_nanos
from ._check import check_price_table
from ._check import describe as describe_price_table
from ._find import find_json_str, find_usage
from ._format import format_price_table
from ._normalise import (
    IMPLAUSIBLE,
    usage_for_endpoint,
    usage_from_chat,
    usage_from_embeddings,
    usage_from_images,
    usage_from_realtime,
    usage_from_responses,
    usage_from_speech,
    usage_from_transcription,
)
from ._price import cost_of, price
from ._table import (
    DEFAULT_TIERS,
    RATE_KEYS,
    Price,
    PriceTable,
    PriceTableError,
    load_price_table,
    loads_price_table,
    resolve_model,
)
from ._tools import ToolScan, find_service_tier, request_tool_options
from ._usage import (
    CACHED_CLASSES,
    INPUT_CLASSES,
    OUTPUT_CLASSES,
    TOKEN_CLASSES,
    Usage,
    merge_tool_calls,
    token_counts,
)

__all__ = [
    "CACHED_CLASSES",
    "IMPLAUSIBLE",
    "Charge",
    "DEFAULT_TIERS",
    "INPUT_CLASSES",
    "OUTPUT_CLASSES",
    "Price",
    "PriceTable",
    "PriceTableError",
    "RATE_KEYS",
    "TOKEN_CLASSES",
    "ToolScan",
    "Usage",
    "check_price_table",
    "cost_of",
    "describe_price_table",
    "find_service_tier",
    "merge_tool_calls",
    "request_tool_options",
    "find_json_str",
    "find_usage",
    "format_price_table",
    "implausible",
    "most_possible",
    "load_price_table",
    "loads_price_table",
    "price",
    "resolve_model",
    "to_nanos",
    "token_counts",
    "usage_for_endpoint",
    "usage_from_chat",
    "usage_from_embeddings",
    "usage_from_images",
    "usage_from_realtime",
    "usage_from_responses",
    "usage_from_speech",
    "usage_from_transcription",
]
