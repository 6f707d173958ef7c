"""Reconciling with the OpenAI bill, as an operator runs it: `faregate reconcile`,
`faregate sync-limits` and `/admin/reconcile`, against a fake Admin API started
in-process and a real ledger (SQLite; the storage reads on PostgreSQL too).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from fake_admin import ADMIN_KEY, Cost, admin, nanos  # noqa: F401 (admin: a fixture)
from faregate.storage import (
    DelegatedEvent,
    LedgerRecord,
    Ledger,
    LimitChange,
    Reconciliation,
    SessionRecord,
)

OCT30, OCT31, NOV1 = date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1)
MINI_IN = "gpt-4o-mini-2024-07-18, input"


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)


def charge(day: date, tenant: str, usd: str, **kw) -> LedgerRecord:
    kw.setdefault("breakdown", {"input": nanos(usd)})
    return LedgerRecord(tenant=tenant, model=kw.pop("model", "gpt-4o-mini"),
                        endpoint=kw.pop("endpoint", "/v1/chat/completions"), status=200,
                        cost_nanos=nanos(usd), ts=kw.pop("ts", at(day)), **kw)


@pytest.fixture
def faregate(capsys, monkeypatch):
    """`faregate …` in this process (on a thread, so the fake Admin API on the test's
    loop keeps answering): (exit code, stdout, stderr)."""
    from faregate.proxy.cli import main

    async def run(*args: str, env: dict | None = None) -> tuple[int, str, str]:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            capsys.readouterr()
            code = await asyncio.to_thread(main, list(args))
            out = capsys.readouterr()
        return code, out.out, out.err
    return run


async def console_script(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("faregate")
    proc = await asyncio.create_subprocess_exec(
        str(exe), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


def write_config(path: Path, db: Path, admin_url: str, extra: str = "") -> Path:
    path.write_text(f"""
[storage]
url = "sqlite:///{db}"

[provider]
admin_url = "{admin_url}"
final_after_hours = 24

[tenants.acme]
openai_project = "proj_acme"
monthly_usd = 100

