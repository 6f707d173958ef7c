"""What a finished REST call consumed, as one `Usage`.

The provider's own usage report is the source of truth. When it is missing
(stream cut short, a response format without usage), the usage is an
*estimate* from what faregate saw — flagged `estimated`, with the reason —
never silently zero. Calls the upstream refused (status ≥ 400) consumed
nothing.
"""

from __future__ import annotations

import dataclasses

from faregate.pricing import (
    DEFAULT_TIERS,
    PriceTable,
    Usage,
    merge_tool_calls,
    usage_for_endpoint,
    usage_from_images,
    usage_from_speech,
)

from ._endpoints import BILLABLE
from ._flow import Flow
from ._reading import Reading

#: Rough bytes per token for estimates when no usage was reported.
BYTES_PER_TOKEN = 4


def _reported(flow: Flow, table: PriceTable) -> tuple[Usage, str | None]:
    endpoint, facts, reading = flow.endpoint, flow.facts, flow.reading
    assert endpoint is not None
    if flow.status >= 400 or flow.status == 0:
        return Usage(), None
    kind = endpoint.kind
    if kind == "speech":
        return usage_from_speech(facts.characters, flow.model or "", table, reading.usage), None
    if kind in ("moderations", "client_secret", "realtime_call", "batch", BILLABLE):
        return Usage(), None
    if kind == "images":
        return (usage_from_images(reading.usage, facts.images, facts.image_size,
                                  facts.image_quality), None)
    if reading.usage is not None:
        return usage_for_endpoint(kind, reading.usage, table=table), None
    if flow.cut_short:
        return _cut_short(flow), "cut_short"
    return usage_estimate(flow), "usage_missing"


def usage_estimate(flow: Flow, reason: str = "usage_missing") -> Usage:
    """What faregate saw of a call: its prompt's size and the deltas it streamed."""
    return Usage(input=flow.facts.prompt_bytes // BYTES_PER_TOKEN, output=flow.reading.deltas,
                 estimated=True, flags=(reason,))


def _cut_short(flow: Flow) -> Usage:
    """A call cut short before its usage: the prompt as reserved (the worst case of its
    input) and at least the output the client was sent, flagged `estimated`."""
    reserved, reading = flow.reserved, flow.reading
    prompt = reserved.input if reserved is not None else 0
    prompt = max(prompt, flow.facts.prompt_bytes // BYTES_PER_TOKEN)
    return Usage(input=prompt, output=max(reading.deltas, reading.delivered), estimated=True,
                 flags=("cut_short",))


def with_tier_and_tools(usage: Usage, reading: Reading) -> Usage:
    """`usage` with the tier the upstream applied and the hosted-tool calls it made."""
    tier, tools = reading.service_tier, reading.tool_calls
    # A standard-tier answer ("default", "auto") prices as no tier: skip the copy.
    if (tier and tier not in DEFAULT_TIERS) or tools:
        usage = dataclasses.replace(usage, service_tier=tier,
                                    tool_calls=merge_tool_calls(usage.tool_calls, tools))
    return usage


def answer_usage(kind: str, reading: Reading, table: PriceTable) -> Usage:
    """What an answer of usage shape `kind` reported (nothing reported: no usage)."""
    usage = (usage_for_endpoint(kind, reading.usage, table=table) if reading.usage is not None
             else Usage())
    return with_tier_and_tools(usage, reading)


def call_usage(flow: Flow, table: PriceTable) -> tuple[Usage, str | None]:
    """The flow's usage (with the applied tier and hosted-tool calls) and, if it
    had to be guessed, the reason why. `table` is the table in force."""
    usage, problem = _reported(flow, table)
    return with_tier_and_tools(usage, flow.reading), problem
