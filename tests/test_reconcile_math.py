"""Reconciliation arithmetic, by hand: exact decimals in, exact nano-dollars out.

Pure functions only (no server): the provider's cost pages, the cells of
(day, group), the tolerance, the reasons, the attribution of unseen Realtime
cost and the backstop limits. Every expected figure is worked out in the test.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from faregate.proxy import parse_settings
from faregate.proxy.meter import bound_secret_expiry, session_reservation
from faregate.proxy.provider import (
    MIN_DRIFT_NANOS,
    UNMAPPED,
    CostLine,
    CostsUnreadable,
    KeyMap,
    ProjectMap,
    attribute,
    backstops,
    by_api_key,
    by_line_item,
    by_project,
    compare,
    failing,
    line_item_group,
    parse_costs_page,
    summary_dict,
    within,
)
from faregate.proxy.provider._keys import match_keys, redaction_matches
from fake_admin import nanos
from faregate.pricing import load_price_table
from faregate.storage import DailyTotal, DelegatedSession, LineItemTotal

OCT31, NOV1, NOV2 = date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def epoch(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def page(buckets: list[tuple[date, list[dict]]], next_page: str | None = None) -> str:
    data = [{"object": "bucket", "start_time": epoch(d), "end_time": epoch(d) + 86400,
             "results": results} for d, results in buckets]
    return json.dumps({"object": "page", "data": data, "has_more": next_page is not None,
                       "next_page": next_page})


def cost(value, **fields) -> dict:
    return {"object": "organization.costs.result",
            "amount": {"value": value, "currency": "usd"}, **fields}


# -- the provider's pages ---------------------------------------------------------


def test_costs_page_amounts_are_exact_decimals_not_floats():
    # 0.1 + 0.2 as floats is 0.30000000000000004; as the page's text it is exact.
    text = page([(OCT31, [cost(0.1, project_id="proj_a"), cost(0.2, project_id="proj_a")])])
    parsed = parse_costs_page(text.replace("0.1,", "0.1000000004,"))
    assert [line.nanos for line in parsed.lines] == [100_000_000, 200_000_000]
    assert sum(line.nanos for line in parsed.lines) == 300_000_000
    assert parsed.next_page is None
    # Below a nano-dollar: half-even to the nearest nano (…0.5 rounds to even).
    odd = parse_costs_page(page([(NOV1, [cost(0.0000000025), cost(0.0000000035)])]))
    assert [line.nanos for line in odd.lines] == [2, 4]


def test_costs_page_cursor_only_while_has_more():
    assert parse_costs_page(page([(OCT31, [])], next_page="31")).next_page == "31"
    last = json.loads(page([(OCT31, [])]))
    last["next_page"] = "stale"  # has_more false: a cursor is ignored
    assert parse_costs_page(json.dumps(last)).next_page is None


@pytest.mark.parametrize("bad", [
    cost("NaN"), cost(1e13), cost(True), cost(None), {"object": "organization.costs.result"},
    {"object": "organization.usage.completions.result", "amount": {"value": 1}},
    {"object": "organization.costs.result", "amount": {"value": 1, "currency": "eur"}},
    "a string", 7,
])
def test_unreadable_results_are_skipped_and_counted(bad):
    parsed = parse_costs_page(page([(OCT31, [cost("1.25"), bad])]))
    assert [line.nanos for line in parsed.lines] == [1_250_000_000]
    assert parsed.skipped == 1


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"data": 3}', '{"data": [{"results": []}]}',
    '{"data": [{"start_time": -5, "results": []}]}',
    '{"data": [{"start_time": 1790812800, "results": {}}]}',
])
def test_an_answer_of_the_wrong_shape_is_refused(text):
    with pytest.raises(CostsUnreadable):
        parse_costs_page(text)


# -- tolerance ------------------------------------------------------------------------


@pytest.mark.parametrize("ledger, provider, ok", [
    ("100.00", "102.00", True),      # exactly 2 % of the provider's $102... is $2.04: in
    ("100.00", "102.05", False),     # $2.05 > 2 % of $102.05 ($2.041)
    ("102.04", "100.00", False),     # ledger above the bill by $2.04 > $2.00
    ("102.00", "100.00", True),      # by exactly $2.00 = 2 %
    ("0", "0.01", True),             # one cent: never a failure on rounding
    ("0", "0.010000001", False),     # ...and above it, with nothing in the ledger
    ("0.02", "0", False),            # recorded but never billed
])
def test_within_tolerance(ledger, provider, ok):
    assert within(nanos(ledger), nanos(provider), Decimal("0.02")) is ok


def test_the_floor_is_one_cent():
    assert MIN_DRIFT_NANOS == nanos("0.01")


# -- by project, across a month boundary ------------------------------------------------


def totals(day, tenant, usd, **kw) -> DailyTotal:
    return DailyTotal(day, tenant, kw.pop("key_id", None), nanos(usd), **kw)


def test_by_project_across_a_month_boundary_with_reasons():
    projects = ProjectMap({"acme": "proj_acme", "globex": "proj_globex", "initech": "proj_acme"})
    provider = [
        CostLine(OCT31, nanos("1.234567891"), project="proj_acme"),
        CostLine(OCT31, nanos("0.5"), project="proj_acme"),
        CostLine(NOV1, nanos("2.00"), project="proj_acme"),
        CostLine(NOV1, nanos("3.30"), project="proj_globex"),
        CostLine(NOV1, nanos("0.75"), project="proj_other"),  # no tenant maps to it
        CostLine(NOV1, nanos("0.05"), project=None),
    ]
    ledger = [
        totals(OCT31, "acme", "1.200000000", estimated=2, estimated_nanos=nanos("0.1")),
        totals(OCT31, "initech", "0.534567891"),
        totals(NOV1, "acme", "1.99"),
        totals(NOV1, "globex", "3.00", unconfirmed=4, unconfirmed_nanos=nanos("0.8"),
               unpriced=1),
        totals(NOV1, "default", "0.80"),
    ]
    cells = by_project(provider, ledger, projects, {(NOV1, "proj_globex"): 2})
    rows = compare(cells, "project", Decimal("0.02"), lambda d: d < NOV2, NOW)
    got = {(r.day, r.group): r for r in rows}
    assert [(r.day, r.group) for r in rows] == [
        (OCT31, "proj_acme"), (NOV1, "proj_acme"), (NOV1, "proj_globex"), (NOV1, UNMAPPED)]

    october = got[(OCT31, "proj_acme")]  # 1.234567891 + 0.5 vs 1.2 + 0.534567891: exact
    assert (october.ledger_nanos, october.provider_nanos) == (1_734_567_891, 1_734_567_891)
    assert october.drift_nanos == 0 and october.drift_ratio == 0 and october.within
    assert october.notes == ("estimated: 2 calls, $0.100000",)

    acme = got[(NOV1, "proj_acme")]  # the new month: 2.00 vs 1.99, 1 cent = 0.5 %
    assert acme.drift_nanos == nanos("0.01") and acme.drift_ratio == Decimal("0.005")
    assert acme.within

    globex = got[(NOV1, "proj_globex")]  # 3.30 vs 3.00: 0.30 / 3.30 = 9.09 %
    assert globex.drift_nanos == nanos("0.30") and not globex.within
    assert globex.drift_ratio == Decimal(3) / Decimal(33)
    assert globex.notes == ("unpriced: 1 calls recorded at $0",
                            "unconfirmed_prices: 4 calls, $0.800000", "unseen_sessions: 2")

    unmapped = got[(NOV1, UNMAPPED)]  # proj_other 0.75 + no project 0.05 vs default's 0.80
    assert (unmapped.ledger_nanos, unmapped.provider_nanos) == (nanos("0.8"), nanos("0.8"))
    assert unmapped.notes == ("unmapped_project: proj_other",)
    assert failing(rows) == [globex]
    summary = summary_dict(rows, "project", Decimal("0.02"))
    assert summary["within_tolerance"] is False
    assert summary["rows"][2] == {
        "date": "2026-11-01", "group": "proj_globex", "ledger_usd": "3.000000",
        "provider_usd": "3.300000", "drift_usd": "0.300000", "drift_ratio": "0.090909",
        "notes": list(globex.notes), "final": True, "within": False}


def test_a_day_the_provider_has_not_closed_is_shown_but_never_fails():
    cells = by_project([CostLine(NOV2, nanos("1"), project="proj_a")],
                       [totals(NOV2, "a", "5")], ProjectMap({"a": "proj_a"}))
    [row] = compare(cells, "project", Decimal("0.02"), lambda d: d < NOV2, NOW)
    assert not row.within and not row.final and failing([row]) == []
    assert row.notes[0] == "provider_day_not_final"
    assert row.drift_nanos == -nanos("4") and row.drift_ratio == Decimal(-4)


def test_ledger_only_and_provider_only_days():
    cells = by_project([CostLine(OCT31, nanos("0.5"), project="proj_a")],
                       [totals(NOV1, "a", "0.25")], ProjectMap({"a": "proj_a"}))
    rows = compare(cells, "project", Decimal("0.02"), lambda d: True, NOW)
    assert [(r.notes, r.drift_ratio) for r in rows] == [
        (("provider_only",), Decimal(1)), (("ledger_only",), None)]


# -- by API key and by line item --------------------------------------------------------


def test_redacted_keys_match_one_known_key_each():
    assert redaction_matches("sk-proj-abcdefWXYZ1234", "sk-proj-abc...1234")
    assert redaction_matches("sk-proj-abcdefWXYZ1234", "sk-proj-****1234")
    assert not redaction_matches("sk-proj-abcdefWXYZ1234", "sk-proj-abc...9999")
    assert not redaction_matches("sk-x1234", "sk...1234")  # too little shown to trust
    known = {"k_one": "sk-proj-aaaa0000one1", "k_two": "sk-proj-bbbb0000two2",
             "k_dup": "sk-proj-cccc0000dup3"}
    listed = [("key_1", "sk-proj-aaa...one1"), ("key_2", "sk-proj-bbb...two2"),
              ("key_3", "sk-proj-ccc...dup3"), ("key_4", "sk-proj-ccc...dup3")]
    assert match_keys(known, listed) == {"k_one": "key_1", "k_two": "key_2"}


def test_by_api_key():
    keys = KeyMap(lambda tenant, key: key, {"k_one": "key_1"})
    provider = [CostLine(NOV1, nanos("1.10"), api_key="key_1"),
                CostLine(NOV1, nanos("0.40"), api_key="key_9")]
    ledger = [totals(NOV1, "a", "1.00", key_id="k_one"),
              totals(NOV1, "b", "0.10", key_id="k_one"),
              totals(NOV1, "c", "0.30", key_id="k_zzz")]
    rows = compare(by_api_key(provider, ledger, keys), "api_key", Decimal("0.02"),
                   lambda d: True, NOW)
    got = {r.group: r for r in rows}
    assert got["key_1"].drift_nanos == 0 and got["key_1"].within
    assert got["key_9"].notes == ("provider_only", "key_unknown_to_faregate")
    assert got["k_zzz"].notes == ("ledger_only", "key_not_matched_to_provider")


def test_line_items_name_families_and_classes():
    resolve = load_price_table().resolve
    assert line_item_group("gpt-4o-mini-2024-07-18, input", resolve) == (
        "gpt-4o-mini, input", True)
    assert line_item_group("gpt-4o-2024-08-06, cached input", resolve) == (
        "gpt-4o, cached_input", True)
    assert line_item_group("gpt-realtime, audio_output_tokens", resolve) == (
        "gpt-realtime, audio_output", True)
    assert line_item_group("Vector store storage", resolve) == ("Vector store storage", False)
    provider = [CostLine(NOV1, nanos("0.15"), line_item="gpt-4o-mini-2024-07-18, input"),
                CostLine(NOV1, nanos("0.02"), line_item="Vector store storage")]
    ledger = [LineItemTotal(NOV1, "a", "gpt-4o-mini", "input", nanos("0.1")),
              LineItemTotal(NOV1, "b", "gpt-4o-mini-2024-07-18", "input", nanos("0.05"))]
    rows = compare(by_line_item(provider, ledger, resolve), "line_item", Decimal("0.02"),
                   lambda d: True, NOW)
    got = {r.group: r for r in rows}
    assert got["gpt-4o-mini, input"].drift_nanos == 0
    assert got["Vector store storage"].notes == ("provider_only", "not_metered_by_faregate")


# -- unseen Realtime cost, attributed ---------------------------------------------------


def delegated(ref, created: datetime, project="proj_acme", seen=None, tenant="acme"):
    ms = int(created.timestamp() * 1000)
    return DelegatedSession(ref, "call", f"fgs_{ref}", tenant, None, None, "gpt-realtime",
                            project, ms, None, seen)


def test_unseen_realtime_cost_is_split_to_the_nano_dollar():
    projects = ProjectMap({"acme": "proj_acme"})
    day = datetime(2026, 10, 31, tzinfo=timezone.utc)
    provider = [
        CostLine(OCT31, nanos("0.600000001"), project="proj_acme",
                 line_item="gpt-realtime-2025-08-28, audio input"),
        CostLine(OCT31, nanos("0.4"), project="proj_acme",
                 line_item="gpt-realtime-2025-08-28, audio output"),
        CostLine(OCT31, nanos("9"), project="proj_acme", line_item="gpt-4o, input"),
        CostLine(NOV1, nanos("0.3"), project="proj_acme", line_item="gpt-realtime, audio input"),
    ]
    # Metered through faregate: $0.100000001 of Realtime on Oct 31 (a sideband session).
    ledger = [totals(OCT31, "acme", "9.1", realtime_nanos=nanos("0.100000001"))]
    sessions = [
        delegated("rtc_b", day + timedelta(hours=9)),
        delegated("rtc_a", day + timedelta(hours=9)),       # same instant: ordered by ref
        delegated("rtc_c", day - timedelta(minutes=30)),    # began before midnight: counts
        delegated("rtc_seen", day + timedelta(hours=10), seen=1),
        delegated("rtc_old", day - timedelta(hours=3)),     # too long before the day
        delegated("rtc_other", day + timedelta(hours=1), project="proj_other"),
    ]
    out = attribute(provider, ledger, sessions, projects, lambda d: d <= OCT31)
    # Oct 31: 0.600000001 + 0.4 - 0.100000001 = 0.9 over three sessions; Nov 1 not final.
    assert [(a.session.ref, a.nanos, a.day) for a in out] == [
        ("rtc_c", 300_000_000, OCT31), ("rtc_a", 300_000_000, OCT31),
        ("rtc_b", 300_000_000, OCT31)]
    assert out[0].at == datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert len({a.record_id for a in out}) == 3 and all(len(a.record_id) == 32 for a in out)
    again = attribute(provider, ledger, sessions, projects, lambda d: d <= OCT31)
    assert [a.record_id for a in again] == [a.record_id for a in out]  # deterministic

    uneven = attribute([CostLine(OCT31, 10, project="proj_acme", line_item="gpt-realtime, x")],
                       [], sessions[:3], projects, lambda d: True)
    assert [a.nanos for a in uneven] == [4, 3, 3]  # remainder to the earliest


def test_no_unseen_session_or_nothing_unseen_attributes_nothing():
    projects = ProjectMap({"acme": "proj_acme"})
    line = CostLine(OCT31, nanos("1"), project="proj_acme", line_item="gpt-realtime, audio")
    metered = [totals(OCT31, "acme", "1", realtime_nanos=nanos("1"))]
    day = datetime(2026, 10, 31, 12, tzinfo=timezone.utc)
    assert attribute([line], metered, [delegated("rtc_x", day)], projects, lambda d: True) == []
    assert attribute([line], [], [], projects, lambda d: True) == []


# -- reservations, expiry and backstops --------------------------------------------------


def test_a_mint_reserves_its_session_at_the_audio_rates():
    table = load_price_table().with_overrides({"rt-test": {
        "input": Decimal(4), "output": Decimal(16), "audio_input": Decimal(32),
        "audio_output": Decimal(64)}})
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    # 300 s x (10 tokens/s x $32 + 20 tokens/s x $64) / 1M = 300 x $0.0016 = $0.48
    assert session_reservation("rt-test", 300, table, at) == nanos("0.48")
    live = load_price_table().with_overrides({"live-test": {"per_second": Decimal("0.002")}})
    assert session_reservation("live-test", 60, live, at) == nanos("0.12")


def test_a_client_secret_expiry_is_bounded():
    assert bound_secret_expiry({"session": {}}, 600) is None  # upstream default: 600 s
    assert bound_secret_expiry({"session": {}}, 60)["expires_after"] == {
        "anchor": "created_at", "seconds": 60}
    assert bound_secret_expiry({"expires_after": {"anchor": "created_at", "seconds": 30}},
                               60) is None
    assert bound_secret_expiry({"expires_after": {"seconds": 7200}}, 60)["expires_after"] == {
        "anchor": "created_at", "seconds": 60}
    assert bound_secret_expiry({"expires_after": {"seconds": "7200"}}, 60)[
        "expires_after"]["seconds"] == 60


def test_backstops_are_budgets_times_the_factor_rounded_up_to_the_cent():
    settings = parse_settings({
        "tiers": {"pro": {"monthly_usd": "333.33"}},
        "tenants": {
            "acme": {"openai_project": "proj_acme", "monthly_usd": "100.005"},
            "globex": {"openai_project": "proj_shared", "tier": "pro"},
            "initech": {"openai_project": "proj_shared", "monthly_usd": 10},
            "hooli": {"openai_project": "proj_none"},
            "nomap": {"monthly_usd": 5},
        },
        "provider": {"backstop_factor": "1.1"},
    })
    got = {(b.project, b.tenants, b.monthly_usd, b.cents) for b in backstops(settings)}
    assert got == {
        ("proj_acme", ("acme",), Decimal("100.005"), 11001),      # 110.0055 -> $110.01
        ("proj_shared", ("globex", "initech"), Decimal("343.33"), 37767),  # 377.663 -> 377.67
    }
