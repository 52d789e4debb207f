"""Operator alerts and the weekly digest reach the audit channel of the fake Discord: each
condition once per UTC day, the digest once per week."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from bot import alerts
from bot.app import create_bot
from core import Caller, ImageRequest, ImageService, ProviderError
from tests.conftest import make_settings
from tests.dashboard.conftest import (
    DAY,
    NEBULA_KEY_ENV,
    NEBULA_MODEL,
    Clock,
    Seeded,
    dashboard_settings,
    seed,
    write_config,
)
from tests.discord_fake import FakeDiscord, logged_in
from tests.emulators import create_emulator
from tests.emulators.base import Fault

from .conftest import TOKEN


def _week(epoch: float) -> int:
    return datetime.fromtimestamp(epoch, UTC).isocalendar()[1]


async def fail_now(seeded: Seeded, times: int) -> None:
    """``times`` NebulaBlock jobs that fail (503) at the clock's current time."""
    for _ in range(times):
        seeded.emulator.inject(Fault(status=503))
        request = ImageRequest(prompt="x", model=f"nebula:{NEBULA_MODEL}", size=(64, 64))
        try:
            await seeded.service.generate(Caller.parse("mcp:alice"), request)
        except ProviderError:
            pass


async def test_alerts_and_digest_post_once(fake_discord: FakeDiscord, tmp_path, monkeypatch):
    fake = fake_discord
    audit = fake.guild.nsfw_channel["id"]
    emulator = create_emulator("nebulablock", image_size=(64, 64), credits=0.5)
    monkeypatch.setenv(NEBULA_KEY_ENV, emulator.api_key)
    sections = dashboard_settings(
        tmp_path,
        discord={"audit_channel_id": int(audit)},
        alerts={"runway_days": 365, "failure_rate": 0.5, "min_jobs": 2, "weekly_digest": True},
    )
    settings = make_settings(tmp_path, **sections)
    clock = Clock()
    posts = rf"/channels/{audit}/messages"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as client:
        service = await ImageService.open(settings, http=client, sweeper=False, clock=clock)
        seeded = Seeded(service, settings, clock, emulator, write_config(tmp_path, settings))
        try:
            await seed(seeded)
            await fail_now(seeded, 2)
            bot = create_bot(service, settings, sync_commands=False)
            async with logged_in(bot, fake, token=TOKEN):
                await alerts.check_once(bot)  # the bot's own loop checks too: both claim once
                for wanted in ("runs dry", "jobs failed in the last hour", "Weekly digest"):
                    await fake.wait_for_call(
                        "POST", posts, predicate=lambda c, w=wanted: w in c.json["content"]
                    )
                assert await alerts.check_once(bot) == 0
                assert len(fake.calls_to("POST", posts)) == 3
                texts = [c.json["content"] for c in fake.calls_to("POST", posts)]
                assert any("nebula" in t and "365" in t for t in texts)
                assert any(f"nebula:{NEBULA_MODEL}: 2 of 2" in t for t in texts)
                assert all(c.json["allowed_mentions"]["parse"] == [] for c in fake.calls_to(
                    "POST", posts))  # fmt: skip
                # The next day the runway alert comes back; the failures are an hour old.
                clock.offset = DAY
                new_week = _week(clock()) != _week(clock() - DAY)  # then a digest too
                assert await alerts.check_once(bot) == 1 + new_week
                assert "runs dry" in fake.calls_to("POST", posts)[3].json["content"]
                assert len(fake.calls_to("POST", posts)) == 4 + new_week
        finally:
            await service.aclose()
