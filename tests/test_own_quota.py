"""Apps see their own budget: answer headers and `GET /v1/faregate/quota`, through the SDK.

A tenant with a daily budget reads what is left from the `x-faregate-budget-*`
headers of a chat answer and from `client.get("/faregate/quota")`, equal to
limit − spent − reserved to the nano-dollar (spent is the ledger's sum, reserved
the call the fake upstream is holding), sees `allowed: false` once spent, and
never sees another tenant's numbers. The endpoint is faregate's own: no
spelling of its path reaches the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from decimal import Decimal

import openai
import orjson
import pytest

from faregate.proxy.quota import period_end
from faregate.storage import format_usd

HELLO = [{"role": "user", "content": "one two three"}]
MINI = {"input": "0.15", "output": "0.60"}
LIMIT = Decimal("0.0002")  # ~15 calls of $0.0000135
NANO = Decimal("1e-9")


def key(name: str) -> dict:
    return {"sha256": hashlib.sha256(name.encode()).hexdigest()}


def config(**tenants) -> dict:
    return {
        "identity": {"mode": "keys"},
        "pricing": {"models": {"gpt-4o-mini": MINI}},
        "keys": [{**key("sk-acme"), "tenant": "acme"},
                 {**key("sk-alice"), "tenant": "acme", "user": "alice"},
                 {**key("sk-bob"), "tenant": "acme", "user": "bob"},
                 {**key("sk-globex"), "tenant": "globex"},
                 {**key("sk-initech"), "tenant": "initech"}],
        "tenants": {
            "acme": {"daily_usd": str(LIMIT), "default_max_output_tokens": 20,
                     "models": ["gpt-4o-mini"], **tenants.get("acme", {})},
            "globex": {"monthly_usd": "5", "rpm": 6, **tenants.get("globex", {})},
            "initech": {"rpm": 1000, **tenants.get("initech", {})},
        },
    }


@pytest.fixture
async def gw(make_gateway, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")

    async def make(**tenants):
        return await make_gateway(config(**tenants))
    return make


async def quota(client, **query) -> dict:
    return await client.get("/faregate/quota", cast_to=object,
                            options={"params": query} if query else {})


def usd(limits: list[dict], scope: str, period: str) -> dict:
    [found] = [x for x in limits if x["kind"] == "usd" and x["scope"] == scope
               and x["period"] == period]
    return found


async def ledger_spend(gateway, n: int) -> Decimal:
    rows = await gateway.ledger_rows(n)
    assert len(rows) == n
    return Decimal(sum(r.cost_nanos for r in rows)).scaleb(-9)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_headers_and_quota_endpoint_show_limit_minus_spent_minus_reserved(gw, upstream):
    gateway = await gw()
    client = gateway.client("sk-acme")
    first = await quota(client)
    assert (first["tenant"], first["user"], first["tier"]) == ("acme", None, None)
    assert first["allowed"] is True and first["refusal"] is None
    assert first["typical_call"]["basis"] == "allowlist"
    assert first["typical_call"]["model"] == "gpt-4o-mini"
    assert usd(first["limits"], "tenant:acme", "day") == {
        "kind": "usd", "scope": "tenant:acme", "period": "day", "limit": format_usd(200_000),
        "used": "0.000000", "reserved": "0.000000", "remaining": "0.000200",
        "resets_at": first["limits"][0]["resets_at"], "status": "ok"}
    midnight = period_end("day", datetime.now(timezone.utc))
    assert first["limits"][0]["resets_at"] == midnight.isoformat().replace("+00:00", "Z")

    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    # A second call held by the upstream: its reservation is in flight.
    upstream.gate = asyncio.Event()
    call = asyncio.create_task(client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO))
    await wait_for(lambda: len(upstream.requests) == 2)
    during = usd((await quota(client))["limits"], "tenant:acme", "day")
    spent = await ledger_spend(gateway, 1)
    reserved = Decimal(during["reserved"])
    assert Decimal(during["used"]) == spent and reserved > 0
    assert Decimal(during["remaining"]) == LIMIT - spent - reserved
    upstream.gate.set()
    raw = await call
    headers = raw.headers
    # The answer's headers are taken with its own reservation still held.
    assert headers["x-faregate-budget-remaining"] == during["remaining"]
    assert headers["x-faregate-budget-limit"] == during["limit"] == "0.000200"
    assert headers["x-faregate-budget-scope"] == "tenant:acme:day"
    left = (midnight - datetime.now(timezone.utc)).total_seconds()
    assert 0 < int(headers["x-faregate-budget-reset"]) <= 86_400
    assert abs(int(headers["x-faregate-budget-reset"]) - left) <= 5
    raw.parse()

    after = usd((await quota(client))["limits"], "tenant:acme", "day")
    spent = await ledger_spend(gateway, 2)
    assert after["reserved"] == "0.000000" and Decimal(after["used"]) == spent
    assert Decimal(after["remaining"]) == LIMIT - spent  # to the nano-dollar
    assert Decimal(after["remaining"]).quantize(NANO) == Decimal(after["remaining"])


async def test_allowed_false_once_spent_and_the_refusal_says_why(gw):
    gateway = await gw()
    client = gateway.client("sk-acme")
    refused = None
    for _ in range(100):
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None and refused.body["code"] == "budget_exceeded"
    spent = await quota(client)
    assert spent["allowed"] is False
    assert spent["refusal"]["code"] == "budget_exceeded"
    day = usd(spent["limits"], "tenant:acme", "day")
    assert Decimal(day["remaining"]) < Decimal(spent["typical_call"]["cost_usd"])
    # A smaller call may still fit: the typical call can be described.
    small = await quota(client, max_output_tokens="1")
    assert small["typical_call"]["output_tokens"] == 1
    assert small["allowed"] is (Decimal(small["typical_call"]["cost_usd"])
                                <= Decimal(day["remaining"]))
    outside = await quota(client, model="gpt-4o")
    assert outside["allowed"] is False and outside["refusal"]["code"] == "model_not_allowed"


async def test_the_typical_call_is_the_callers_latest_model(gw):
    gateway = await gw(initech={"daily_usd": str(LIMIT), "default_max_output_tokens": 20})
    client = gateway.client("sk-initech")
    first = await quota(client)  # no allowlist, no call yet: is any call admitted?
    assert first["typical_call"] == {"basis": "any", "model": None, "input_tokens": 0,
                                     "output_tokens": 0, "cost_usd": "0.000000001",
                                     "priced": True}
    assert first["allowed"] is True
    ok = 0
    while True:
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.RateLimitError:
            break
        ok += 1
        if ok == 1:
            typical = (await quota(client))["typical_call"]
            # 256 prompt tokens at $0.15/M + 20 output tokens (the default cap) at $0.60/M
            assert typical == {"basis": "recent", "model": "gpt-4o-mini", "input_tokens": 256,
                               "output_tokens": 20, "cost_usd": "0.0000504", "priced": True}
    spent = await quota(client)
    assert ok > 1 and spent["allowed"] is False
    assert spent["refusal"]["code"] == "budget_exceeded"
    assert ("could cost up to $0.0000504 (256 input + 20 output tokens of gpt-4o-mini)"
            in spent["refusal"]["message"])


async def test_a_caller_sees_only_its_own_tenant_and_user(gw):
    gateway = await gw(acme={"per_user_daily_usd": "0.0001"})
    await gateway.client("sk-alice").chat.completions.create(model="gpt-4o-mini",
                                                              messages=HELLO)
    alice = await quota(gateway.client("sk-alice"))
    bob = await quota(gateway.client("sk-bob"))
    globex = await quota(gateway.client("sk-globex",
                                        default_headers={"x-faregate-tenant": "acme"}))
    assert {x["scope"] for x in alice["limits"]} == {"tenant:acme", "user:acme/alice"}
    assert {x["scope"] for x in bob["limits"]} == {"tenant:acme", "user:acme/bob"}
    assert usd(bob["limits"], "user:acme/bob", "day")["used"] == "0.000000"
    assert usd(alice["limits"], "user:acme/alice", "day")["used"] != "0.000000"
    assert globex["tenant"] == "globex"
    assert {x["scope"] for x in globex["limits"]} == {"tenant:globex"}
    assert b"acme" not in orjson.dumps(globex)
    with pytest.raises(openai.BadRequestError) as info:  # no way to ask for another tenant
        await quota(gateway.client("sk-globex"), tenant="acme")
    assert info.value.body["code"] == "invalid_parameter"
    with pytest.raises(openai.AuthenticationError) as info:
        await quota(gateway.client("sk-unknown"))
    assert info.value.body["code"] == "invalid_api_key"


async def test_every_limit_kind_is_listed(gw, make_gateway):
    gateway = await gw(globex={"max_requests_per_day": 100, "max_images_per_month": 5,
                               "tpm": 100_000, "max_concurrent_sessions": 2,
                               "max_session_seconds": 300})
    client = gateway.client("sk-globex")
    for _ in range(2):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    report = await quota(client)
    kinds = {(x["kind"], x["period"]): x for x in report["limits"]}
    assert set(kinds) == {("usd", "month"), ("requests", "day"), ("images", "month"),
                          ("rpm", "minute"), ("tpm", "minute"), ("concurrent_sessions", None)}
    assert kinds[("requests", "day")] | {"resets_at": None} == {
        "kind": "requests", "scope": "tenant:globex", "period": "day", "limit": 100,
        "used": 2, "reserved": 0, "remaining": 98, "resets_at": None, "status": "ok"}
    assert kinds[("images", "month")]["used"] == 0
    rpm = kinds[("rpm", "minute")]
    assert (rpm["limit"], rpm["used"], rpm["remaining"]) == (6, 2, 4)  # refills 1 per 10 s
    assert kinds[("concurrent_sessions", None)] == {
        "kind": "concurrent_sessions", "scope": "tenant:globex", "period": None, "limit": 2,
        "used": 0, "reserved": 0, "remaining": 2, "resets_at": None, "status": "ok"}
    assert report["per_session"]["max_session_seconds"] == 300
    assert report["models"] is None
    for _ in range(4):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    tight = await quota(client)
    assert tight["allowed"] is False and tight["refusal"]["code"] == "rate_limit_exceeded"
    assert [x["status"] for x in tight["limits"] if x["kind"] == "rpm"] == ["exceeded"]


async def test_budget_headers_only_for_callers_with_a_usd_limit(gw):
    gateway = await gw()
    raw = await gateway.client("sk-globex").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-faregate-budget-scope"] == "tenant:globex:month"
    assert raw.headers["x-faregate-budget-limit"] == "5.000000"
    raw = await gateway.client("sk-initech").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO)
    assert not [h for h in raw.headers if h.startswith("x-faregate-budget-")]
    report = await quota(gateway.client("sk-initech"))
    assert [x["kind"] for x in report["limits"]] == ["rpm"] and report["allowed"] is True


async def raw_request(gateway, method: str, path: str, headers: dict | None = None
                      ) -> tuple[int, bytes]:
    """An HTTP/1.1 request with the path exactly as written (no client normalisation)."""
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("path", [
    "/v1/faregate/quota", "/v1//faregate/quota", "/v1/./faregate/quota",
    "/v1/%2e/faregate/quota", "/v1/faregate/%71uota", "/v1/FAREGATE/Quota/",
    "/v1/faregate/quota?"])
async def test_path_spellings_are_answered_by_faregate(gw, upstream, path):
    gateway = await gw()
    status, body = await raw_request(gateway, "GET", path,
                                     {"Authorization": "Bearer sk-globex"})
    assert status == 200 and orjson.loads(body)["tenant"] == "globex"
    assert upstream.requests == []


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/v1/faregate/other", 404), ("GET", "/v1/faregate", 404),
    ("POST", "/v1/faregate/quota", 405), ("GET", "/v1/faregate/quota;x", 400)])  # ";": no canonical form
async def test_the_faregate_namespace_is_never_forwarded(gw, upstream, method, path, status):
    gateway = await gw()
    got, body = await raw_request(gateway, method, path, {"Authorization": "Bearer sk-globex"})
    assert got == status and "error" in orjson.loads(body)
    assert upstream.requests == []


async def test_a_websocket_upgrade_on_the_quota_path_is_not_relayed(gw, upstream):
    gateway = await gw()
    status, body = await raw_request(gateway, "GET", "/v1/faregate/quota", {
        "Authorization": "Bearer sk-globex", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert status == 200 and orjson.loads(body)["tenant"] == "globex"
    assert upstream.requests == []


@pytest.mark.parametrize("at,period,end", [
    ("2026-12-31T23:59:59", "day", "2027-01-01T00:00:00"),
    ("2026-12-31T23:59:59", "month", "2027-01-01T00:00:00"),
    ("2028-02-10T12:00:00", "month", "2028-03-01T00:00:00"),
    ("2028-02-29T00:00:00", "day", "2028-03-01T00:00:00"),
])
def test_period_end_and_seconds_left(at, period, end):
    from faregate.proxy.quota._status import seconds_left

    now = datetime.fromisoformat(at).replace(tzinfo=timezone.utc)
    expected = datetime.fromisoformat(end).replace(tzinfo=timezone.utc)
    assert period_end(period, now) == expected
    assert seconds_left(period, now.timestamp()) == int((expected - now).total_seconds())
    assert seconds_left(period, now.timestamp() + 0.25) == int((expected - now).total_seconds())


def test_budget_headers_pick_the_tightest_and_never_go_negative():
    from faregate.proxy.quota import BudgetBook, BudgetLimit, budget_headers

    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    book = BudgetBook()
    day = BudgetLimit("tenant:acme", "day", 5_000_000_000)
    month = BudgetLimit("tenant:acme", "month", 6_000_000_000)
    budgets = ((day, book.counter(day.scope, "day", now)),
               (month, book.counter(month.scope, "month", now)))
    budgets[1][1].spent = 1_000_000_001  # the month has 4.999999999 left: tighter than the day
    budgets[0][1].reserved = budgets[1][1].reserved = 7
    assert dict(budget_headers(budgets, now.timestamp())) == {
        "x-faregate-budget-remaining": "4.999999992", "x-faregate-budget-limit": "6.000000",
        "x-faregate-budget-reset": str(8 * 86_400 - 12 * 3600),
        "x-faregate-budget-scope": "tenant:acme:month"}
    budgets[0][1].spent = 6_000_000_000  # over the limit (alert_only): remaining is 0, not < 0
    assert dict(budget_headers(budgets, now.timestamp()))["x-faregate-budget-remaining"] == (
        "0.000000")
    assert budget_headers((), now.timestamp()) == []


async def test_passthrough_callers_are_authenticated_by_the_upstream(make_gateway, upstream):
    upstream.valid_keys = {"sk-real"}
    gateway = await make_gateway({"tenants": {"default": {"daily_usd": "1"}},
                                  "keys": [{**key("sk-real-acme"), "tenant": "acme"}]})
    upstream.valid_keys.add("sk-real-acme")
    for _ in range(2):
        report = await quota(gateway.client("sk-real"))
        assert report["tenant"] == "default" and report["limits"][0]["limit"] == "1.000000"
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]  # kept
    assert (await quota(gateway.client("sk-real-acme")))["tenant"] == "acme"
    with pytest.raises(openai.AuthenticationError) as info:  # the upstream does not know it
        await quota(gateway.client("sk-guess"))
    assert info.value.body["code"] == "invalid_api_key"
    status, body = await raw_request(gateway, "GET", "/v1/faregate/quota")  # no key at all
    assert status == 401 and b"didn't provide an API key" in body
    assert len(upstream.requests) == 3


async def test_passthrough_key_check_with_the_upstream_down(tmp_path):
    from conftest import gateway_config, start_gateway
    from faregate.proxy import parse_settings

    gateway = await start_gateway(parse_settings(gateway_config("http://127.0.0.1:9", tmp_path)))
    try:
        with pytest.raises(openai.InternalServerError) as info:
            await quota(gateway.client("sk-any"))
        assert info.value.status_code == 502
    finally:
        await gateway.stop()


def test_asking_creates_no_counters():
    from faregate.proxy import Metrics
    from faregate.proxy.quota import BudgetLimit, Policy, Quota

    quota = Quota(Metrics(), lambda *a: None)
    policy = Policy("someone", None, True, budgets=(BudgetLimit("tenant:someone", "day", 10),),
                    max_requests_per_day=5, rpm=10, tpm=100)
    now = datetime.now(timezone.utc)
    assert quota.would_admit(policy, 11, now).code == "budget_exceeded"
    assert quota.would_admit(policy, 10, now, tpm_tokens=100) is None
    assert quota.would_admit(policy, 1, now, tpm_tokens=101) is None  # a full bucket's worth
    assert len(quota.statuses(policy, now, [], 0)) == 4  # usd, requests, rpm, tpm
    assert list(quota.book.items()) == [] and quota.rates._buckets == {}
