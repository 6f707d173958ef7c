"""Config validation: typed settings, unknown keys rejected with their path."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from faregate.pricing import RATE_KEYS
from faregate.proxy import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    return [str(p) for p in info.value.problems]


def test_defaults_are_a_working_proxy():
    s = parse_settings({})
    assert s.server.listen == "127.0.0.1:8787"
    assert s.server.upstream == "https://api.openai.com"
    assert s.storage.url == "sqlite:///faregate.db"
    assert s.identity.mode == "passthrough"
    assert s.tenants == {}


def test_example_config_is_valid_and_money_is_exact():
    s = load_settings(ROOT / "config.example.toml")
    assert s.tenants["acme"].monthly_usd == Decimal("500.00")
    assert s.tiers["free"].daily_usd == Decimal("1.00")
    assert s.pricing.models["my-model"].cached_input == Decimal("0.10")
    assert isinstance(s.tiers["free"].daily_usd, Decimal)


def test_config_prices_every_rate_the_price_table_knows():
    """`[pricing.models]` accepts exactly pricing's rate keys: a token class added to
    pricing must be priceable from config too (the schema spells them out again)."""
    rates = {key: str(i + 1) for i, key in enumerate(RATE_KEYS)}
    s = parse_settings({"pricing": {"models": {"m": rates}}})
    assert s.pricing.models["m"].rates() == {k: Decimal(v) for k, v in rates.items()}


def test_unknown_keys_are_errors_with_their_path():
    found = problems({
        "tenants": {"acme": {"montly_usd": 5}},
        "server": {"lisen": "x"},
        "keys": [{"tenant": "a", "sha256": "0" * 64, "teir": "pro"}],
    })
    assert "tenants.acme.montly_usd: unknown key (did you mean 'monthly_usd'?)" in found
    assert "server.lisen: unknown key (did you mean 'listen'?)" in found
    assert "keys[0].teir: unknown key (did you mean 'tier'?)" in found


def test_every_error_in_one_pass_with_did_you_mean():
    """An unknown tier is reported beside other errors, not after they are fixed."""
    found = problems({
        "tiers": {"pro": {"daily_usd": "5"}},
        "tenants": {"acme": {"tier": "por", "montly_usd": 5}},
        "keys": [{"tenant": "a", "sha256": "0" * 64, "tier": "gold"}],
        "server": {"max_body_bytes": "big", "journal_dir": "j"},
        "tier": {"free": {}},
    })
    assert "tenants.acme.tier: unknown tier 'por' (did you mean 'pro'?)" in found
    assert "keys[0].tier: unknown tier 'gold'" in found
    assert "tenants.acme.montly_usd: unknown key (did you mean 'monthly_usd'?)" in found
    assert "server.journal_dir: unknown key (it belongs in [storage])" in found
    assert "tier: unknown key (did you mean 'tiers'?)" in found
    assert any(p.startswith("server.max_body_bytes: ") for p in found)
    assert len(found) == 6, found
    # With nothing else wrong, the same tier problems, one line per key.
    assert problems({"tiers": {"pro": {}}, "tenants": {"acme": {"tier": "por"}}}) == [
        "tenants.acme.tier: unknown tier 'por' (did you mean 'pro'?)"]


@pytest.mark.parametrize("data, expected", [
    ({"identity": {"mode": "open"}}, "identity.mode"),
    ({"tiers": {"free": {"daily_usd": "-1"}}}, "tiers.free.daily_usd: must not be negative"),
    ({"keys": [{"tenant": "a"}]}, "keys[0]: give exactly one of sha256 or key_env"),
    ({"keys": [{"tenant": "a", "sha256": "abc"}]}, "keys[0].sha256"),
    ({"server": {"listen": "nowhere"}}, "server.listen: must be HOST:PORT"),
    ({"storage": {"url": "mysql://x"}}, "storage.url"),
    ({"tenants": {"a": {"tier": "gold"}}}, "tenants.a.tier: unknown tier 'gold'"),
    ({"pricing": {"models": {"m": {"input": "-2"}}}}, "pricing.models.m"),
    ({"tenants": {"a": {"monthly_usd": "lots"}}}, "tenants.a.monthly_usd"),
])
def test_invalid_values_name_their_key(data, expected):
    assert any(p.startswith(expected) for p in problems(data)), problems(data)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "faregate.proxy.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=60, env=env,
    )


def test_check_config_ok_and_errors(tmp_path):
    ok = run_cli("check-config", str(ROOT / "config.example.toml"))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "tenants       acme" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[tenants.acme]\nmontly_usd = 5\n[server]\nmax_body_bytes = "big"\n')
    out = run_cli("check-config", str(bad))
    assert out.returncode == 2
    assert "tenants.acme.montly_usd: unknown key" in out.stderr
    assert "server.max_body_bytes" in out.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    out = run_cli("check-config", str(broken))
    assert out.returncode == 2 and "not valid TOML" in out.stderr


TYPOS = """
[identity]
mode = "keys"
[[keys]]
key_env = "TEAM_KEY"
tenant = "search"
[tiers.free]
models = ["gpt-4o-mni", "my-deployment", "my-finetune", "gpt-4o-2024-08-06"]
[pricing.aliases]
my-deployment = "gpt-4o-mini"
[pricing.models."my-finetune"]
input = 1
"""


def test_check_config_uses_serves_discovery_and_warns(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}  # neither OPENAI_API_KEY nor TEAM_KEY
    (tmp_path / "faregate.toml").write_text(TYPOS)
    found = run_cli("check-config", cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("faregate.toml: OK")
    warnings = [line for line in found.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: server.upstream_api_key_env: $OPENAI_API_KEY is not set: keys mode sends "
        "this key upstream for every call, so serve refuses to start without it",
        "warning: keys[0].key_env: $TEAM_KEY is not set: this entry matches no caller",
        "warning: tiers.free.models[0]: 'gpt-4o-mni' is not a model in the price table "
        "(did you mean 'gpt-4o-mini'?)",
    ]
    with_env = run_cli("check-config", cwd=tmp_path,
                       env={**env, "OPENAI_API_KEY": "sk-x", "TEAM_KEY": "fg-x"})
    assert with_env.returncode == 0
    assert [w for w in with_env.stdout.splitlines() if w.startswith("warning: ")] == warnings[2:]

    other = tmp_path / "other.toml"
    other.write_text('[tenants.a]\ntier = "gold"\n')
    by_env = run_cli("check-config", cwd=tmp_path, env={**env, "FAREGATE_CONFIG": str(other)})
    assert by_env.returncode == 2 and "tenants.a.tier: unknown tier 'gold'" in by_env.stderr
    by_flag = run_cli("check-config", "--config", str(other), cwd=tmp_path, env=env)
    assert by_flag.returncode == 2 and str(other) in by_flag.stderr
    nothing = run_cli("check-config", cwd=tmp_path / "..", env=env)
    assert nothing.returncode == 0 and "built-in defaults: OK" in nothing.stdout


def test_check_config_names_a_bad_alias_with_a_suggestion(tmp_path):
    path = tmp_path / "faregate.toml"
    path.write_text('[pricing.aliases]\nmy-deployment = "gpt-4o-mni"\ngpt-4o = "gpt-4o-mini"\n')
    out = run_cli("check-config", str(path))
    assert out.returncode == 2
    assert ("pricing.aliases.my-deployment: unknown model 'gpt-4o-mni' "
            "(did you mean 'gpt-4o-mini'?)") in out.stderr
    assert "pricing.aliases.gpt-4o: 'gpt-4o' has its own prices" in out.stderr


async def test_hot_reload_applies_valid_and_keeps_running_config_on_invalid(
    make_gateway, upstream, tmp_path
):
    key = "fg-reload-key"
    path = tmp_path / "faregate.toml"

    def write(tenant: str, extra: str = "") -> None:
        path.write_text(
            f'[server]\nupstream = "{upstream.url}"\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "r.db"}"\nflush_interval_ms = 20\n'
            f'journal_dir = "{tmp_path / "journal"}"\n'
            f'[[keys]]\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
            f'tenant = "{tenant}"\n{extra}'
        )

    write("first")
    from conftest import start_gateway as start

    gw = await start(load_settings(path), path)
    try:
        client = gw.client(key)
        await client.embeddings.create(model="text-embedding-3-small", input="x")
        await asyncio.sleep(0.05)
        write("second")
        for _ in range(60):
            if gw.state.runtime.settings.keys[0].tenant == "second":
                break
            await asyncio.sleep(0.1)
        await client.embeddings.create(model="text-embedding-3-small", input="x")
        write("third", "bogus = 1\n")
        await asyncio.sleep(2.5)
        assert gw.state.runtime.settings.keys[0].tenant == "second"  # invalid file ignored
        await client.embeddings.create(model="text-embedding-3-small", input="x")
        rows = await gw.ledger_rows(3)
        assert [r.tenant for r in reversed(rows)] == ["first", "second", "second"]
        text = gw.state.metrics.render().decode()
        assert 'faregate_config_reloads_total{result="rejected"} 1.0' in text
    finally:
        await gw.stop()


async def test_a_reload_into_keys_mode_without_the_upstream_key_is_rejected(
    upstream, tmp_path, monkeypatch
):
    from conftest import start_gateway as start

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = tmp_path / "faregate.toml"
    base = (f'[server]\nupstream = "{upstream.url}"\n'
            f'[storage]\nurl = "sqlite:///r.db"\nflush_interval_ms = 20\n')
    path.write_text(base)
    gw = await start(load_settings(path), path)
    try:
        path.write_text(base + '[identity]\nmode = "keys"\n')
        for _ in range(60):
            if 'faregate_config_reloads_total{result="rejected"} 1.0' in await gw.metrics_text():
                break
            await asyncio.sleep(0.1)
        assert gw.state.runtime.settings.identity.mode == "passthrough"
        await gw.client().embeddings.create(model="text-embedding-3-small", input="x")
    finally:
        await gw.stop()
