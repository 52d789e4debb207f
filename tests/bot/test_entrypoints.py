"""``python -m bot`` / ``imagegate bot`` / ``bot.app.start_bot``, and secrets in logs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import discord
import pytest

from bot.__main__ import run_bot
from bot.app import start_bot
from bot.logs import RedactSecrets
from core import ConfigError, ImageService
from core.cli import main as cli_main
from tests.bot.conftest import FOLLOWUP, TOKEN, bot_settings, running
from tests.discord_fake import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]


def test_run_bot_without_a_token_says_so(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert run_bot(bot_settings(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN" in err and "Traceback" not in err


def test_imagegate_bot_without_a_token(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("MY_BOT_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\npath = "{tmp_path / "db.sqlite"}"\n[discord]\ntoken_env = "MY_BOT_TOKEN"\n'
    )
    assert cli_main(["--config", str(config), "bot"]) == 2
    assert "MY_BOT_TOKEN" in capsys.readouterr().err


def test_python_m_bot_without_a_token_exits_non_zero_without_traceback(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "db.sqlite"}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert out.returncode != 0
    assert "DISCORD_TOKEN" in out.stderr and "Traceback" not in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert bad.returncode != 0 and "not found" in bad.stderr and "Traceback" not in bad.stderr


async def test_the_token_never_appears_in_the_logs(
    fake_discord: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    fake = fake_discord
    caplog.set_level(logging.DEBUG)
    async with running(fake, bot_settings(tmp_path)) as env:
        handle = await fake.slash("imagine", {"prompt": "logs"})
        await fake.wait_for_call("POST", FOLLOWUP, predicate=lambda c: bool(c.files))
        fake.fail_next("POST", FOLLOWUP, 500)
        broken = await fake.slash("imagine", {"prompt": "a failure"})
        await fake.wait_until(lambda: broken.original_message is not None, 5, "x")
        assert handle.callback is not None and await env.remaining(fake.user) <= 49
    assert fake.identify_payloads[0]["token"] == TOKEN  # it was really used ...
    assert TOKEN not in caplog.text  # ... and never logged, not even at DEBUG
    assert "discord.http" in {r.name for r in caplog.records}


def test_redaction_filter_hides_tokens_in_urls():
    redact = RedactSecrets(TOKEN)
    record = logging.LogRecord(
        "discord.http",
        logging.DEBUG,
        __file__,
        1,
        "POST https://discord.com/api/v10/webhooks/123/%s with %s",
        ("aW50ZXJhY3Rpb246MTIzNDU2Nzg5", TOKEN),
        None,
    )
    assert redact.filter(record)
    message = record.getMessage()
    assert "aW50ZXJhY3Rpb246MTIzNDU2Nzg5" not in message and TOKEN not in message
    assert "/webhooks/123/[token]" in message


async def test_start_bot_serves_until_cancelled(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    settings = bot_settings(tmp_path)
    async with await ImageService.open(settings, sweeper=False) as service:
        task = asyncio.create_task(start_bot(service, settings, token=TOKEN))
        await fake.wait_until(lambda: fake.connected and fake.commands, 10, "bot connected")
        handle = await fake.slash("quota")
        await fake.wait_until(lambda: bool((handle.original_message or {}).get("content")), 5, "q")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_start_bot_with_a_rejected_token_is_a_config_error(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch
):
    fake = fake_discord
    settings = bot_settings(tmp_path)
    fake.fail_next("GET", r"/users/@me", 401, {"code": 0, "message": "401: Unauthorized"})
    async with await ImageService.open(settings, sweeper=False) as service:
        with pytest.raises(ConfigError) as info:
            await start_bot(service, settings, token=TOKEN)
        assert TOKEN not in str(info.value)
        monkeypatch.delenv("DISCORD_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
            await start_bot(service, settings)


@pytest.mark.parametrize(
    ("base", "cause"),
    [
        ("http://127.0.0.1:{port}/api/v10", "cannot reach 127.0.0.1:{port}: connection refused"),
        ("https://imagegate-test.invalid/api/v10", "cannot reach imagegate-test.invalid: DNS"),
    ],
)
@pytest.mark.parametrize("verbose", [False, True])
def test_an_unreachable_discord_is_named_and_v_shows_the_cause(
    tmp_path: Path, monkeypatch, capsys, caplog, base: str, cause: str, verbose: bool
):
    port = _closed_port()
    monkeypatch.setattr(discord.http.Route, "BASE", base.format(port=port))
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    # discord.py warns once per process about voice libraries; make this run the first.
    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True)
    args = argparse.Namespace(verbose=verbose)
    assert run_bot(bot_settings(tmp_path), args) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"imagegate bot: {cause.format(port=port)}")
    assert line.endswith("run with -v for details") is not verbose
    if verbose:  # the cause, traceback and all, goes to the log
        assert any(r.exc_info and r.message == "bot stopped" for r in caplog.records)
    assert "voice will NOT be supported" not in caplog.text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
