"""The configured models as the bot's autocomplete and /models show them. Built once from
``ImageService.models()`` (in memory, so it is safe to use before acknowledging). Which model
serves an operation, and the default, are the core's choices (``ImageService.model_for``).
Also the autocomplete callbacks of every model and style option, and fixed choices."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, cast

import discord
from discord import app_commands

from core import EDIT_MODES, ImageService, ModelInfo

from . import render
from .guilds import scope_of

if TYPE_CHECKING:
    from .client import ImageBot

Choices = list[app_commands.Choice[str]]
Autocomplete = Callable[[discord.Interaction, str], Awaitable[Choices]]


class Catalog:
    def __init__(self, service: ImageService) -> None:
        self.service = service
        self.models: list[ModelInfo] = service.models()
        self.by_ref = {m.ref: m for m in self.models}
        self.aliases: dict[str, list[ModelInfo]] = {}
        for model in self.models:
            for alias in model.aliases:
                self.aliases.setdefault(alias, []).append(model)

    def known(self, ref: str) -> bool:
        return ref in self.by_ref or ref in self.aliases

    def targets(self, ref: str) -> list[ModelInfo]:
        """The models a reference stands for (an alias may name several); [] if unknown."""
        if ref in self.by_ref:
            return [self.by_ref[ref]]
        return self.aliases.get(ref, [])

    def takes(self, ref: str, option: str) -> bool:
        """True when every model ``ref`` stands for takes ``option`` (``ModelInfo.options``)."""
        targets = self.targets(ref)
        return bool(targets) and all(option in m.options for m in targets)

    def price(self, ref: str, operation: str) -> int | None:
        targets = self.targets(ref)
        prices = [m.prices[operation] for m in targets if operation in m.prices]
        return max(prices) if prices else None

    def choices(self, current: str, operation: str | None = None) -> list[app_commands.Choice[str]]:
        """Up to 25 autocomplete choices whose reference contains ``current``."""
        needle = current.casefold().strip()
        found: list[app_commands.Choice[str]] = []
        for ref in [*self.aliases, *self.by_ref]:
            if needle and needle not in ref.casefold():
                continue
            if operation and not self.service.serves(ref, operation):
                continue
            price = self.price(ref, operation or "generate")
            label = ref if price is None else f"{ref} ({price} credit{'s' * (price != 1)}/image)"
            found.append(app_commands.Choice(name=label[:100], value=ref[:100]))
            if len(found) == 25:
                break
        return found


def model_choices(operation: str | None = None) -> Autocomplete:
    """An autocomplete callback for a model option (``app_commands.autocomplete``): the models
    that can do ``operation`` (None: any) whose reference contains what was typed."""

    async def choices(interaction: discord.Interaction, current: str) -> Choices:
        return cast("ImageBot", interaction.client).catalog.choices(current, operation)

    return choices


async def edit_model_choices(interaction: discord.Interaction, current: str) -> Choices:
    """``model_choices`` for the edit mode picked so far in the same command (any, if none)."""
    mode = getattr(interaction.namespace, "mode", None)
    return await model_choices(mode if mode in EDIT_MODES else None)(interaction, current)


def fixed_choices(labels: Mapping[str, str]) -> Choices:
    """The choices of an option with fixed values (``app_commands.choices``), value → label,
    in order."""
    return [app_commands.Choice(name=label, value=value) for value, label in labels.items()]


async def style_choices(interaction: discord.Interaction, current: str) -> Choices:
    """An autocomplete callback for a style option: up to 25 styles of this server (the
    operator's first) whose name contains ``current``."""
    guild = interaction.guild_id
    bot = cast("ImageBot", interaction.client)
    styles = await bot.service.styles(scope_of(guild) if guild is not None else None)
    needle = current.casefold().strip()
    return [
        app_commands.Choice(
            name=render.clip(f"{s.name} — {s.description or s.prompt}", 100), value=s.name
        )
        for s in styles
        if needle in s.name
    ][:25]
