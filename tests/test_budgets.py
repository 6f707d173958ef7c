"""Budgets, caps, rate limits and alerts on the REST path, through the SDK.

The promise under test: no configured limit is exceeded by more than one
call's reservation, even under concurrency, and every refusal is the
DESIGN §5 answer the SDK reacts to correctly.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal

import openai
import pytest

from conftest import gateway_config, start_gateway
from faregate.proxy import parse_settings

HELLO = [{"role": "user", "content": "one two three"}]
M = Decimal(1_000_000)
MINI = {"input": "0.15", "output": "0.60"}
# Per call with the fake upstream: 10 prompt + 20 completion tokens.
PER_CALL = (10 * Decimal("0.15") + 20 * Decimal("0.60")) / M  # $0.0000135


def key(name: str) -> dict:
    return {"sha256": hashlib.sha256(name.encode()).hexdigest()}


# A call reserves its worst case: ~(body bytes / 2 + 16) prompt tokens and, with no
# max_tokens given, the tenant's default_max_output_tokens (20 here) -> under $0.00003.
RESERVATION_MAX = Decimal("0.00003")


def cfg(tenant: dict | None = None, keys: list | None = None, **extra) -> dict:
    data = {"pricing": {"models": {"gpt-4o-mini": MINI}},
            "keys": keys or [{**key("sk-acme"), "tenant": "acme"}],
            "tenants": {"acme": {"default_max_output_tokens": 20, **(tenant or {})}}}
    data.update(extra)
    return data


async def spend_until_refused(client, limit: int = 50):
    ok = 0
    for _ in range(limit):
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.RateLimitError as exc:
            return ok, exc
        ok += 1
    raise AssertionError("never refused")


async def test_daily_budget_blocks_with_no_retry(make_gateway, upstream):
    gw = await make_gateway(cfg({"daily_usd": str(PER_CALL * 3)}))
    client = gw.client("sk-acme", max_retries=3)
    ok, exc = await spend_until_refused(client)
    assert exc.status_code == 429
    assert exc.body["code"] == "budget_exceeded" and exc.body["type"] == "insufficient_quota"
    assert exc.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == ok  # the SDK did not retry the refusal
    rows = await gw.ledger_rows(ok)
    spent = Decimal(sum(r.cost_nanos for r in rows)).scaleb(-9)
    assert PER_CALL * 3 - RESERVATION_MAX < spent <= PER_CALL * 3  # refused only when needed
    text = await gw.metrics_text()
    assert 'faregate_quota_rejections_total{reason="budget",tenant="acme"} 1.0' in text
    assert 'faregate_budget_used_ratio{period="day",tenant="acme"}' in text


async def test_per_user_budget_stops_one_user_only(make_gateway):
    keys = [{**key("sk-alice"), "tenant": "acme", "user": "alice"},
            {**key("sk-bob"), "tenant": "acme", "user": "bob"}]
    gw = await make_gateway(cfg({"per_user_daily_usd": str(PER_CALL * 3)}, keys))
    ok, exc = await spend_until_refused(gw.client("sk-alice"))
    assert exc.body["code"] == "budget_exceeded" and "user acme/alice" in exc.body["message"]
    await gw.client("sk-bob").chat.completions.create(model="gpt-4o-mini", messages=HELLO)


async def test_request_count_cap(make_gateway):
    gw = await make_gateway(cfg({"max_requests_per_day": 3}))
    ok, exc = await spend_until_refused(gw.client("sk-acme"))
    assert ok == 3 and exc.body["code"] == "request_quota_exceeded"
    assert exc.response.headers["x-should-retry"] == "false"


async def test_tier_limits_and_tenant_overrides(make_gateway):
    data = cfg({"tier": "free", "max_requests_per_day": 2},
               tiers={"free": {"max_requests_per_day": 100, "models": ["gpt-4o-mini"]}})
    gw = await make_gateway(data)
    client = gw.client("sk-acme")
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.body["code"] == "model_not_allowed"
    # a dated snapshot of an allowed family is allowed
    await client.chat.completions.create(model="gpt-4o-mini-2024-07-18", messages=HELLO)
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as info:  # the tenant's 2 beats the tier's 100
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.body["code"] == "request_quota_exceeded"


async def test_allowlisted_config_family_admits_its_snapshots(make_gateway):
    """A family added in `[pricing.models]` and allowlisted admits its dated snapshots:
    the allowlist resolves names against the table in force, not the shipped one."""
    data = cfg({"tier": "x"}, tiers={"x": {"models": ["my-model"]}})
    data["pricing"]["models"]["my-model"] = MINI
    gw = await make_gateway(data)
    client = gw.client("sk-acme")
    await client.chat.completions.create(model="my-model-2025-01-01", messages=HELLO)
    [row] = await gw.ledger_rows(1)
    assert row.model == "my-model-2025-01-01" and row.priced
    assert Decimal(row.cost_nanos).scaleb(-9) == PER_CALL
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.body["code"] == "model_not_allowed"


async def test_rpm_refusal_carries_retry_after_and_the_sdk_honours_it(make_gateway, upstream):
    gw = await make_gateway(cfg({"rpm": 120}))
    client = gw.client("sk-acme", max_retries=0)
    ok, exc = await spend_until_refused(client, limit=200)  # a burst of 120, then 2/s
    assert 120 <= ok < 200
    headers = exc.response.headers
    assert exc.body["code"] == "rate_limit_exceeded"
    assert 0 < int(headers["retry-after-ms"]) <= 500 and headers["retry-after"] == "1"
    assert headers["x-ratelimit-limit-requests"] == "120"
    retrying = gw.client("sk-acme", max_retries=2)
    await retrying.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # waits, succeeds
    assert len(upstream.requests) == ok + 1


async def test_tpm_limit(make_gateway):
    gw = await make_gateway(cfg({"tpm": 200}))
    client = gw.client("sk-acme")
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=150)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=150)
    assert "tokens per minute" in info.value.body["message"]
    assert "x-ratelimit-limit-tokens" in info.value.response.headers


async def test_200_concurrent_callers_overshoot_at_most_one_reservation(make_gateway, upstream):
    limit = PER_CALL * 40
    gw = await make_gateway(cfg({"monthly_usd": str(limit)}))
    upstream.delay_s = 0.05  # all 200 are in flight together
    client = gw.client("sk-acme", max_retries=0)

    async def call():
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                 max_tokens=20)
            return True
        except openai.RateLimitError:
            return False

    results = await asyncio.gather(*(call() for _ in range(200)))
    ok = sum(results)
    rows = await gw.ledger_rows(ok)
    spent = Decimal(sum(r.cost_nanos for r in rows)).scaleb(-9)
    # One call's reservation: its body bytes / 2 + 16 prompt tokens and 20 output tokens.
    reservation = Decimal("0.00003")
    assert 0 < ok < 200
    assert spent <= limit + reservation
    assert spent <= limit  # with honest usage reports the cap holds exactly
    book = gw.state.quota.book
    assert all(c.reserved == 0 for _, c in book.items())  # every hold settled or released


async def test_spend_survives_restart(upstream, tmp_path):
    data = gateway_config(upstream.url, tmp_path, cfg({"daily_usd": str(PER_CALL * 6)}))
    gw = await start_gateway(parse_settings(data))
    for _ in range(3):
        await gw.client("sk-acme").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(3)
    await gw.stop()

    gw = await start_gateway(parse_settings(data))
    try:
        ok, exc = await spend_until_refused(gw.client("sk-acme"))
        assert ok == 2  # three of six were spent before the restart; the sixth won't fit
        assert exc.body["code"] == "budget_exceeded"
    finally:
        await gw.stop()


async def test_alert_only_never_blocks_but_alerts(make_gateway):
    gw = await make_gateway(cfg({"daily_usd": str(PER_CALL), "on_exceed": "alert_only"}))
    for _ in range(3):
        await gw.client("sk-acme").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(3)
    alerts = await gw.state.ledger.alerts()
    assert sorted(a.threshold for a in alerts) == ["0.8", "0.95", "1"]


async def test_alerts_fire_once_per_threshold_across_restart(upstream, tmp_path, webhook):
    url, received = webhook
    data = gateway_config(upstream.url, tmp_path, cfg(
        {"daily_usd": str(PER_CALL * 10)}, alerts={"thresholds": [0.2, 0.5], "webhook_url": url}))
    gw = await start_gateway(parse_settings(data))
    client = gw.client("sk-acme")
    for _ in range(3):  # 30 %: crosses 0.2
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(3)
    for _ in range(50):
        if received:
            break
        await asyncio.sleep(0.05)
    await gw.stop()

    gw = await start_gateway(parse_settings(data))
    try:
        for _ in range(3):  # 60 %: crosses 0.5, and 0.2 must not repeat
            await gw.client("sk-acme").chat.completions.create(model="gpt-4o-mini",
                                                               messages=HELLO)
        await gw.ledger_rows(6)
        for _ in range(50):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await gw.stop()
    thresholds = [r["faregate"]["threshold"] for r in received]
    assert thresholds == ["0.2", "0.5"]
    first = received[0]["faregate"]
    assert first["scope"] == "tenant:acme" and first["period"] == "day"
    assert "gpt-4o-mini" in str(first["top_models"]) and "acme" in received[0]["text"]


async def test_reload_keeps_counters_and_admin_reload_is_guarded(upstream, tmp_path, monkeypatch):
    path = tmp_path / "faregate.toml"

    def write(limit: Decimal) -> None:
        path.write_text(
            f'[server]\nupstream = "{upstream.url}"\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "r.db"}"\nflush_interval_ms = 20\n'
            f'journal_dir = "{tmp_path / "j"}"\n'
            f'[[keys]]\nsha256 = "{key("sk-acme")["sha256"]}"\ntenant = "acme"\n'
            f'[tenants.acme]\ndaily_usd = "{limit}"\ndefault_max_output_tokens = 20\n'
            f'[pricing.models."gpt-4o-mini"]\ninput = "0.15"\noutput = "0.60"\n')

    from faregate.proxy import load_settings

    write(PER_CALL * 3)
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", "admin-secret")
    gw = await start_gateway(load_settings(path), path)
    try:
        client = gw.client("sk-acme")
        ok, _ = await spend_until_refused(client)
        assert ok == 2
        write(PER_CALL * 4)
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.post(gw.url + "/admin/reload") as r:
                assert r.status == 401
            async with s.post(gw.url + "/admin/reload",
                              headers={"Authorization": "Bearer admin-secret"}) as r:
                assert r.status == 200 and (await r.json())["applied"]
        ok, _ = await spend_until_refused(client)
        assert ok == 1  # the new limit, the old spend
    finally:
        await gw.stop()


def test_counters_of_past_periods_are_forgotten():
    """Per-user counters are keyed by end-user names: they must not pile up forever."""
    from datetime import datetime, timedelta, timezone

    from faregate.proxy import Metrics, Runtime
    from faregate.proxy.caller import Caller
    from faregate.proxy.quota import Ask, Quota

    runtime = Runtime.build(parse_settings(cfg({"per_user_daily_usd": "1"})))
    quota = Quota(Metrics(), lambda policy, budgets, now: None)
    day1 = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    for i in range(500):
        policy = runtime.policy(Caller("acme", f"user{i}", None, None, None))
        admission = quota.admit(policy, Ask(10), day1)
        quota.settle(admission, 5, day1)
    assert len(list(quota.book.items())) >= 500
    policy = runtime.policy(Caller("acme", "someone", None, None, None))
    quota.admit(policy, Ask(10), day1 + timedelta(days=1))
    keys = [k for k, _ in quota.book.items()]
    assert all(k[2] in ("2026-11-24", "2026-11") for k in keys)
    assert len(keys) < 10
