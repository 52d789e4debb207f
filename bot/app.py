"""Running the bot inside an existing asyncio program (``imagegate serve`` does this).

``await start_bot(service, settings)`` connects with the token from the environment variable
named by ``[discord] token_env`` and runs until cancelled; the caller owns ``service``.
"""

from __future__ import annotations

import os

import discord

from core import ConfigError, ImageService, Settings

from . import logs
from .client import ImageBot


def token_from_env(settings: Settings) -> str | None:
    """The bot token from ``$<[discord] token_env>`` (default ``DISCORD_TOKEN``), if set."""
    token = os.environ.get(settings.discord.token_env, "").strip()
    return token or None


def create_bot(
    service: ImageService, settings: Settings, *, sync_commands: bool = True
) -> ImageBot:
    """A bot bound to an open service (not connected yet)."""
    return ImageBot(service, settings, sync_commands=sync_commands)


async def start_bot(service: ImageService, settings: Settings, *, token: str | None = None) -> None:
    """Connect to Discord and serve until cancelled; closes the bot (not the service) on exit.

    Raises:
        ConfigError: no token in the environment, or Discord rejected it.
    """
    token = token or token_from_env(settings)
    if not token:
        raise ConfigError(
            f"no Discord bot token: set the {settings.discord.token_env} environment variable"
            " (see docs/discord.md)"
        )
    logs.install(token)
    bot = create_bot(service, settings)
    async with bot:
        try:
            await bot.start(token)
        except discord.LoginFailure:
            raise ConfigError(
                f"Discord rejected the bot token in {settings.discord.token_env};"
                " copy it again from the Developer Portal (Bot → Reset Token)"
            ) from None
        except discord.PrivilegedIntentsRequired:
            raise ConfigError("Discord refused the gateway intents this bot asked for") from None
