"""Reservations and worst cases, sans-IO: tables of request bodies, no server.

The estimate (meter), what earlier responses carried (`Contexts`), learned
ratios, and the quota's one-at-a-time lanes, each with the shapes a tenant
can send.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from faregate.pricing import load_price_table
from faregate.proxy import Metrics, Runtime, parse_settings
from faregate.proxy.caller import Caller
from faregate.proxy.meter import (
    Contexts,
    RequestFacts,
    affordable_output,
    classify,
    cost_nanos,
    estimate,
    image_tokens,
    input_shape,
    with_output,
)
from faregate.proxy.quota import Admission, Ask, InputRatios, Quota, Refusal

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
TABLE = load_price_table()
CHAT = classify("POST", "/v1/chat/completions")
RESPONSES = classify("POST", "/v1/responses")


@pytest.mark.parametrize("family, detail, tokens", [
    ("gpt-4o", "low", 85), ("gpt-4o", "high", 85 + 8 * 170), ("gpt-4o", None, 1445),
    ("gpt-4o-mini", "low", 2833), ("gpt-4o-mini", "auto", 2833 + 8 * 5667),
    ("gpt-4.1-mini", "low", 2489), ("gpt-4.1-nano", "high", 3779),  # patches: no low
    ("o3", "high", 75 + 8 * 150), ("gpt-5", "original", 4 * (70 + 8 * 140)),
    ("some-new-model", "low", 6000), (None, None, 6000),
])
def test_image_token_bounds(family, detail, tokens):
    assert image_tokens(family, detail) == tokens


@pytest.mark.parametrize("kind, body, images, unsized, prev, conv", [
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, [], 0, None, None),
    ("chat", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "file", "file": {"file_id": "file-1"}}]}]}, ["low", None], 1, None, None),
    ("responses", {"input": "hi", "previous_response_id": "resp_1"}, [], 0, "resp_1", None),
    ("responses", {"input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-2", "detail": "high"},
        {"type": "input_file", "file_url": "https://x/a.pdf"}]},
        {"type": "item_reference", "id": "msg_1"}],
      "conversation": {"id": "conv_7"}, "prompt": {"id": "pmpt_1"}},
     ["high"], 3, None, "conv_7"),
    ("responses", {"input": [{"role": "user", "content": "not a list"}], "conversation": 7},
     [], 0, None, None),
    ("chat", "not a dict", [], 0, None, None),
])
def test_input_shapes(kind, body, images, unsized, prev, conv):
    shape = input_shape(kind, body)
    assert (shape.images, shape.unsized, shape.previous_response_id, shape.conversation) == (
        images, unsized, prev, conv)


def test_too_many_parts_count_as_unsized():
    parts = [{"type": "text", "text": "x"}] * 5000
    assert input_shape("chat", {"messages": [{"role": "user", "content": parts}]}).unsized == 1


def facts(model: str, size: int = 100) -> RequestFacts:
    return RequestFacts(model=model, prompt_bytes=size)


def test_output_is_the_calls_cap_else_the_models_longest_answer():
    capped = estimate(CHAT, facts("gpt-4o-mini"), {"max_tokens": 30}, table=TABLE, at=NOW)
    assert capped.usage.output == 30 and capped.worst.output == 30
    assert capped.cap_field == "max_tokens"
    free = estimate(CHAT, facts("o3"), {}, table=TABLE, at=NOW)
    assert free.usage.output == 100_000 and free.cap_field is None  # o3's max_output_tokens
    policy_default = estimate(CHAT, facts("o3"), {}, table=TABLE, at=NOW, default_output=500)
    assert policy_default.usage.output == 500 and policy_default.worst.output == 100_000
    over = estimate(RESPONSES, facts("gpt-4o"), {"max_output_tokens": 10**6}, table=TABLE,
                    at=NOW)
    assert over.usage.output == 16_384  # no call answers beyond the model's longest
    n = estimate(CHAT, facts("gpt-4o-mini"), {"max_tokens": 10, "n": 3}, table=TABLE, at=NOW)
    assert n.usage.output == 30 and n.choices == 3


def test_the_worst_case_fills_the_context_window():
    est = estimate(CHAT, facts("gpt-4o-mini"), {"max_tokens": 100}, table=TABLE, at=NOW)
    assert est.worst.input == 128_000 - 100
    assert cost_nanos(est.worst, "gpt-4o-mini", TABLE, NOW) > 100 * cost_nanos(
        est.usage, "gpt-4o-mini", TABLE, NOW)
    unknown = estimate(CHAT, facts("gpt-4o-mini"), {"max_tokens": 100}, table=TABLE, at=NOW,
                       shape=input_shape("chat", {}))
    assert unknown.worst == est.worst


def test_hidden_input_is_recorded_tokens_and_unsized_parts_are_learned():
    shape = input_shape("responses", {"input": "hi", "previous_response_id": "resp_1"})
    known = estimate(RESPONSES, facts("gpt-4o-mini"), {"max_output_tokens": 5}, table=TABLE,
                     at=NOW, shape=shape, hidden_tokens=9000, factor=3.0)
    assert known.usage.input == 66 * 3 + 9000  # the ratio scales only what was estimated
    assert (known.raw_input, known.recorded, known.unsized) == (66, 9000, False)
    lost = estimate(RESPONSES, facts("gpt-4o-mini"), {"max_output_tokens": 5}, table=TABLE,
                    at=NOW, shape=shape, hidden_known=False)
    assert lost.usage.input > 8192 and lost.unsized
    image = input_shape("chat", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 40_000,
                                            "detail": "low"}}]}]})
    est = estimate(CHAT, facts("gpt-4o", 40_100), {"max_tokens": 5}, table=TABLE, at=NOW,
                   shape=image)
    assert est.usage.image_input == 85 and est.usage.input < 100  # not 20,000 "text" tokens


def test_clamping_an_estimate_to_what_a_budget_buys():
    est = estimate(RESPONSES, facts("o4-mini"), {}, table=TABLE, at=NOW)
    room = 10_000_000  # $0.01
    tokens = affordable_output(est, room, "o4-mini", TABLE, NOW)
    capped = with_output(est, tokens)
    assert capped.usage.output == tokens == capped.worst.output
    assert cost_nanos(capped.usage, "o4-mini", TABLE, NOW) <= room
    assert cost_nanos(with_output(est, tokens + 5).usage, "o4-mini", TABLE, NOW) > room
    assert capped.tpm_tokens == est.tpm_tokens - 100_000 + tokens


def test_learned_ratios_rise_at_once_and_ease_down():
    ratios = InputRatios()
    key, unsized = ("acme", "gpt-4o", False), ("acme", "gpt-4o", True)
    assert ratios.factor(key) == 1.0 and ratios.factor(unsized) == 4.0  # conservative start
    ratios.observe(key, 50, 1000)
    assert ratios.factor(key) == 20.0
    ratios.observe(key, 50, 50)
    assert 1.0 < ratios.factor(key) < 20.0
    ratios.observe(key, 1, 10**9)
    assert ratios.factor(key) == 64.0  # never beyond MAX_RATIO
    ratios.observe(unsized, 100, 10)
    assert ratios.factor(unsized) == 1.0  # never below 1: the visible part errs high


async def test_contexts_remember_and_ask_the_ledger_once_per_miss():
    asked = []

    async def lookup(tenant, response_id=None, conversation_id=None):
        asked.append((tenant, response_id, conversation_id))
        return {"resp_old": 700}.get(response_id)

    contexts = Contexts(lookup)
    contexts.note("acme", 1200, response_id="resp_1", conversation_id="conv_1")
    assert await contexts.recall("acme", "resp_1", None) == (1200, True)
    assert await contexts.recall("acme", None, "conv_1") == (1200, True)
    assert await contexts.recall("globex", "resp_1", None) == (0, False) and asked
    assert await contexts.recall("acme", "resp_old", None) == (700, True)  # from the ledger
    asked.clear()
    assert await contexts.recall("acme", "resp_old", None) == (700, True)
    assert await contexts.recall("acme", "resp_gone", None) == (0, False)
    assert await contexts.recall("acme", "resp_gone", None) == (0, False)
    assert asked == [("acme", "resp_gone", None)]  # a miss is not asked again at once

    async def slow(tenant, **_):
        await asyncio.sleep(5)

    assert await Contexts(slow).recall("acme", "resp_x", None) == (0, False)  # bounded


def quota_and_policy(limit: str = "1") -> tuple[Quota, object]:
    runtime = Runtime.build(parse_settings({"tenants": {"acme": {"daily_usd": limit}}}))
    return (Quota(Metrics(), lambda *_: None),
            runtime.policy(Caller("acme", None, None, None, None)))


def test_side_by_side_while_worst_cases_fit_then_one_at_a_time():
    quota, policy = quota_and_policy("1")  # 1e9 nano-USD
    side = [quota.admit(policy, Ask(1000, 300_000_000), NOW) for _ in range(3)]
    assert all(isinstance(a, Admission) and not a.hold.lane for a in side)
    lane = quota.admit(policy, Ask(1000, 300_000_000), NOW)  # 4 x 0.3 > 1: one at a time
    assert isinstance(lane, Admission) and lane.hold.lane
    queued = quota.admit(policy, Ask(1000, 300_000_000), NOW)
    assert type(queued).__name__ == "Queued"  # the lane is taken: wait for it
    bounded = quota.admit(policy, Ask(1000), NOW)  # a reservation that is its own bound
    assert isinstance(bounded, Admission) and not bounded.hold.lane
    quota.settle(lane, 2000, NOW)
    again = quota.admit(policy, Ask(1000, 300_000_000), NOW)
    assert isinstance(again, Admission) and again.hold.lane
    too_big = quota.admit(policy, Ask(2 * 10**9), NOW)
    assert isinstance(too_big, Refusal) and too_big.code == "budget_exceeded"


async def test_a_waiting_call_is_admitted_when_the_lane_frees_or_refused_in_time():
    quota, policy = quota_and_policy("1")
    first = await quota.reserve(policy, Ask(900_000_000, 10**10), NOW, 1.0)
    assert isinstance(first, Admission) and first.hold.lane
    waiting = asyncio.ensure_future(quota.reserve(policy, Ask(50_000_000, 10**10), NOW, 2.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    quota.settle(first, 100_000_000, NOW)  # settles far lower: room for the next
    second = await waiting
    assert isinstance(second, Admission) and second.hold.lane
    late = await quota.reserve(policy, Ask(1000, 10**10), NOW, 0.05)
    assert isinstance(late, Refusal) and late.code == "rate_limit_exceeded"
    assert late.headers["retry-after"] == "1"


def test_a_response_the_upstream_started_is_held_even_when_the_lane_is_taken():
    quota, policy = quota_and_policy("1")
    quota.admit(policy, Ask(900_000_000, 10**10), NOW)
    forced = quota.admit(policy, Ask(200_000_000, 10**10, count_request=False, force=True),
                         NOW)
    assert isinstance(forced, Admission)  # it happens anyway: held, never queued
    refused = quota.admit(policy, Ask(2 * 10**9, force=True, count_request=False), NOW)
    assert isinstance(refused, Refusal)  # not even with nothing in flight: cut
