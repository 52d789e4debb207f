"""/quota (private: credits left, allowance, reset time, jobs in flight) and /models."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from .. import render
from ..jobs import caller_of

if TYPE_CHECKING:
    from ..client import ImageBot


class AccountCog(commands.Cog, name="Account"):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="quota", description="Your credits: remaining, allowance, reset time, jobs running"
    )
    async def quota(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await self.bot.service.quota(caller_of(interaction))
        await interaction.edit_original_response(
            content=render.quota_text(status), embed=render.quota_embed(status)
        )

    @app_commands.command(
        name="models", description="The image models you can use and what they cost"
    )
    async def models(self, interaction: discord.Interaction) -> None:
        catalog = self.bot.catalog
        default = self.bot.guild_settings.get(interaction.guild_id).default_model
        embed = render.models_embed(catalog.models, default or self.bot.service.default_model)
        await interaction.response.send_message(embed=embed, ephemeral=True)
