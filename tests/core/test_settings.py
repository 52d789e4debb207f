"""Settings: precedence, defaults, the example file, and one clear error per bad key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from core import ConfigError, ImageService, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_give_the_placeholder_and_data_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMAGEGATE_CONFIG", raising=False)
    settings = load_settings()
    assert list(settings.providers) == ["placeholder"]
    assert settings.database.path == Path("data/imagegate.db")
    assert settings.source == "built-in defaults"


def test_precedence_flag_then_env_then_local_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name, allowance in (("flag.toml", 1), ("env.toml", 2), ("config.toml", 3)):
        (tmp_path / name).write_text(f"[quota]\nallowance = {allowance}\n")
    monkeypatch.setenv("IMAGEGATE_CONFIG", str(tmp_path / "env.toml"))
    assert load_settings(tmp_path / "flag.toml").quota.allowance == 1
    assert load_settings().quota.allowance == 2
    monkeypatch.delenv("IMAGEGATE_CONFIG")
    assert load_settings().quota.allowance == 3


def test_configured_providers_replace_the_placeholder():
    settings = parse_settings({"providers": {"nb": {"kind": "nebulablock", "models": ["m"]}}})
    assert list(settings.providers) == ["nb"]
    assert settings.providers["nb"].resolved_base_url() == "https://api.nebulablock.com/api/v1"


def test_secrets_come_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-123")
    settings = parse_settings({"providers": {"o": {"kind": "openai", "api_key_env": "MY_KEY"}}})
    assert settings.providers["o"].api_key() == "sk-123"
    assert "sk-123" not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quota": {"period": "year"}}, "[quota] period"),
        ({"quota": {"allowance": -1}}, "[quota] allowance"),
        (
            {"mcp": {"clients": [{"user": "a", "token_sha256": "short"}]}},
            "[mcp.clients.0] token_sha256",
        ),
        ({"bogus": {}}, "bogus: unknown key"),
        ({"quota": {"allowence": 3}}, "[quota] allowence: unknown key; did you mean 'allowance'?"),
        ({"qouta": {}}, "qouta: unknown key; did you mean 'quota'?"),
        (
            {"providers": {"nb": {"kind": "nebulablock", "modles": []}}},
            "[providers.nb] modles: unknown key; did you mean 'models'?",
        ),
        (
            {"mcp": {"clients": [{"user": "a", "token_sha256": "0" * 64, "alowance": 1}]}},
            "[mcp.clients.0] alowance: unknown key; did you mean 'allowance'?",
        ),
        ({"providers": {"x": {"models": []}}}, "[providers.x] kind: required key is missing"),
    ],
)
def test_bad_keys_are_named(data, message):
    with pytest.raises(ConfigError) as info:
        parse_settings(data, source="my.toml")
    assert str(info.value).startswith("my.toml: ") and message in str(info.value)


async def test_a_model_without_a_price_is_a_startup_error(tmp_path):
    settings = parse_settings(
        {
            "database": {"path": str(tmp_path / "d.db")},
            "pricing": {"default": None},
        }
    )
    with pytest.raises(ConfigError, match="no price"):
        await ImageService.open(settings, sweeper=False)


async def test_an_alias_to_an_unknown_model_is_a_startup_error(tmp_path):
    settings = parse_settings(
        {"database": {"path": str(tmp_path / "d.db")}, "aliases": {"a": "x:y"}}
    )
    with pytest.raises(ConfigError, match=r"\[aliases\] a"):
        await ImageService.open(settings, sweeper=False)


def test_the_example_config_is_valid_and_documents_every_section():
    data = tomllib.loads((ROOT / "config.example.toml").read_text())
    settings = parse_settings(data, source="config.example.toml")
    assert set(type(settings).model_fields) - {"source"} <= set(data)


def test_the_example_config_mentions_every_key():
    from core.settings import GuildQuota, MCPClient, ProviderSettings, RoleQuota, Settings

    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", text, flags=re.M))
    documented |= set(re.findall(r"^#?\s*\[\[?[a-z_]+\.([a-z_]+)\]", text, flags=re.M))
    models = [ProviderSettings, MCPClient, GuildQuota, RoleQuota]
    models += [
        f.annotation
        for n, f in Settings.model_fields.items()
        if hasattr(f.annotation, "model_fields")
    ]
    missing = {
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if name not in documented
    }
    assert missing == set()


@pytest.mark.parametrize(
    "data",
    [
        {"providers": {"nb": {"kind": "nebulablock", "api_key_env": "test-nebulablock-key"}}},
        {"providers": {"nb": {"kind": "nebulablock", "api_key_env": "sk-live abc"}}},
        {"discord": {"token_env": "MTA1.Gx7.abc"}},
        {"database": {"url_env": "postgresql://me:pw@db/imagegate"}},
    ],
)
def test_a_secret_where_a_variable_name_belongs_is_refused_at_load(data):
    with pytest.raises(ConfigError) as info:
        parse_settings(data, source="my.toml")
    message = str(info.value)
    assert message.startswith("my.toml: [") and "must be the NAME of an environment" in message
    assert "put the secret in the environment" in message
    secret = next(iter(data.values()))
    assert not any(v in message for v in _strings(secret) if v not in ("nebulablock",))


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return [value] if isinstance(value, str) else []