[tenants.globex]
openai_project = "proj_globex"
monthly_usd = "12.34"
{extra}
""")
    return path


async def fill(url: str, records: list) -> None:
    ledger = await Ledger.open(url)
    try:
        for r in records:
            ledger.record(r)
        await ledger.flush()
    finally:
        await ledger.close()


# -- the ledger's side, on both backends ----------------------------------------------


async def test_ledger_daily_totals_and_delegated_sessions(ledger_url):
    day_ms = int(at(OCT31).timestamp() * 1000)
    records = [
        charge(OCT31, "acme", "1.5"),
        charge(OCT31, "acme", "0.25", estimated=True, flags=("usage_missing",)),
        charge(OCT31, "acme", "0.125", flags=("unconfirmed",), key_id="k_abc"),
        charge(OCT31, "acme", "0.5", endpoint="/v1/realtime", model="gpt-realtime",
               breakdown={"audio_input": nanos("0.2"), "audio_output": nanos("0.3")}),
        charge(OCT31, "acme", "0.0625", endpoint="/v1/realtime/calls", flags=("from_provider",),
               breakdown={"from_provider": nanos("0.0625")}),
        charge(OCT31, "globex", "0", priced=False, breakdown={}),
        charge(NOV1, "acme", "2", ts=datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)),
        charge(NOV1, "acme", "9", ts=datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)),
        SessionRecord(id="fgs_call", tenant="acme", model="gpt-realtime",
                      endpoint="/v1/realtime/calls", started_at=at(OCT31), ended_at=at(OCT31),
                      end_reason="delegated"),
        DelegatedEvent("rtc_1", "created", "call", "fgs_call", "acme", "gpt-realtime",
                       project="proj_acme", at=at(OCT31)),
        DelegatedEvent("rtc_2", "created", "call", "fgs_call2", "acme", "gpt-realtime",
                       at=at(OCT31, 13)),
        DelegatedEvent("rtc_1", "seen", "call", "fgs_side", "acme", "gpt-realtime",
                       at=at(OCT31, 14)),
        DelegatedEvent("rtc_1", "seen", "call", "fgs_again", "acme", "gpt-realtime",
                       at=at(OCT31, 15)),  # the same id: a repeat is ignored
        LimitChange("proj_acme", ("acme",), None, 11000, "applied", at=at(OCT31)),
    ]
    await fill(ledger_url, records)
    ledger = await Ledger.open(ledger_url)
    try:
        got = {(t.day, t.tenant, t.key_id): t for t in await ledger.daily_totals(OCT31, NOV1)}
        acme = got[(OCT31, "acme", None)]
        assert acme.cost_nanos == nanos("2.3125") and acme.charges == 4
        assert (acme.estimated, acme.estimated_nanos) == (1, nanos("0.25"))
        assert acme.realtime_nanos == nanos("0.5")  # from_provider is not "metered"
        assert acme.from_provider_nanos == nanos("0.0625")
        assert got[(OCT31, "acme", "k_abc")].unconfirmed_nanos == nanos("0.125")
        assert got[(OCT31, "globex", None)].unpriced == 1
        assert got[(NOV1, "acme", None)].cost_nanos == nanos("2")  # Nov 2 is outside
        items = {(i.day, i.model, i.item): i.nanos for i in await ledger.line_item_totals(
            OCT31, OCT31) if i.tenant == "acme"}
        assert items[(OCT31, "gpt-4o-mini", "input")] == nanos("1.875")
        assert items[(OCT31, "gpt-realtime", "audio_output")] == nanos("0.3")
        sessions = await ledger.delegated_sessions(at(OCT30), at(NOV1))
        assert [(s.ref, s.project, s.seen_ms) for s in sessions] == [
            ("rtc_1", "proj_acme", day_ms + 2 * 3_600_000), ("rtc_2", None, None)]
        first = Reconciliation(OCT31, "project", "proj_acme", nanos("1"), nanos("1.5"),
                               notes=("estimated: 1 calls, $0.250000",), within=False)
        await ledger.save_reconciliations([first])
        await ledger.save_reconciliations([Reconciliation(  # a re-run replaces the row
            OCT31, "project", "proj_acme", nanos("1.5"), nanos("1.5"))])
        [stored] = await ledger.reconciliations("project", OCT31, OCT31)
        assert (stored.ledger_nanos, stored.within, stored.notes) == (nanos("1.5"), True, ())
        assert await ledger.reconciliations("line_item") == []
        [change] = await ledger.limit_changes()
        assert (change.project, change.tenants, change.old_cents) == ("proj_acme", ("acme",),
                                                                      None)
        assert not await ledger.claim_charge(records[0])  # already there: not claimed
        fresh = charge(OCT31, "acme", "0.01", flags=("from_provider",))
        assert await ledger.claim_charge(fresh) and not await ledger.claim_charge(fresh)
        assert fresh.id in {r.id for r in await ledger.logs(limit=100)}
    finally:
        await ledger.close()


# -- faregate reconcile --------------------------------------------------------------


def past_days_ledger() -> list:
    return [
        charge(OCT31, "acme", "1.000000001"), charge(OCT31, "acme", "0.2"),
        charge(NOV1, "acme", "3.5"),
        charge(NOV1, "globex", "2.0", estimated=True, flags=("usage_missing",)),
        charge(NOV1, "globex", "0.5"),
        charge(NOV1, "default", "0.4"),
    ]


def past_days_bill() -> list[Cost]:
    return [
        Cost(OCT31, Decimal("1.200000001"), "proj_acme", MINI_IN),  # exact match
        Cost(NOV1, Decimal("3.3"), "proj_acme", MINI_IN),  # ledger 3.5: 6.06 % above
        Cost(NOV1, Decimal("0.1"), "proj_acme", "gpt-4o-mini-2024-07-18, output"),
        Cost(NOV1, Decimal("2.55"), "proj_globex", MINI_IN),  # 0.05 / 2.55 = 1.96 %: in
        Cost(NOV1, Decimal("0.4"), "proj_default", MINI_IN),  # unmapped vs default tenant
    ]


async def test_reconcile_prints_the_drift_table_and_exits_3_past_the_tolerance(
        admin, tmp_path):
    faregate = console_script
    db = tmp_path / "ledger.db"
    await fill(f"sqlite:///{db}", past_days_ledger())
    admin.costs = past_days_bill()
    admin.fail_next = [429, 502, 503]  # retried with backoff by the SDK
    config = write_config(tmp_path / "faregate.toml", db, admin.url)
    code, out, err = await faregate("reconcile", "--config", str(config), "--from",
                                    "2026-10-31", "--to", "2026-11-01", "--format", "json")
    assert code == 3, err
    report = json.loads(out)
    rows = {(r["date"], r["group"]): r for r in report["rows"]}
    assert rows[("2026-10-31", "proj_acme")] == {
        "date": "2026-10-31", "group": "proj_acme", "ledger_usd": "1.200000001",
        "provider_usd": "1.200000001", "drift_usd": "0.000000", "drift_ratio": "0.000000",
        "notes": [], "final": True, "within": True, "tenants": "acme"}
    nov_acme = rows[("2026-11-01", "proj_acme")]  # -0.1 / 3.4 = -2.94 %
    assert (nov_acme["ledger_usd"], nov_acme["provider_usd"], nov_acme["drift_usd"],
            nov_acme["drift_ratio"], nov_acme["within"]) == (
        "3.500000", "3.400000", "-0.100000", "-0.029412", False)
    globex = rows[("2026-11-01", "proj_globex")]
    assert (globex["drift_usd"], globex["drift_ratio"], globex["within"]) == (
        "0.050000", "0.019608", True)  # 0.05 / 2.55
    assert globex["notes"] == ["estimated: 1 calls, $2.000000"]
    assert rows[("2026-11-01", "unmapped")]["notes"] == ["unmapped_project: proj_default"]
    assert report["within_tolerance"] is False
    assert len(admin.calls("/costs")) == 4  # three refusals retried, then one page
    assert all(r.authorization == f"Bearer {ADMIN_KEY}" for r in admin.requests)
    assert ADMIN_KEY not in out + err


async def test_reconcile_exit_codes_table_and_csv(admin, tmp_path, faregate):
    db = tmp_path / "ledger.db"
    await fill(f"sqlite:///{db}", past_days_ledger())
    admin.costs = [c for c in past_days_bill() if c.day == OCT31]
    config = write_config(tmp_path / "faregate.toml", db, admin.url)
    args = ("reconcile", "--config", str(config), "--from", "2026-10-31", "--to", "2026-10-31")
    code, out, err = await faregate(*args)
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "date", "group", "ledger_usd", "provider_usd", "drift_usd", "drift", "status", "notes"]
    assert "proj_acme (acme)" in out and " ok" in out

    admin.costs = [Cost(NOV1, Decimal("3.4"), "proj_acme", MINI_IN)]  # ledger has 3.5
    code, out, err = await faregate("reconcile", "--config", str(config), "--from", "2026-11-01",
                                    "--to", "2026-11-01", "--format", "csv")
    assert code == 3, err
    lines = out.splitlines()
    assert lines[0] == ("date,group,ledger_usd,provider_usd,drift_usd,drift_ratio,final,"
                        "within,notes")
    assert "2026-11-01,proj_acme,3.500000,3.400000,-0.100000,-0.029412,true,false," in out

    ledger = await Ledger.open(f"sqlite:///{db}")
    try:
        stored = await ledger.reconciliations("project", OCT31, NOV1)
    finally:
        await ledger.close()
    assert {(r.day, r.group, r.within) for r in stored} >= {
        (OCT31, "proj_acme", True), (NOV1, "proj_acme", False)}


async def test_pages_across_a_month_boundary_are_all_read(admin, tmp_path, faregate):
    db = tmp_path / "ledger.db"
    await fill(f"sqlite:///{db}", [charge(date(2026, 10, 1), "acme", "0.01"),
                                   charge(OCT31, "acme", "0.02"),
                                   charge(date(2026, 11, 9), "acme", "0.04")])
    admin.costs = [Cost(date(2026, 10, 1), Decimal("0.01"), "proj_acme"),
                   Cost(OCT31, Decimal("0.02"), "proj_acme"),
                   Cost(date(2026, 11, 9), Decimal("0.04"), "proj_acme")]
    config = write_config(tmp_path / "faregate.toml", db, admin.url)
    code, out, err = await faregate("reconcile", "--config", str(config), "--from",
                                    "2026-10-01", "--to", "2026-11-09", "--format", "json")
    assert code == 0, err
    pages = admin.calls("/costs")
    assert [dict(p.query).get("page") for p in pages] == [None, "31"]  # Oct 1-31, Nov 1-9
    report = json.loads(out)
    assert [(r["date"], r["provider_usd"]) for r in report["rows"]] == [
        ("2026-10-01", "0.010000"), ("2026-10-31", "0.020000"), ("2026-11-09", "0.040000")]
    assert report["provider_usd"] == report["ledger_usd"] == "0.070000"


async def test_reconcile_by_line_item_and_by_api_key(admin, tmp_path, faregate, monkeypatch):
    monkeypatch.setenv("ACME_KEY", "sk-proj-acme00000000key1")
    db = tmp_path / "ledger.db"
    await fill(f"sqlite:///{db}", [
        charge(OCT31, "acme", "0.3", key_id="k_" + __import__("hashlib").sha256(
            b"sk-proj-acme00000000key1").hexdigest()[:12],
            breakdown={"input": nanos("0.1"), "output": nanos("0.2")})])
    admin.costs = [Cost(OCT31, Decimal("0.1"), "proj_acme", MINI_IN, "key_acme"),
                   Cost(OCT31, Decimal("0.2"), "proj_acme", "gpt-4o-mini-2024-07-18, output",
                        "key_acme"),
                   Cost(OCT31, Decimal("0.05"), "proj_acme", "Vector store storage", "key_acme")]
    admin.projects = ["proj_acme"]
    admin.api_keys = {"proj_acme": [("key_acme", "sk-proj-acm...key1")]}
    extra = '\n[[keys]]\nkey_env = "ACME_KEY"\ntenant = "acme"\n'
    config = write_config(tmp_path / "faregate.toml", db, admin.url, extra)
    base = ("reconcile", "--config", str(config), "--from", "2026-10-31", "--to", "2026-10-31",
            "--format", "json")
    code, out, err = await faregate(*base, "--by", "line_item")
    assert code == 3, err  # storage costs faregate does not meter
    rows = {r["group"]: r for r in json.loads(out)["rows"]}
    assert rows["gpt-4o-mini, input"]["drift_usd"] == "0.000000"
    assert rows["gpt-4o-mini, output"]["drift_usd"] == "0.000000"
    assert rows["Vector store storage"]["notes"] == ["provider_only", "not_metered_by_faregate"]
    code, out, err = await faregate(*base, "--by", "api_key")
    assert code == 3, err  # 0.05 of 0.35 billed to the key was not metered
    [row] = json.loads(out)["rows"]
    assert (row["group"], row["ledger_usd"], row["provider_usd"]) == (
        "key_acme", "0.300000", "0.350000")


async def test_admin_api_failures_are_reported_without_the_key(admin, tmp_path, faregate):
    config = write_config(tmp_path / "faregate.toml", tmp_path / "l.db", admin.url)
    admin.fail_next = [500] * 20
    code, out, err = await faregate("reconcile", "--config", str(config))
    assert code == 1 and "Admin API costs: HTTP 500" in err
    assert len(admin.calls("/costs")) == 5  # the first try and four retries
    code, _, err = await faregate("reconcile", "--config", str(config),
                                  env={"OPENAI_ADMIN_KEY": "sk-wrong"})
    assert code == 1 and "HTTP 401" in err and "sk-wrong" not in err
    code, _, err = await faregate("reconcile", "--config", str(config),
                                  env={"OPENAI_ADMIN_KEY": ""})
    assert code == 2 and "OPENAI_ADMIN_KEY" in err
    code, _, err = await faregate("reconcile", "--config", str(config), "--from", "2026-11-02",
                                  "--to", "2026-11-01")
    assert code == 2 and "--from" in err


# -- faregate sync-limits ---------------------------------------------------------------


async def test_sync_limits_dry_run_then_apply(admin, tmp_path, faregate):
    db = tmp_path / "ledger.db"
    admin.limits = {"proj_globex": 1358}  # already 12.34 x 1.1 = $13.574 -> $13.58
    config = write_config(tmp_path / "faregate.toml", db, admin.url)
    code, out, err = await faregate("sync-limits", "--config", str(config))
    assert code == 0, err
    assert admin.limit_updates == []
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert lines["proj_acme"][2:] == ["100", "none", "$110.00", "would", "set"]
    assert lines["proj_globex"][2:] == ["12.34", "$13.58", "$13.58", "unchanged"]
    assert "--apply" in out

    code, out, err = await faregate("sync-limits", "--config", str(config), "--apply")
    assert code == 0, err
    assert admin.limit_updates == [("proj_acme", 11000)]
    ledger = await Ledger.open(f"sqlite:///{db}")
    try:
        [change] = await ledger.limit_changes()
    finally:
        await ledger.close()
    assert (change.project, change.old_cents, change.new_cents, change.result) == (
        "proj_acme", None, 11000, "applied")
    code, out, _ = await faregate("sync-limits", "--config", str(config), "--apply")
    assert code == 0 and admin.limit_updates == [("proj_acme", 11000)]
    assert out.count("unchanged") == 2


# -- /admin/reconcile ---------------------------------------------------------------------


async def test_admin_reconcile_serves_stored_results(make_gateway, monkeypatch):
    monkeypatch.setenv("FAREGATE_ADMIN_TOKEN", "admin-secret")
    gw = await make_gateway()
    await gw.state.ledger.save_reconciliations([
        Reconciliation(OCT31, "project", "proj_acme", nanos("1"), nanos("1.5"), within=False),
        Reconciliation(NOV1, "project", "unmapped", nanos("2"), nanos("2")),
        Reconciliation(NOV1, "line_item", "gpt-4o, input", nanos("2"), nanos("2")),
    ])
    url = gw.url + "/admin/reconcile"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 401
        auth = {"Authorization": "Bearer admin-secret"}
        async with http.get(url, params={"from": "2026-10-01", "to": "2026-11-30"},
                            headers=auth) as resp:
            body = await resp.json()
        assert [(r["date"], r["group"], r["drift_usd"]) for r in body["rows"]] == [
            ("2026-10-31", "proj_acme", "0.500000"), ("2026-11-01", "unmapped", "0.000000")]
        assert body["within_tolerance"] is False and body["tolerance"] == "0.02"
        async with http.get(url, params={"by": "line_item", "from": "2026-11-01",
                                         "format": "csv"}, headers=auth) as resp:
            text = await resp.text()
        assert text.splitlines()[1].startswith("2026-11-01,\"gpt-4o, input\",2.000000")
        async with http.get(url, params={"by": "user"}, headers=auth) as resp:
            assert resp.status == 400
