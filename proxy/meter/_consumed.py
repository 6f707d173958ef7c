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
    Usage,
    merge_tool_calls,
    usage_for_endpoint,
    usage_from_images,
    usage_from_speech,
)

from ._flow import Flow

#: Rough bytes per token for estimates when no usage was reported.
BYTES_PER_TOKEN = 4


def _reported(flow: Flow) -> tuple[Usage, str | None]:
    endpoint, facts, reading = flow.endpoint, flow.facts, flow.reading
    assert endpoint is not None
    if flow.status >= 400 or flow.status == 0:
        return Usage(), None
    kind = endpoint.kind
    if kind == "speech":
        return usage_from_speech(facts.characters, flow.model or ""), None
    if kind in ("moderations", "client_secret"):
        return Usage(), None
    if kind == "images":
        return (usage_from_images(reading.usage, facts.images, facts.image_size,
                                  facts.image_quality), None)
    if reading.usage is not None:
        return usage_for_endpoint(kind, reading.usage), None
    reason = "cut_short" if flow.cut_short else "usage_missing"
    return usage_estimate(flow, reason), reason


def usage_estimate(flow: Flow, reason: str = "usage_missing") -> Usage:
    """What faregate saw of a call: its prompt's size and the deltas it streamed."""
    return Usage(input=flow.facts.prompt_bytes // BYTES_PER_TOKEN, output=flow.reading.deltas,
                 estimated=True, flags=(reason,))


def call_usage(flow: Flow) -> tuple[Usage, str | None]:
    """The flow's usage (with the applied tier and hosted-tool calls) and, if it
    had to be guessed, the reason why."""
    usage, problem = _reported(flow)
    tier, tools = flow.reading.service_tier, flow.reading.tool_calls
    # A standard-tier answer ("default", "auto") prices as no tier: skip the copy.
    if (tier and tier not in DEFAULT_TIERS) or tools:
        usage = dataclasses.replace(usage, service_tier=tier,
                                    tool_calls=merge_tool_calls(usage.tool_calls, tools))
    return usage, problem
