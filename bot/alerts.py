"""Operator alerts and the weekly digest, posted to ``[discord] audit_channel_id``.

Core decides what is due (``ImageService.check_alerts``: each condition at most once per UTC
day for this sink, however many bot processes share the database; ``weekly_digest_due``: once
per ISO week); this only posts what it is handed. The service logs the same alerts by itself,
with or without a bot. The check runs every ``[alerts] check_interval_s`` once the bot is
connected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord

from core import Caller, digest_text

from . import render

if TYPE_CHECKING:
    from .client import ImageBot

log = logging.getLogger("imagegate.bot")

DIGEST_READER = Caller(frontend="bot", user_id="digest", is_admin=True)
SINK = "discord"  # the alerts this posts are claimed under this name (see check_alerts)
MAX_MESSAGE_CHARS = 2000


def wanted(bot: ImageBot) -> bool:
    """Whether there is anything to post, and a channel to post it to."""
    alerts = bot.settings.alerts
    enabled = alerts.runway_days or alerts.failure_rate or alerts.weekly_digest
    return bool(enabled and bot.settings.discord.audit_channel_id)


async def check_once(bot: ImageBot) -> int:
    """Post the alerts due now, and the weekly digest when due; returns how many posts."""
    posts = [f"⚠️ {alert.message}" for alert in await bot.service.check_alerts(SINK)]
    if await bot.service.weekly_digest_due():
        digest = await bot.service.digest(DIGEST_READER, days=7)
        posts.append("📊 Weekly digest\n" + digest_text(digest))
    channel = bot.get_partial_messageable(bot.settings.discord.audit_channel_id or 0)
    for text in posts:
        try:
            await channel.send(
                render.clip(text, MAX_MESSAGE_CHARS),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as exc:
            log.warning("alert post failed (HTTP %s, code %s)", exc.status, exc.code)
    return len(posts)


async def run_forever(bot: ImageBot) -> None:
    """``check_once`` every ``[alerts] check_interval_s``, from when the bot is ready."""
    await bot.wait_until_ready()
    while True:
        try:
            await check_once(bot)
        except Exception:  # a failed check must not stop the next one
            log.exception("alert check failed")
        await asyncio.sleep(bot.settings.alerts.check_interval_s)
