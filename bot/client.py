"""``ImageBot``: the discord.py client holding the one ``ImageService``.

``setup_hook`` loads the server settings, the cogs and the result buttons (DynamicItems, so
buttons of any past result work after a restart) and syncs the commands: to
``[discord] dev_guild_id`` when set (instant, for development), else globally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from core import ImageService, Settings

from . import alerts, errors, views
from .catalog import Catalog
from .guilds import GuildSettings
from .history import History
from .jobs import JobRunner

log = logging.getLogger("imagegate.bot")


class ImageTree(app_commands.CommandTree):
    """The command tree; every error becomes a private message (see ``errors``)."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await errors.on_app_command_error(interaction, error)


class ImageBot(commands.Bot):
    """The bot. Create with an open ``ImageService``; ``sync_commands=False`` skips the sync.

    With ``[discord] shard_count`` and one of its ``shard_ids``, this process is that one
    shard (several processes split the servers and share one ledger on PostgreSQL);
    ``ShardedImageBot`` runs several shards in one process.
    """

    def __init__(
        self, service: ImageService, settings: Settings, *, sync_commands: bool = True
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        # The bot has no voice: discord.py's warnings about missing voice libraries are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=ImageTree,
            allowed_mentions=discord.AllowedMentions.none(),
            **shard_options(settings),
        )
        self.service = service
        self.settings = settings
        self.sync_commands = sync_commands
        self.catalog = Catalog(service)
        self.guild_settings = GuildSettings(service)
        self.jobs = JobRunner(self)
        self.history = History(self)
        self.actions: Any = None
        self._background: set[asyncio.Task[Any]] = set()

    async def setup_hook(self) -> None:
        from .cogs.account import AccountCog
        from .cogs.admin import AdminCog
        from .cogs.generate import ButtonActions, GenerateCog

        await self.guild_settings.load()
        generate = GenerateCog(self)
        await self.add_cog(generate)
        await self.add_cog(AccountCog(self))
        await self.add_cog(AdminCog(self))
        self.actions = ButtonActions(self, generate)
        self.add_dynamic_items(*views.DYNAMIC_ITEMS)
        if self.sync_commands:
            await self.sync_tree()
        if alerts.wanted(self):
            self.schedule(alerts.run_forever(self))

    async def sync_tree(self) -> list[app_commands.AppCommand]:
        """Register the commands with Discord (the dev guild only, when configured).

        A failed sync is logged, not fatal: the commands registered before keep working.
        """
        guild_id = self.settings.discord.dev_guild_id
        try:
            if guild_id:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d command(s) to the dev server %s", len(synced), guild_id)
            else:
                synced = await self.tree.sync()
                log.info("synced %d global command(s)", len(synced))
            return synced
        except discord.HTTPException as exc:
            log.error("command sync failed (HTTP %s, code %s): %s", exc.status, exc.code, exc.text)
            return []

    async def on_ready(self) -> None:
        user = self.user
        log.info(
            "connected as %s (%s) to %d server(s); shard(s) %s of %s",
            user,
            user.id if user else "?",
            len(self.guilds),
            sorted(self.shards) if isinstance(self, ShardedImageBot) else [self.shard_id or 0],
            self.shard_count or 1,
        )

    def schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (kept referenced; failures logged)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %s", type(task.exception()).__name__)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await super().close()


class ShardedImageBot(ImageBot, commands.AutoShardedBot):
    """``ImageBot`` running several shards in one process (discord.py's AutoShardedBot):
    ``[discord] shard_ids`` (default: all) of ``shard_count`` (default: as many as Discord
    recommends)."""


def shard_options(settings: Settings) -> dict[str, Any]:
    """discord.py's sharding arguments for the bot class ``bot_class`` picks."""
    count, ids = settings.discord.shard_count, settings.discord.shard_ids
    if count is None:
        return {}
    if ids is not None and len(ids) == 1:
        return {"shard_id": ids[0], "shard_count": count}
    return {"shard_ids": ids, "shard_count": count}


def bot_class(settings: Settings) -> type[ImageBot]:
    """``ImageBot``, or ``ShardedImageBot`` for several shards in this process."""
    discord_settings = settings.discord
    several = discord_settings.shard_ids is None or len(discord_settings.shard_ids) > 1
    return ShardedImageBot if discord_settings.shard_count and several else ImageBot
