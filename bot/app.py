"""Running the bot inside an existing asyncio program (``imagegate serve`` does this).

``await start_bot(service, settings)`` connects with the token from the environment variable
named by ``[discord] token_env`` and runs until cancelled; the caller owns ``service``.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import discord

from core import ConfigError, ImageGateError, ImageService, Settings

from . import logs
from .client import ImageBot, bot_class


def token_from_env(settings: Settings) -> str | None:
    """The bot token from ``$<[discord] token_env>`` (default ``DISCORD_TOKEN``), if set."""
    token = os.environ.get(settings.discord.token_env, "").strip()
    return token or None


def create_bot(
    service: ImageService, settings: Settings, *, sync_commands: bool = True
) -> ImageBot:
    """A bot bound to an open service (not connected yet), sharded as configured."""
    return bot_class(settings)(service, settings, sync_commands=sync_commands)


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


def why_stopped(exc: BaseException) -> str:
    """One plain line for why the bot could not run, e.g. ``cannot reach discord.com: DNS lookup
    failed``; only the exception's type for anything unforeseen (its text may not be safe)."""
    if isinstance(exc, ImageGateError):
        return exc.message
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot reach {exc.host}: DNS lookup failed (no network, or no DNS server)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"cannot reach {exc.host}: its TLS certificate was not accepted"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error  # asyncio's strerror quotes the address: word the errno instead
        reason = os.strerror(error.errno) if error.errno else type(error).__name__
        return f"cannot reach {exc.host}:{exc.port}: {reason[:1].lower()}{reason[1:]}"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return f"lost the connection to Discord ({type(exc).__name__})"
    if isinstance(exc, asyncio.TimeoutError):
        return "Discord did not answer in time"
    if isinstance(exc, discord.GatewayNotFound):
        return "Discord's gateway cannot be found (Discord may be down)"
    if isinstance(exc, discord.ConnectionClosed):
        return f"Discord closed the gateway connection (code {exc.code})"
    if isinstance(exc, discord.HTTPException):
        return f"Discord answered HTTP {exc.status}"
    return f"stopped by an unexpected error ({type(exc).__name__})"
