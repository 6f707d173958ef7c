"""faregate.pricing: usage in, exact charge out. Pure; no I/O at call time.

- `Usage` / `TOKEN_CLASSES`: what a call consumed, in disjoint token classes;
  `INPUT_CLASSES`, `OUTPUT_CLASSES`, `CACHED_CLASSES` group them (the one
  definition the ledger, reports and reservations use too).
- `usage_for_endpoint` and `usage_from_*`: provider usage reports -> `Usage`.
- `find_usage` / `find_json_str`: read `usage` / `model` from a response body
  without parsing all of it.
- `PriceTable` / `Price` / `load_price_table`: the shipped, versioned rates
  (`prices.toml`); `PriceTable.with_overrides` adds the config's;
  `resolve_model` maps snapshots to their family.
- `price(usage, model, at, table)` -> `Charge`, with a per-class breakdown;
  `cost_of` is its amount alone, for reservations.
- `ToolScan` / `find_service_tier` / `request_tool_options`: the hosted-tool
  calls and the applied service tier, read from response bytes.
- `implausible(usage, price, kind)`: why a usage cannot be what one call used
  (beyond the model's `context_window` / `max_output_tokens`, or flagged).
- `check_price_table` / `unconfirmed_periods`: whole-table checks for
  `faregate prices --check`.
- `format_price_table` / `table_heading`: the table as text, for `faregate prices`.
- `compare_prices`: differences with a LiteLLM-format community table
  (`faregate prices --compare`).
- `loads_price_table(text, base=…)`: an operator's price file over the shipped table.

Whatever needs rates takes the table in force as an argument, with no
default: the shipped table alone lacks the operator's models and overrides,
so falling back to it would misprice (or refuse) their calls.
"""

from ._bounds import implausible, most_possible
from ._charge import Charge, to_nanos
from ._check import check_price_table, unconfirmed_periods
from ._check import describe as describe_price_table
from ._compare import Comparison, Difference
from ._compare import compare as compare_prices
from ._find import find_json_str, find_usage
from ._counts import IMPLAUSIBLE
from ._format import format_price_table, override_snippet, table_heading
from ._load import load_price_table, loads_price_table
from ._media_usage import usage_from_images, usage_from_speech, usage_from_transcription
from ._normalise import usage_for_endpoint
from ._period import DEFAULT_TIERS, RATE_KEYS, UNCONFIRMED, Price
from ._price import UNCONFIRMED_PRICE, cost_of, price, rate_for
from ._read import PriceTableError
from ._realtime_usage import usage_from_realtime
from ._table import PriceTable, resolve_model
from ._text_usage import usage_from_chat, usage_from_embeddings, usage_from_responses
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
    "IMPLAUSIBLE",
    "CACHED_CLASSES",
    "IMPLAUSIBLE",
    "Charge",
    "Comparison",
    "Difference",
    "UNCONFIRMED",
    "UNCONFIRMED_PRICE",
    "compare_prices",
    "table_heading",
    "override_snippet",
    "unconfirmed_periods",
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
    "rate_for",
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
