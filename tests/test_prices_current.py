"""Prices that stay current (issue 22): every model the SDK can name is priced,
every billing dimension the usage reports is billed, and the table cannot fall
behind silently.

Each dimension is priced against a hand-computed Decimal (the arithmetic is in
the comment beside it, from the rates in prices.toml and their sources).
"""

from __future__ import annotations

import ast
import json
from datetime import date, datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pytest

import openai
from faregate.pricing import (
    PriceTableError,
    Usage,
    check_price_table,
    compare_prices,
    load_price_table,
    loads_price_table,
    price,
    unconfirmed_periods,
    usage_for_endpoint,
    usage_from_chat,
    usage_from_responses,
)
from faregate.proxy.meter._session import SessionMeter
from test_cli import faregate

SHIPPED = load_price_table()
AT = datetime(2026, 11, 20, tzinfo=timezone.utc)
FIXTURE = Path(__file__).parent / "fixtures" / "community_prices.json"


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def responses_usage(inp: int, out: int, cached: int = 0, written: int | None = None,
                    w12: int | None = None, w30: int | None = None) -> dict:
    details: dict = {"cached_tokens": cached}
    if written is not None:
        details["cache_write_tokens"] = written
    if w12 is not None or w30 is not None:
        details["cache_write_tokens_details"] = {"ttl_12h_tokens": w12 or 0,
                                                 "ttl_30m_tokens": w30 or 0}
    return {"input_tokens": inp, "input_tokens_details": details, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}


# -- cache writes ------------------------------------------------------------------------


def test_cache_writes_both_retentions_are_priced_at_their_own_rates():
    u = usage_from_responses(responses_usage(10_000, 500, 2_000, 6_000, 1_000, 5_000))
    assert (u.input, u.cached_input, u.cache_write, u.cache_write_12h) == (8_000, 2_000, 5_000,
                                                                           1_000)
    charge = price(u, "gpt-5.6-terra", AT, SHIPPED)
    # gpt-5.6-terra from 2026-07-30: input 2.00, cached 0.20, output 12.00, writes 2.50 / 5.00
    # 2,000 plain input x 2.00 + 2,000 cached x 0.20 + 5,000 x 2.50 + 1,000 x 5.00 + 500 x 12.00
    assert charge.breakdown == {"input": D("0.004"), "cached_input": D("0.0004"),
                                "cache_write": D("0.0125"), "cache_write_12h": D("0.005"),
                                "output": D("0.006")}
    assert charge.cost == D("0.0279") and charge.usage.flags == ()
    # the same call billed as plain input, as before: 0.016 + 0.0004 + 0.006
    plain = price(usage_from_responses(responses_usage(10_000, 500, 2_000)), "gpt-5.6-terra",
                  AT, SHIPPED)
    assert plain.cost == D("0.0224")


