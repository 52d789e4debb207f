"""/quota (private: credits left, allowance, reset time, jobs in flight), /models (with the
styles) and /settings (a member's own defaults, stored in the core)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from core import DELIVERY_MODES

from .. import errors, render
from ..catalog import fixed_choices, model_choices, style_choices
from ..guilds import scope_of
from ..jobs import caller_of
from .generate import ASPECT_NAMES, ASPECTS, MAX_COUNT

if TYPE_CHECKING:
    from ..client import ImageBot

DELIVERY = {
    "public": "public: in the channel",
    "private": "private: only you see them",
    "dm": "dm: by direct message",
}


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
        name="models", description="The image models and styles you can use and what they cost"
    )
    async def models(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        catalog = self.bot.catalog
        default = self.bot.guild_settings.get(interaction.guild_id).default_model
        styles = await self.bot.service.styles(_scope(interaction))
        embed = render.models_embed(
            catalog.models, default or self.bot.service.default_model, styles
        )
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(
        name="settings", description="Your own defaults for /imagine (only you see this)"
    )
    @app_commands.describe(
        model="Model used when you name none",
        style="Style used when you pick none",
        aspect="Shape used when you pick none",
        count="Images per /imagine when you give no count",
        delivery="Where your results go (a server's own delivery setting wins)",
        reset="Forget all your defaults",
    )
    @app_commands.choices(aspect=fixed_choices(ASPECT_NAMES), delivery=fixed_choices(DELIVERY))
    @app_commands.autocomplete(model=model_choices("generate"), style=style_choices)
    async def settings(
        self,
        interaction: discord.Interaction,
        model: str | None = None,
        style: app_commands.Range[str, 1, 32] | None = None,
        aspect: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        delivery: str | None = None,
        reset: bool = False,
    ) -> None:
        if count is not None and not 1 <= count <= MAX_COUNT:
            raise errors.Refusal(f"Count must be between 1 and {MAX_COUNT}.")
        if aspect is not None and aspect not in ASPECTS:
            raise errors.Refusal(f"The aspect must be one of {', '.join(ASPECTS)}.")
        if delivery is not None and delivery not in DELIVERY_MODES:
            raise errors.Refusal(f"Delivery must be one of {', '.join(DELIVERY_MODES)}.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        caller = caller_of(interaction)
        service = self.bot.service
        if reset:
            model, style, aspect, count, delivery = "", "", "", 0, ""
        given = {"model": model, "style": style, "aspect": aspect, "count": count}
        changes = {k: v for k, v in {**given, "delivery": delivery}.items() if v is not None}
        if changes:
            prefs = await service.set_preferences(caller, scope=_scope(interaction), **changes)
        else:
            prefs = await service.preferences(caller)
        server = self.bot.guild_settings.get(interaction.guild_id).delivery
        await interaction.edit_original_response(
            content="✅ Saved." if changes else None,
            embed=render.preferences_embed(prefs, server_delivery=server),
        )

    @app_commands.command(name="history", description="Your jobs, newest first (only you see this)")
    @app_commands.describe(page="Which page (5 jobs each)")
    async def history(
        self, interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1
    ) -> None:
        await self.bot.history.page(interaction, max(1, min(page, 1000)))

    @app_commands.command(name="show", description="See a job's result again, with its buttons")
    @app_commands.describe(job_id="The job id (in a result's footer or /history)")
    async def show(
        self, interaction: discord.Interaction, job_id: app_commands.Range[str, 1, 64]
    ) -> None:
        await self.bot.history.show(interaction, job_id)


def _scope(interaction: discord.Interaction) -> str | None:
    """Where styles are looked up: this server (None in DMs: the operator's only)."""
    return scope_of(interaction.guild_id) if interaction.guild_id is not None else None
