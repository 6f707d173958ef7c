"""Traffic faregate cannot see, made visible: ephemeral keys it mints and WebRTC/SIP
calls it creates are recorded with their creator and reserved; a sideband (or a
session on the key) through faregate is metered as usual; what stays unseen is
attributed from the provider's bill by serve's daily job — with the official SDK,
the fake Realtime upstream and the fake Admin API.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import openai
import pytest

from conftest import gateway_config, start_gateway
from fake_admin import Cost, admin  # noqa: F401 (admin: a fixture)
from fake_sessions import FakeSessions
from faregate.proxy import parse_settings

M = Decimal(1_000_000)
RT_PRICES = {"input": "4", "cached_input": "0.4", "output": "16", "audio_input": "32",
             "cached_audio_input": "0.4", "audio_output": "64"}
# A 300 s session at 10 audio input tokens/s x $32/M + 20 output tokens/s x $64/M:
RESERVED_300S = 300 * (10 * Decimal(32) + 20 * Decimal(64)) / M  # $0.48
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"
ACME, GLOBEX = "sk-acme-backend", "sk-globex-backend"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
async def fake():
    async with FakeSessions() as f:
        yield f


@pytest.fixture
async def gateway(fake, admin, webhook, tmp_path):
    started = []

    async def make(tenants: dict | None = None, provider: dict | None = None):
        config = gateway_config(fake.url, tmp_path, {
            "keys": [{"sha256": sha(ACME), "tenant": "acme"},
                     {"sha256": sha(GLOBEX), "tenant": "globex"}],
            "tenants": tenants or {
                "acme": {"openai_project": "proj_acme", "monthly_usd": 10,
                         "max_session_seconds": 300, "client_secrets": "allow"},
                "globex": {"openai_project": "proj_globex", "monthly_usd": 5},
            },
            "pricing": {"models": {"gpt-realtime": RT_PRICES}},
            "provider": {"admin_url": admin.url, "reconcile_daily": True,
                         "final_after_hours": 0, **(provider or {})},
            "alerts": {"webhook_url": webhook[0]},
        }, db=f"unseen-{len(started)}.db")
        gw = await start_gateway(parse_settings(config))
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


def reserved(gw, tenant: str = "acme") -> Decimal:
    counter = gw.state.quota.book.peek(f"tenant:{tenant}", "month", datetime.now(timezone.utc))
    return Decimal(counter.reserved if counter else 0).scaleb(-9)


def spent(gw, tenant: str = "acme") -> Decimal:
    counter = gw.state.quota.book.peek(f"tenant:{tenant}", "month", datetime.now(timezone.utc))
    return Decimal(counter.spent if counter else 0).scaleb(-9)


async def sessions(gw, endpoint: str | None = None, n: int = 1) -> list:
    for _ in range(250):
        await gw.state.ledger.flush()
        rows = [s for s in await gw.state.ledger.sessions(limit=1000)
                if endpoint is None or s.endpoint.startswith(endpoint)]
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.02)
    return rows


def ws(gw, query: str = "model=gpt-realtime") -> str:
    return gw.url.replace("http://", "ws://") + "/v1/realtime?" + query


async def text_turn(conn) -> None:
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
    await conn.response.create()
    async for event in conn:
        if event.type == "response.done":
            return


# -- minting as a policy ---------------------------------------------------------------


async def test_minting_is_refused_to_a_tenant_with_a_usd_limit_unless_allowed(gateway, fake):
    gw = await gateway()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await gw.client(GLOBEX).realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime"})
    assert refused.value.code == "client_secrets_not_allowed"
    assert fake.minted == []  # never reached the upstream
    free = await gw.client("sk-anyone").realtime.client_secrets.create(  # no limits: allowed
        session={"type": "realtime", "model": "gpt-realtime"})
    assert free.value.startswith("ek_")


async def test_a_mint_reserves_its_session_until_a_session_uses_the_key(gateway, fake):
    gw = await gateway({"acme": {"openai_project": "proj_acme", "monthly_usd": 10,
                                 "max_session_seconds": 300, "client_secrets": "allow",
                                 "client_secret_ttl_s": 60}})
    secret = await gw.client(ACME).realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"},
        expires_after={"anchor": "created_at", "seconds": 3600})
    assert fake.mint_bodies[-1]["expires_after"] == {"anchor": "created_at", "seconds": 60}
    assert reserved(gw) == RESERVED_300S == Decimal("0.48")
    [minted] = await sessions(gw, "/v1/realtime/client_secrets")
    assert (minted.tenant, minted.model, minted.end_reason) == ("acme", "gpt-realtime",
                                                                "delegated")
    assert secret.value not in repr(minted)

    async with gw.client(secret.value).realtime.connect(model="gpt-realtime") as conn:
        await text_turn(conn)
    assert fake.sessions[-1].key == secret.value
    [session] = [s for s in await sessions(gw, "/v1/realtime", n=2)
                 if s.endpoint == "/v1/realtime"]
    assert session.tenant == "acme" and session.cost_nanos > 0
    assert reserved(gw) == 0  # the key's session was metered: nothing is held any more
    seen = await gw.state.ledger.delegated_sessions(minted.started_at - timedelta(seconds=1),
                                                    datetime.now(timezone.utc))
    assert [(s.kind, s.session_id, s.seen_ms is not None) for s in seen] == [
        ("secret", minted.id, True)]


async def test_a_webrtc_call_is_recorded_held_and_released_by_its_sideband(gateway, fake):
    gw = await gateway()
    secret = await gw.client(ACME).realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"})
    browser = gw.client(secret.value)  # what a browser does with the minted key
    raw = await browser.realtime.calls.with_raw_response.create(sdp=SDP)
    assert raw.status_code == 201 and raw.text.startswith("v=0")
    call_id = raw.headers["location"].rsplit("/", 1)[-1]
    assert fake.calls[-1][:2] == (call_id, secret.value)
    assert reserved(gw) == RESERVED_300S  # the key's reservation moved to the call
    [call] = await sessions(gw, "/v1/realtime/calls")
    assert (call.tenant, call.upstream_session_id, call.model) == ("acme", call_id,
                                                                   "gpt-realtime")

    async with gw.client(ACME).realtime.connect(
            model="gpt-realtime", extra_query={"call_id": call_id}) as conn:
        await text_turn(conn)
    assert fake.sessions[-1].query.get("call_id") == call_id
    assert reserved(gw) == 0
    await gw.state.ledger.flush()
    rows = await gw.state.ledger.delegated_sessions(call.started_at - timedelta(minutes=5),
                                                    datetime.now(timezone.utc))
    assert {(s.kind, s.seen_ms is not None) for s in rows} == {("secret", True), ("call", True)}


async def test_a_call_with_the_server_key_and_a_sip_accept_are_reserved(gateway, fake):
    gw = await gateway()
    acme = gw.client(ACME)
    raw = await acme.realtime.calls.with_raw_response.create(
        sdp=SDP, session={"type": "realtime", "model": "gpt-realtime"})
    assert raw.status_code == 201
    assert reserved(gw) == RESERVED_300S
    await acme.realtime.calls.accept("rtc_sip_1", type="realtime", model="gpt-realtime")
    assert fake.accepted == ["rtc_sip_1"]
    assert reserved(gw) == 2 * RESERVED_300S
    calls = await sessions(gw, "/v1/realtime/calls", n=2)
    assert {(c.endpoint, c.upstream_session_id) for c in calls} == {
        ("/v1/realtime/calls", fake.calls[-1][0]), ("/v1/realtime/calls/accept", "rtc_sip_1")}
    # The budget is $10: a tenant cannot open unmetered sessions past it.
    for _ in range(18):
        await acme.realtime.calls.accept(f"rtc_sip_x{_}", type="realtime", model="gpt-realtime")
    with pytest.raises(openai.RateLimitError) as refused:
        await acme.realtime.calls.accept("rtc_sip_over", type="realtime", model="gpt-realtime")
    assert refused.value.code == "budget_exceeded"
    assert reserved(gw) == 20 * RESERVED_300S == Decimal("9.6")


# -- the daily job: attribution, stored results, metric, alert, limits ---------------------


async def test_the_daily_job_attributes_unseen_realtime_cost_and_alerts_once(
        gateway, fake, admin, webhook):
    gw = await gateway()
    acme = gw.client(ACME)
    seen_call = (await acme.realtime.calls.with_raw_response.create(
        sdp=SDP, session={"type": "realtime", "model": "gpt-realtime"})).headers["location"]
    await acme.realtime.calls.with_raw_response.create(
        sdp=SDP, session={"type": "realtime", "model": "gpt-realtime"})  # never attached
    async with acme.realtime.connect(model="gpt-realtime", extra_query={
            "call_id": seen_call.rsplit("/", 1)[-1]}) as conn:
        await text_turn(conn)
    calls = await sessions(gw, "/v1/realtime/calls", n=2)
    metered = sum(r.cost_nanos for r in await gw.ledger_rows(1) if r.endpoint == "/v1/realtime")
    assert metered > 0
    today = datetime.now(timezone.utc).date()
    admin.costs = [
        # The provider billed the metered sideband turn plus $0.25 of media never seen.
        Cost(today, Decimal(metered).scaleb(-9) + Decimal("0.25"), "proj_acme",
             "gpt-realtime-2025-08-28, audio input"),
        Cost(today, Decimal("1.00"), "proj_globex", "gpt-4o-mini-2024-07-18, input"),
    ]
    before = spent(gw)
    later = datetime.now(timezone.utc) + timedelta(days=1, hours=1)  # today is final then
    done = await gw.state.provider.run_once(now=later)
    assert done["attributed"] == 1 and done["alerts"] == 1

    rows = await gw.ledger_rows(4)
    [attributed] = [r for r in rows if "from_provider" in r.flags]
    unseen = next(c for c in calls if c.upstream_session_id != seen_call.rsplit("/", 1)[-1])
    assert (attributed.tenant, attributed.cost_nanos, attributed.session_id) == (
        "acme", 250_000_000, unseen.id)
    assert attributed.endpoint == "/v1/realtime/calls" and attributed.model == "gpt-realtime"
    assert attributed.ts.date() == today
    assert spent(gw) - before == Decimal("0.25")  # counted against acme's budget from now on

    stored = {r.group: r for r in await gw.state.ledger.reconciliations("project", today, today)}
    assert stored["proj_acme"].drift_nanos == 0 and stored["proj_acme"].within
    assert "from_provider: $0.250000" in stored["proj_acme"].notes
    assert "unseen_sessions: 1" in stored["proj_acme"].notes
    assert not stored["proj_globex"].within
    text = await gw.metrics_text()
    assert 'faregate_reconcile_drift_usd{group="proj_acme"} 0.0' in text
    assert 'faregate_reconcile_drift_usd{group="proj_globex"} 1.0' in text

    for _ in range(250):
        if webhook[1]:
            break
        await asyncio.sleep(0.02)
    [alert] = webhook[1]
    assert alert["faregate"]["kind"] == "reconcile" and alert["faregate"]["group"] == "proj_globex"
    assert (alert["faregate"]["drift_usd"], alert["faregate"]["drift_ratio"]) == (
        "1.000000", "1.000000")
    assert "proj_globex" in alert["text"] and "drift $1.00 " in alert["text"]  # for people

    again = await gw.state.provider.run_once(now=later)  # nothing twice
    assert again["attributed"] == 0 and again["alerts"] == 0
    assert spent(gw) - before == Decimal("0.25")
    assert len([r for r in await gw.ledger_rows(4) if "from_provider" in r.flags]) == 1
    await asyncio.sleep(0.1)
    assert len(webhook[1]) == 1


async def test_the_daily_job_syncs_limits_when_asked(gateway, admin):
    gw = await gateway(provider={"reconcile_daily": False, "sync_limits": True})
    done = await gw.state.provider.run_once()
    assert done["limits"] == 2
    assert sorted(admin.limit_updates) == [("proj_acme", 1100), ("proj_globex", 550)]
    await gw.state.ledger.flush()
    assert {c.project for c in await gw.state.ledger.limit_changes()} == {
        "proj_acme", "proj_globex"}
    assert (await gw.state.provider.run_once())["limits"] == 0


async def test_unseen_holds_expire_move_and_stay_bounded():
    from faregate.proxy._metrics import Metrics
    from faregate.proxy.quota import Ask, BudgetLimit, Policy, Quota, UnseenHolds

    quota = Quota(Metrics(), lambda *a: None)
    policy = Policy("acme", None, True, (BudgetLimit("tenant:acme", "month", 10**9),))
    now = datetime.now(timezone.utc)
    counter = quota.book.counter("tenant:acme", "month", now)
    holds = UnseenHolds(quota, capacity=2)
    for ref in ("a", "b", "c"):
        holds.keep(ref, quota.admit(policy, Ask(100), now), 3600)
    assert len(holds) == 2 and "a" not in holds  # the oldest went first
    assert counter.reserved == 200
    moved = holds.take("b")
    holds.keep("b2", moved, 0)  # its time is up at once
    assert counter.reserved == 200
    for _ in range(3):
        await asyncio.sleep(0)
    assert "b2" not in holds and counter.reserved == 100
    assert holds.release("c") and not holds.release("c") and counter.reserved == 0