def test_chat_cache_writes_without_details_are_30_minute_writes():
    u = usage_from_chat({"prompt_tokens": 4_000, "completion_tokens": 100,
                         "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 4_000}})
    assert (u.cache_write, u.cache_write_12h) == (4_000, 0)
    # gpt-6-sol: 4,000 x 2.50 + 100 x 10.00
    assert price(u, "gpt-6-sol", AT, SHIPPED).cost == D("0.011")


def test_cache_writes_under_a_tier_and_above_the_long_context_threshold():
    u = Usage(**{**usage_from_responses(responses_usage(1_000, 100, 0, 1_000)).tokens(),
                 "cache_write": 1_000, "service_tier": "priority"})
    # gpt-6.1-sol priority: writes 5.00, output 20.00: 1,000 x 5.00 + 100 x 20.00
    assert price(u, "gpt-6.1-sol", AT, SHIPPED).cost == D("0.007")
    big = usage_from_responses(responses_usage(300_000, 1_000, 0, 100_000, 100_000))
    # gpt-6-sol above 272K: input x2, output x1.5: 200,000 x 4.00 + 100,000 x 10.00 (12h x2)
    # + 1,000 x 15.00
    charge = price(big, "gpt-6-sol", AT, SHIPPED)
    assert charge.cost == D("1.815") and charge.price_version.endswith(":long_context")
    flex = price(Usage(**{**big.tokens(), "cache_write_12h": 100_000, "service_tier": "flex"}),
                 "gpt-6-sol", AT, SHIPPED)
    assert flex.cost == D("0.9075")  # the Batch/Flex factor halves writes too


def test_a_model_without_write_rates_bills_writes_as_plain_input():
    u = usage_from_responses(responses_usage(2_000, 0, 0, 2_000))
    assert price(u, "gpt-5.4", AT, SHIPPED).cost == D("0.005")  # 2,000 x 2.50


def test_writes_claiming_more_than_the_uncached_input_are_clamped_and_flagged():
    u = usage_from_responses(responses_usage(1_000, 0, 600, 900, 5_000))
    assert (u.cache_write + u.cache_write_12h) <= u.input == 400
    assert "usage_malformed" in u.flags
    hand = price(Usage(input=100, cache_write=5_000), "gpt-6-sol", AT, SHIPPED)
    assert hand.cost == D("0.00025") and "usage_malformed" in hand.usage.flags  # 100 x 2.50


# -- dated prices and tiers ---------------------------------------------------------------


def test_gpt_5_6_sol_promotional_price_from_2026_08_21():
    u = Usage(input=100_000, cached_input=100_000, output=100_000)
    # launch: 100,000 x (5.00 + 0.50 + 30.00) per 1M
    assert price(u, "gpt-5.6-sol", at("2026-08-20"), SHIPPED).cost == D("3.55")
    promo = price(u, "gpt-5.6-sol", at("2026-08-21"), SHIPPED)
    assert promo.cost == D("2.44")  # 100,000 x (4.00 + 0.40 + 20.00) per 1M
    assert promo.price_version.endswith(":gpt-5.6-sol@2026-08-21")


def test_ultrafast_own_rates_and_the_march_2027_change():
    u = Usage(input=1_000, output=100, service_tier="ultrafast")
    charge = price(u, "gpt-6.1-sol", AT, SHIPPED)  # 6x: 1,000 x 12 + 100 x 60
    assert charge.cost == D("0.018") and charge.usage.flags == ()
    assert price(u, "gpt-6.2-sol", at("2027-02-28"), SHIPPED).cost == D("0.009")  # 3x: 6 / 30
    assert price(u, "gpt-6.2-sol", at("2027-03-01"), SHIPPED).cost == D("0.018")  # 6x: 12 / 60


def test_long_context_for_gpt_5_5_and_pro_and_o4_mini_priority():
    u = Usage(input=300_000, output=1_000)
    assert price(u, "gpt-5.5", AT, SHIPPED).cost == D("3.045")  # 300,000 x 10 + 1,000 x 45
    assert price(u, "gpt-5.5-pro", AT, SHIPPED).cost == D("18.27")  # x 60 + x 270
    assert price(u, "gpt-5.4-pro", AT, SHIPPED).cost == D("18.27")
    fast = Usage(input=1_000, cached_input=1_000, output=500, service_tier="fast")
    charge = price(fast, "o4-mini", AT, SHIPPED)  # 1,000 x 2.00 + 1,000 x 0.50 + 500 x 8.00
    assert charge.cost == D("0.0065") and charge.price_version.endswith(":priority")


def test_a_models_own_batch_rates_win_over_the_table_factor():
    table = loads_price_table('''
version = "t"
[tier_factors]
batch = { factor = 0.5, source = "s" }
[[models."m"]]
effective = "2026-01-01"
source = "s"
input = 1.00
output = 2.00
batch = { input = 1.00, output = 2.00, source = "s" }
''')
    u = Usage(input=1_000_000, output=1_000_000, service_tier="batch")
    assert price(u, "m", AT, table).cost == D("3.00")  # own rates: no discount


# -- GPT-Live standby ---------------------------------------------------------------------


def test_live_standby_seconds_are_billed_at_the_standby_rate():
    charge = price(Usage(seconds=D(600), standby_seconds=D(240)), "gpt-live-1", AT, SHIPPED)
    # 360 active s x 0.05/min + 240 standby s x 0.02/min
    assert charge.breakdown == {"seconds": D("0.3"), "standby_seconds": D("0.08")}
    assert charge.cost == D("0.38")
    # a model without a standby rate bills all of its seconds as active time
    assert price(Usage(seconds=D(60), standby_seconds=D(60)), "gpt-realtime-whisper", AT,
                 SHIPPED).cost == D("0.017")


def test_live_meter_reads_the_paused_part_of_cumulative_seconds():
    m = SessionMeter("live", model="gpt-live-1")
    frames = [{"seconds": 60, "active_seconds": 60, "paused_seconds": 0},
              {"seconds": 180, "active_seconds": 90, "paused_seconds": 90},
              {"seconds": 240, "active_seconds": 150, "paused_seconds": 90}]
    charged = []
    for usage in frames:
        charged += m.server_frame(json.dumps({"type": "session.usage.updated", "usage": usage}))
    assert [(c.usage.seconds, c.usage.standby_seconds) for c in charged] == [
        (D(60), D(0)), (D(120), D(90)), (D(60), D(0))]
    total = sum((price(c.usage, "gpt-live-1", AT, SHIPPED).cost for c in charged), D(0))
    assert total == D("0.155")  # 150 active s x 0.05/min + 90 s x 0.02/min


# -- unconfirmed, limits, retired ------------------------------------------------------------


def test_unconfirmed_periods_flag_their_charges_and_are_listed():
    u = usage_for_endpoint("transcription", {"type": "tokens", "input_tokens": 100,
                                             "output_tokens": 10}, table=SHIPPED)
    charge = price(u, "gpt-4o-transcribe", AT, SHIPPED)
    assert "price_unconfirmed" in charge.usage.flags
    assert charge.cost == D("0.0007")  # 100 audio x 6.00 + 10 x 10.00: the disputed figure
    listed = unconfirmed_periods(SHIPPED)
    assert any(line.startswith("models.gpt-4o-transcribe[") for line in listed)
    assert "price_unconfirmed" not in price(Usage(input=1), "gpt-5", AT, SHIPPED).usage.flags


def test_limits_are_exposed_and_inherited_by_later_periods():
    gpt5 = SHIPPED.entry("gpt-5-2025-08-07", AT)
    assert (gpt5.context_window, gpt5.max_output_tokens) == (400_000, 128_000)
    assert SHIPPED.entry("gpt-5.6-terra", AT).context_window == 1_050_000  # 2nd period
    assert SHIPPED.entry("gpt-5-chat-latest", AT).context_window == 128_000
    with pytest.raises(PriceTableError, match="context_window"):
        loads_price_table('version = "t"\n[[models."m"]]\neffective = "2026-01-01"\n'
                          'input = 1\ncontext_window = -5\n')


def test_retired_models_keep_their_prices_for_old_records():
    assert SHIPPED.retired_on("gpt-5.1-codex-max") == date(2026, 7, 23)
    assert SHIPPED.retired_on("ft:gpt-3.5-turbo-0125:acme::x") == date(2026, 10, 23)
    old = price(Usage(input=1_000, output=1_000), "gpt-5.1-codex-max", at("2026-05-01"), SHIPPED)
    assert old.priced and old.cost == D("0.01125")  # 1,000 x 1.25 + 1,000 x 10.00
    assert SHIPPED.retired_on("gpt-6.1-sol") is None
    with pytest.raises(AssertionError):
        assert not check_price_table(loads_price_table(
            'version = "t"\n[retired]\n"gone" = { date = "2026-01-01", source = "s" }\n'))


# -- coverage -------------------------------------------------------------------------------

#: Names the SDK keeps that are not models (the SDK says so itself).
NOT_MODELS = {"gpt-5.1-mini"}  # "Not a supported model ID. Retained for SDK compatibility."
_MODEL_PREFIX = ("gpt-", "o1", "o3", "o4", "tts-", "whisper", "dall-e", "text-embedding",
                 "omni-", "text-moderation", "babbage", "davinci", "computer-use", "sora",
                 "codex", "chatgpt")


def sdk_model_names() -> set[str]:
    """Every model name in the installed SDK's `Literal[...]` types."""
    names: set[str] = set()
    root = Path(openai.__file__).parent / "types"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
                for c in ast.walk(node.slice):
                    if (isinstance(c, ast.Constant) and isinstance(c.value, str)
                            and c.value.startswith(_MODEL_PREFIX)):
                        names.add(c.value)
    return names


def test_every_model_the_sdk_names_is_priced():
    names = sdk_model_names()
    assert len(names) > 150  # the introspection found the literals
    unpriced = sorted(n for n in names - NOT_MODELS if SHIPPED.entry(n, AT) is None)
    assert unpriced == []


def test_every_model_the_issue_found_at_zero_is_priced():
    for model in ("gpt-image-1.5", "gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst",
                  "chatgpt-image-latest", "gpt-5.1-codex", "gpt-5.1-codex-max",
                  "gpt-5.1-codex-mini", "gpt-5.2-codex", "gpt-5.3-codex", "gpt-5.4-pro",
                  "gpt-audio-1.5", "gpt-transcribe", "gpt-4o-transcribe-diarize",
                  "gpt-realtime-translate", "gpt-4o-search-preview", "gpt-5-search-api",
                  "computer-use-preview", "gpt-6-cyber", "gpt-5.6-cyber", "gpt-6-rosalind",
                  "gpt-rosalind-research", "gpt-daybreak-red-latest", "daybreak-blue-latest",
                  "gpt-5-chat", "chat-latest", "ft:o4-mini-2025-04-16", "ft:gpt-3.5-turbo",
                  "ft:gpt-4-0613", "ft:babbage-002", "ft:davinci-002", "babbage-002",
                  "davinci-002", "gpt-3.5-turbo-instruct", "text-embedding-ada-002-v2"):
        charge = price(Usage(input=1_000, output=1_000, seconds=D(60)), model, AT, SHIPPED)
        assert charge.priced and charge.cost > 0, model


def test_the_shipped_table_checks_clean():
    assert check_price_table(SHIPPED) == []


# -- compare --------------------------------------------------------------------------------


def test_compare_lists_every_difference_with_our_source_and_reason():
    result = compare_prices(json.loads(FIXTURE.read_text()), SHIPPED, AT)
    assert result.entries == 9 and result.skipped == ["1024-x-1024/gpt-image-1.5"]
    assert result.missing == ["gpt-9-imaginary"]
    found = {(d.model, d.rate, d.tier, d.long_context): d for d in result.differences}
    disputed = found[("gpt-4o-transcribe", "audio_input", "standard", None)]
    assert (disputed.ours, disputed.theirs) == (D("6.00"), D("2.5"))
    assert disputed.documented and "disputed" in disputed.why
    assert "gpt-4o-transcribe" in disputed.source
    rounding = found[("gpt-5.4", "cached_input", "batch", None)]
    assert (rounding.ours, rounding.theirs) == (D("0.125"), D("0.13")) and rounding.documented
    # equal figures are no differences: gpt-5, the 6.1-sol writes and Ultrafast, gpt-live-1's
    # per-second rate rounded from $0.05/min, tts-1 per character, gpt-5.4 long context
    assert not any(d.model in ("gpt-5", "gpt-6.1-sol", "gpt-live-1", "tts-1") for d in
                   result.differences)
    assert ("gpt-5.4", "input", "standard", 272_000) not in found
    assert set(found) == {("gpt-4o-transcribe", "audio_input", "standard", None),
                          ("gpt-5.4", "cached_input", "batch", None)}


def test_compare_cli_exits_2_when_a_priced_model_is_missing(tmp_path):
    out = faregate("prices", "--compare", str(FIXTURE))
    assert out.returncode == 2, out.stderr
    assert "gpt-9-imaginary  MISSING" in out.stdout
    assert "gpt-4o-transcribe  audio_input [standard]: faregate 6.00 vs community 2.5" in out.stdout
    data = json.loads(FIXTURE.read_text())
    del data["gpt-9-imaginary"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert faregate("prices", "--compare", str(tmp_path / "c.json")).returncode == 0
    (tmp_path / "bad.json").write_text("{")
    bad = faregate("prices", "--compare", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "bad.json" in bad.stderr


# -- the table in force: operator file, age, check -----------------------------------------

OPERATOR = '''
version = "ops-2027-01-10"
[[models."gpt-6.1-sol"]]
effective = "2026-09-29"
source = "https://example.test/our-contract"
input = 1.50
cached_input = 0.10
output = 8.00
[[models."acme-model"]]
effective = "2026-01-01"
source = "https://example.test/acme"
input = 1.00
output = 2.00
[aliases]
"acme-deployment" = "gpt-4o-mini"
'''


def test_an_operator_file_is_read_over_the_shipped_table():
    table = loads_price_table(OPERATOR, base=SHIPPED)
    assert table.version == f"{SHIPPED.version}+table.ops-2027-01-10"
    assert table.shipped_version == SHIPPED.version
    u = Usage(input=1_000_000, output=1_000_000)
    assert price(u, "gpt-6.1-sol", AT, table).cost == D("9.50")  # replaced: 1.50 + 8.00
    assert price(u, "acme-model", AT, table).cost == D("3.00")  # added
    assert price(u, "gpt-5", AT, table).cost == D("11.25")  # kept: 1.25 + 10
    assert table.alias_target("acme-deployment") == "gpt-4o-mini"
    assert price(u, "acme-deployment", AT, table).family == "gpt-4o-mini"


def test_prices_check_path_validates_an_operator_file(tmp_path):
    good = tmp_path / "prices.toml"
    good.write_text(OPERATOR)
    out = faregate("prices", "--check", str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout and "unconfirmed period(s)" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(OPERATOR.replace('source = "https://example.test/acme"\n', "")
                   + '[[models."x"]]\neffective = "2026-01-01"\ninput = -1\n')
    out = faregate("prices", "--check", str(bad))
    assert out.returncode == 2 and "models.x[0].input" in out.stdout
    nosource = tmp_path / "nosource.toml"
    nosource.write_text(OPERATOR.replace('source = "https://example.test/acme"\n', ""))
    out = faregate("prices", "--check", str(nosource))
    assert out.returncode == 2 and "models.acme-model[2026-01-01].source: missing" in out.stdout


def test_prices_shows_the_shipped_tables_version_and_age():
    out = faregate("prices", "--model", "gpt-5.1-codex")
    assert out.returncode == 0
    assert f"(shipped table {SHIPPED.version}, " in out.stdout and "days old" in out.stdout
    assert "retired 2026-07-23" in out.stdout
    assert SHIPPED.age_days(date.fromisoformat(SHIPPED.version) ) == 0


def test_serve_warns_when_the_shipped_table_is_older_than_60_days():
    from faregate.proxy._prices_cli import stale_table_warning

    made = date.fromisoformat(SHIPPED.version)
    assert stale_table_warning(made.replace(day=1)) is None
    assert stale_table_warning(date.fromordinal(made.toordinal() + 60)) is None
    warning = stale_table_warning(date.fromordinal(made.toordinal() + 61))
    assert warning and "61 days old" in warning and "[pricing] table" in warning


# -- through faregate, with the official SDK ------------------------------------------------

import asyncio  # noqa: E402

from aiohttp import web  # noqa: E402

from faregate.proxy import load_settings  # noqa: E402
from faregate.proxy.alerts import UnpricedNotes  # noqa: E402


@pytest.fixture
def answer(upstream):
    """Make the upstream answer a path with this JSON body."""
    def set_answer(path: str, body: dict):
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(body)
        upstream.add_route("POST", path, handler)
    return set_answer


def chat_body(model: str, usage: dict) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}], "usage": usage}


async def test_e2e_cache_writes_reach_the_ledger_breakdown(make_gateway, answer):
    usage = responses_usage(10_000, 500, 2_000, 6_000, 1_000, 5_000)
    answer("/v1/responses", {"id": "resp_1", "object": "response", "created_at": 1,
                             "status": "completed", "model": "gpt-5.6-terra", "output": [],
                             "usage": usage})
    gw = await make_gateway()
    await gw.client().responses.create(model="gpt-5.6-terra", input="prime the cache",
                                       prompt_cache_key="k")
    row = (await gw.ledger_rows(1))[0]
    # as in test_cache_writes_both_retentions_are_priced_at_their_own_rates, priced today
    entry = SHIPPED.entry("gpt-5.6-terra")
    assert entry.rate("cache_write") == D("2.50")
    assert row.breakdown == {"input": 4_000_000, "cached_input": 400_000,
                             "cache_write": 12_500_000, "cache_write_12h": 5_000_000,
                             "output": 6_000_000}
    assert row.cost_nanos == 27_900_000 and row.tokens["input"] == 8_000


async def test_e2e_unpriced_calls_are_counted_by_model_said_and_reported(make_gateway, answer):
    answer("/v1/chat/completions", chat_body("acme-internal-7", {"prompt_tokens": 10,
                                                                 "completion_tokens": 5}))
    gw = await make_gateway()
    sent = []
    gw.state.alerting.unpriced.attach(sent.append)
    client = gw.client()
    for _ in range(2):
        await client.chat.completions.create(model="acme-internal-7",
                                             messages=[{"role": "user", "content": "hi"}])
    await gw.ledger_rows(2)
    text = await gw.metrics_text()
    assert 'faregate_unpriced_requests_total{model="acme-internal-7",tenant="default"} 2.0' in text
    assert len(sent) == 1 and sent[0].fields["model"] == "acme-internal-7"  # once a day
    assert '[pricing.models."acme-internal-7"]' in sent[0].text
    report = await gw.state.ledger.usage(None, None, "tenant")
    assert report.unpriced_models == (("acme-internal-7", 2),)
    from faregate.storage import render_report

    table = render_report(report, "tenant", "table")
    assert "UNPRICED: 2 calls" in table and '[pricing.models."acme-internal-7"]' in table
    as_json = json.loads(render_report(report, "tenant", "json"))
    assert as_json["unpriced_models"][0]["config"].startswith('[pricing.models."acme-internal-7"]')


async def test_e2e_unconfirmed_money_is_shown_in_the_report(make_gateway, answer):
    answer("/v1/chat/completions", chat_body("gpt-4o-transcribe", {"prompt_tokens": 1000,
                                                                   "completion_tokens": 100}))
    gw = await make_gateway()
    await gw.client().chat.completions.create(model="gpt-4o-transcribe",
                                              messages=[{"role": "user", "content": "hi"}])
    row = (await gw.ledger_rows(1))[0]
    assert "price_unconfirmed" in row.flags and row.cost_nanos == 3_500_000  # 2.50 + 10.00
    report = await gw.state.ledger.usage(None, None, "model")
    from faregate.storage import render_report

    assert report.rows[0].unconfirmed == 1 and report.rows[0].unconfirmed_cost_nanos == 3_500_000
    assert "UNCONFIRMED: 1 calls ($0.0035)" in render_report(report, "model", "table")
    assert "UNCONFIRMED: 1 calls ($0.003500)" in render_report(report, "model", "table", exact=True)
    assert report.totals()["total_unconfirmed_cost_usd"] == "0.003500"


async def test_readyz_and_metrics_show_the_table_version_and_age(gateway):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/readyz") as resp:
            body = await resp.json()
        async with http.get(gateway.url + "/metrics") as resp:
            metrics = await resp.text()
    today = datetime.now(timezone.utc).date()
    assert body["prices"] == {"version": SHIPPED.version, "shipped_version": SHIPPED.version,
                              "shipped_age_days": SHIPPED.age_days(today)}
    assert f"faregate_price_table_age_days {float(SHIPPED.age_days(today))}" in metrics


def test_unpriced_notes_are_daily_and_bounded():
    sent = []
    notes = UnpricedNotes(sent.append)
    day1, day2 = at("2026-11-20"), at("2026-11-21")
    notes.note("m-1", "acme", day1)
    notes.note("m-1", "globex", day1)
    notes.note("m-1", "acme", day2)
    assert [n.id for n in sent] == ["unpriced|2026-11-20|m-1", "unpriced|2026-11-21|m-1"]
    sent.clear()
    for i in range(50):
        notes.note(f"flood-{i}", "acme", day2)
    notes.note("\x00not a name", "acme", day2)
    assert len(sent) == 19  # MAX_PER_DAY (20) with m-1 already said today


async def test_operator_price_file_hot_reloads_and_a_bad_one_keeps_the_table(
        upstream, tmp_path):
    from conftest import start_gateway

    prices = tmp_path / "prices.toml"
    prices.write_text(OPERATOR)
    config = tmp_path / "faregate.toml"
    config.write_text(
        f'[server]\nupstream = "{upstream.url}"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "r.db"}"\n'
        f'journal_dir = "{tmp_path / "journal"}"\n[pricing]\ntable = "{prices}"\n')
    gw = await start_gateway(load_settings(config), config)
    try:
        def rate() -> D:
            return gw.state.runtime.prices.entry("acme-model").rate("input")

        assert rate() == D("1.00")
        prices.write_text(OPERATOR.replace("input = 1.00", "input = 1.25"))  # the config is untouched
        for _ in range(60):
            if rate() == D("1.25"):
                break
            await asyncio.sleep(0.1)
        assert rate() == D("1.25")
        prices.write_text(OPERATOR.replace("input = 1.00", "input = -3"))
        await asyncio.sleep(2.5)
        assert rate() == D("1.25")  # the bad file was refused; the running table stays
        text = gw.state.metrics.render().decode()
        assert 'faregate_config_reloads_total{result="rejected"} 1.0' in text
    finally:
        await gw.stop()


def test_a_bad_operator_file_is_a_config_error_with_its_key_path(tmp_path):
    from faregate.proxy import ConfigError, Runtime, parse_settings

    with pytest.raises(ConfigError) as err:
        Runtime.build(parse_settings({"pricing": {"table": str(tmp_path / "missing.toml")}}))
    assert err.value.problems[0].path == "pricing.table"
    out = faregate("check-config", str(_config_with_table(tmp_path, "version = 3")))
    assert out.returncode == 2 and "pricing.table" in out.stderr


def _config_with_table(tmp_path: Path, text: str) -> Path:
    prices = tmp_path / "p.toml"
    prices.write_text(text)
    config = tmp_path / "c.toml"
    config.write_text(f'[pricing]\ntable = "{prices}"\n')
    return config
