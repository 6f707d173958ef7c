"""[upstream_limits]: the operator's account limits shared by all tenants, fairly."""

from __future__ import annotations

import openai
import pytest

from faregate.proxy.quota import UpstreamLimits

HELLO = [{"role": "user", "content": "one two three"}]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_noisy_tenant_cannot_starve_a_waiting_one():
    """rpm 60 (one per second). A takes the whole burst; once B waits, every
    refilled request goes to B while B has had less than A in the last minute."""
    clock = Clock()
    limits = UpstreamLimits(clock)
    assert all(limits.admit("a", 60, None, 0) is None for _ in range(60))
    refused = limits.admit("b", 60, None, 0)
    assert refused is not None and refused.code == "upstream_limit"
    assert refused.headers["retry-after"] == "1"
    order = []
    for _ in range(40):  # 40 s of contention, both asking every 0.25 s: 40 refills
        for _ in range(4):
            clock.t += 0.25
            for tenant in ("a", "b"):
                if limits.admit(tenant, 60, None, 0) is None:
                    order.append(tenant)
    assert order == ["b"] * 40  # every refill to the waiting tenant, which has had less
    clock.t += 61  # a minute later both start from nothing: even split
    got = {"a": 0, "b": 0}
    for _ in range(240):
        clock.t += 0.25
        for tenant in ("a", "b"):
            if limits.admit(tenant, 60, None, 0) is None:
                got[tenant] += 1
    assert abs(got["a"] - got["b"]) <= 2 and got["a"] + got["b"] >= 100


def test_alone_a_tenant_may_use_everything_and_tokens_come_back():
    clock = Clock()
    limits = UpstreamLimits(clock)
    assert limits.admit("a", None, 1000, 800) is None
    assert limits.admit("a", None, 1000, 300) is not None  # 800 + 300 > 1000
    limits.give_back("a", 700)  # the call used 100 of its 800 estimate
    assert limits.admit("a", None, 1000, 300) is None


def test_sessions_share_the_concurrency_limit():
    limits = UpstreamLimits(Clock())
    assert limits.admit_session("a", 4, {"a": 3}) is None
    refused = limits.admit_session("b", 4, {"a": 4})
    assert refused is not None and refused.code == "upstream_limit"
    assert limits.admit_session("a", 4, {"a": 3, "b": 0}) is not None  # b waits: a has > half
    assert limits.admit_session("b", 4, {"a": 3}) is None


async def test_through_faregate_with_two_tenants(make_gateway):
    gw = await make_gateway({"identity": {"allow_header_identity": True},
                             "upstream_limits": {"rpm": 4}})
    clock = Clock()
    gw.state.quota.upstream.clock = clock
    client = gw.client()

    async def call(tenant: str):
        return await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, extra_headers={"x-faregate-tenant": tenant})

    for _ in range(4):
        await call("noisy")
    with pytest.raises(openai.RateLimitError) as err:
        await call("quiet")
    assert err.value.code == "upstream_limit"
    assert err.value.response.headers["retry-after"] == "15"  # 4/min refills every 15 s
    clock.t += 15
    with pytest.raises(openai.RateLimitError):
        await call("noisy")  # over its share while quiet waits
    await call("quiet")  # the refilled request goes to the tenant that waited
    rows = await gw.ledger_rows(5)
    assert sorted(r.tenant for r in rows) == ["noisy"] * 4 + ["quiet"]
    text = (await gw.metrics_text())
    assert 'faregate_quota_rejections_total{reason="upstream_limit",tenant="quiet"} 1.0' in text
    assert 'faregate_quota_rejections_total{reason="upstream_limit",tenant="noisy"} 1.0' in text
