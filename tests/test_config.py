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
    assert "tenants.acme.montly_usd: unknown key" in found
    assert "server.lisen: unknown key" in found
    assert "keys[0].teir: unknown key" in found


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


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "faregate.proxy.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=60,
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
