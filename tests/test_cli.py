"""`faregate report` and `faregate prices`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from faregate.storage import human_usd

HELLO = [{"role": "user", "content": "one two three"}]


def faregate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("faregate")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "faregate.proxy.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


async def test_report_shows_exact_costs_by_tenant_and_model(make_gateway, tmp_path):
    import hashlib

    keys = [
        {"sha256": hashlib.sha256(b"sk-acme").hexdigest(), "tenant": "acme"},
        {"sha256": hashlib.sha256(b"sk-globex").hexdigest(), "tenant": "globex"},
    ]
    prices = {"models": {"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}}
    gw = await make_gateway({"keys": keys, "pricing": prices})
    for key, n in (("sk-acme", 3), ("sk-globex", 1)):
        for _ in range(n):
            await gw.client(key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await gw.ledger_rows(4)
    await gw.state.ledger.flush()

    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\n')
    out = faregate("report", "--config", str(config), "--period", "today", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    by_tenant = {r["tenant"]: r for r in report["rows"]}
    per_call = (10 * Decimal("0.15") + 20 * Decimal("0.60")) / 1_000_000  # 3 words + 7 in
    assert by_tenant["acme"]["requests"] == 3
    assert Decimal(by_tenant["acme"]["cost_usd"]) == 3 * per_call
    assert Decimal(by_tenant["globex"]["cost_usd"]) == per_call
    assert Decimal(report["total_cost_usd"]) == 4 * per_call

    table = faregate("report", "--config", str(config), "--by", "model")
    assert table.returncode == 0, table.stderr
    assert "gpt-4o-mini" in table.stdout

    csv_out = faregate("report", "--config", str(config), "--by", "endpoint", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("endpoint,")
    assert "/v1/chat/completions" in csv_out.stdout


def test_prices_lists_the_table_with_sources(tmp_path):
    out = faregate("prices", "--model", "gpt-4o", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "gpt-4o" in out.stdout and "http" in out.stdout
    everything = faregate("prices", cwd=tmp_path)
    for family in ("gpt-4o-mini", "gpt-realtime", "whisper-1", "text-embedding-3-small"):
        assert family in everything.stdout


def test_migrate_creates_the_ledger(tmp_path):
    out = faregate("migrate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "faregate.db").exists()


async def test_report_top_users_with_savings_and_margin(make_gateway, tmp_path):
    gw = await make_gateway({"identity": {"allow_header_identity": True},
                             "tenants": {"acme": {"markup": "0.5"}}})
    client = gw.client()
    for tenant, user, cache in (("acme", "alice", True), ("acme", "alice", False),
                                ("globex", "alice", False)):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, user="cache-hit" if cache else "x",
            extra_headers={"x-faregate-tenant": tenant, "x-faregate-user": user})
    rows = await gw.ledger_rows(3)
    await gw.state.ledger.flush()
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\n')

    out = faregate("report", "--config", str(config), "--by", "user", "--top", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TENANT/USER", "REQUESTS", "INPUT", "OUTPUT", "CACHED",
                                "COST", "USD", "SAVED", "USD", "BILLED", "USD", "MARGIN", "USD"]
    assert len(lines[1]) == len(lines[0])  # the rule is as wide as the aligned header
    assert lines[2].split()[0] == "acme/alice" and "(top 1 of 2; TOTAL covers all)" in out.stdout
    acme = [r for r in rows if r.tenant == "acme"]
    assert lines[3] == lines[1]
    total = lines[4].split()  # the TOTAL line follows the second rule
    assert total[0] == "TOTAL" and total[1] == "3"
    margin = sum(r.billed_nanos - r.cost_nanos for r in acme)
    saved = sum(r.savings_nanos for r in rows)
    # for people: cents from $1, 4 significant digits below
    assert saved > 0 and total[-3] == human_usd(saved) and total[-1] == human_usd(margin)
    assert total[-3].startswith("$0.") and len(total[-3].lstrip("$0.")) <= 4
    exact = faregate("report", "--config", str(config), "--by", "user", "--top", "1",
                     "--exact").stdout.splitlines()[4].split()
    assert Decimal(exact[-1]) == Decimal(margin).scaleb(-9)
    assert Decimal(exact[-3]) == Decimal(saved).scaleb(-9)

    as_json = json.loads(faregate("report", "--config", str(config), "--by", "user",
                                  "--format", "json").stdout)
    assert {(r["tenant"], r["user"]) for r in as_json["rows"]} == {
        ("acme", "alice"), ("globex", "alice")}
    assert Decimal(as_json["total_margin_usd"]) == Decimal(margin).scaleb(-9)


def test_report_groups_by_a_tag_and_refuses_unknown_groupings(tmp_path):
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "l.db"}"\n')
    assert faregate("migrate", "--config", str(config)).returncode == 0
    ok = faregate("report", "--config", str(config), "--by", "tag:feature")
    assert ok.returncode == 0 and ok.stdout.startswith("TAG:FEATURE"), ok.stderr
    bad = faregate("report", "--config", str(config), "--by", "colour")
    assert bad.returncode == 2 and "tag:<key>" in bad.stderr


async def test_report_and_migrate_read_the_ledger_beside_their_config(upstream, tmp_path):
    """`--config other/faregate.toml` finds other/faregate.db from any directory, and
    says which ledger it read; it never creates an empty one elsewhere."""
    from conftest import start_gateway
    from faregate.proxy import load_settings

    other = tmp_path / "other"
    other.mkdir()
    config = other / "faregate.toml"
    config.write_text(f'[server]\nupstream = "{upstream.url}"\nlisten = "127.0.0.1:0"\n'
                      '[storage]\nurl = "sqlite:///faregate.db"\nflush_interval_ms = 20\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    migrated = faregate("migrate", "--config", "../other/faregate.toml", cwd=elsewhere)
    assert migrated.returncode == 0, migrated.stderr
    assert f"sqlite:///{other / 'faregate.db'}" in migrated.stdout

    gw = await start_gateway(load_settings(config), config)  # as `serve --config` would
    try:
        for _ in range(2):
            await gw.client().chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        await gw.ledger_rows(2)
    finally:
        await gw.stop()
    assert (other / "faregate-journal").is_dir()

    out = faregate("report", "--config", "other/faregate.toml", "--format", "json",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"][0]["requests"] == 2
    assert f"ledger: sqlite:///{other / 'faregate.db'}" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "other"]
    assert list(elsewhere.iterdir()) == []

    empty = tmp_path / "empty.toml"
    empty.write_text('[storage]\nurl = "sqlite:///nothing-here.db"\n')
    missing = faregate("report", "--config", str(empty), cwd=elsewhere)
    assert missing.returncode == 2
    assert f"no ledger at {tmp_path / 'nothing-here.db'}" in missing.stderr
    assert not (tmp_path / "nothing-here.db").exists()


def test_migrate_and_report_name_a_postgres_ledger_without_its_password(pg_database, tmp_path):
    url = pg_database.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    config = tmp_path / "faregate.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n')
    for command in ("migrate", "report"):
        out = faregate(command, "--config", str(config))
        assert out.returncode == 0, out.stderr
        assert "postgresql://postgres:***@" in out.stdout + out.stderr
        assert "s3cret" not in out.stdout + out.stderr


def test_version_and_help_stand_on_their_own():
    from importlib.metadata import version as installed

    version = faregate("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"faregate {installed('faregate')}"
    helped = faregate("--help")
    assert helped.returncode == 0
    for text in ("DESIGN", "§", "shared/"):
        assert text not in helped.stdout
    assert "$FAREGATE_CONFIG" in helped.stdout and "--version" in helped.stdout
