"""Fixtures for the bot tests: the fake Discord, an ImageService on a temporary database, and
a real ``ImageBot`` logged in against the fake."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_bot
from bot.client import ImageBot
from core import Caller, ImageService, Settings
from tests.conftest import make_settings, png_bytes
from tests.discord_fake import FakeDiscord, FakeUser, logged_in
from tests.discord_fake.fixtures import fake_discord  # noqa: F401  (fixture)

CALLBACK = r"/interactions/\d+/[^/]+/callback"
FOLLOWUP = r"/webhooks/\d+/[^/]+"
TOKEN = "fake-token-MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.sEcReT_bot_token_value_xyz"

__all__ = ["png_bytes"]


def bot_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Test settings: temporary database and images, progress edits as fast as allowed."""
    discord_section = {"progress_interval_s": 0.5, **sections.pop("discord", {})}
    return make_settings(tmp_path, discord=discord_section, **sections)


class Running:
    """A logged-in bot, its service and the fake, with small helpers for the tests."""

    def __init__(self, bot: ImageBot, service: ImageService, fake: FakeDiscord) -> None:
        self.bot = bot
        self.service = service
        self.fake = fake

    async def remaining(self, user: FakeUser) -> int:
        status = await self.service.quota(Caller(frontend="discord", user_id=str(user.id)))
        return status.remaining


@contextlib.asynccontextmanager
async def running(
    fake: FakeDiscord, settings: Settings, *, token: str = TOKEN
) -> AsyncIterator[Running]:
    """Open a service, start a bot against ``fake``, yield both; close both afterwards."""
    service = await ImageService.open(settings, sweeper=False)
    try:
        bot = create_bot(service, settings)
        async with logged_in(bot, fake, token=token):
            yield Running(bot, service, fake)
    finally:
        await service.aclose()


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **sections: bot_settings(tmp_path, **sections)


@pytest.fixture
async def env(fake_discord: FakeDiscord, tmp_path: Path) -> AsyncIterator[Running]:  # noqa: F811
    """A bot with default settings (placeholder provider, 50 credits a day)."""
    async with running(fake_discord, bot_settings(tmp_path)) as env:
        yield env


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Every button of a message dict, row by row."""
    return [c for row in message.get("components", []) for c in row.get("components", [])]


def labels(message: dict[str, Any]) -> list[str]:
    return [b.get("label") for b in buttons(message)]


def custom_id(message: dict[str, Any], label: str) -> str:
    return next(b["custom_id"] for b in buttons(message) if b.get("label") == label)


class ProviderGate:
    """Holds the placeholder provider's calls until ``open()``; counts the calls started."""

    def __init__(self, service: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.started = 0
        self.times: list[float] = []
        for model in service.registry.models.values():
            original = model.do_generate

            async def held(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.started += 1
                self.times.append(time.monotonic())
                await self.opened.wait()
                return await _original(*args, **kwargs)

            monkeypatch.setattr(model, "do_generate", held)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate(env: Running, monkeypatch: pytest.MonkeyPatch) -> ProviderGate:  # noqa: F811
    """The ``env`` bot's provider, held until the test opens the gate (no sleeps needed)."""
    return ProviderGate(env.service, monkeypatch)
