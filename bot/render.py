"""Turning core results into Discord messages: result embeds and files, quota and model cards.

Pure functions (bytes and core types in, discord objects out); image resizing runs in a thread.
"""

from __future__ import annotations

import asyncio
import io
from datetime import datetime

import discord

from core import EXTENSIONS, ImageResult, ModelInfo, Preferences, QuotaStatus, Style, preview

COLOUR = discord.Colour.blurple()
TITLES = {
    "generate": "Imagine",
    "variation": "Variations",
    "sketch": "Sketch",
    "inpaint": "Inpaint",
    "background": "New background",
    "avatar": "Avatar",
    "upscale": "Upscale",
}
MAX_CONTENT = 2000


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def credits(n: int) -> str:
    return f"{n} credit{'s' * (n != 1)}"


def result_embed(result: ImageResult, prompt: str, requester: discord.abc.User) -> discord.Embed:
    """Prompt, model, seed(s), cost and credits left (embed limits respected)."""
    embed = discord.Embed(
        title=TITLES.get(result.operation, result.operation.title()),
        description=clip(prompt, 3000) if prompt else None,
        colour=COLOUR,
    )
    embed.add_field(name="Model", value=clip(result.model, 1024), inline=True)
    seeds = [str(i.seed) for i in result.images if i.seed is not None]
    embed.add_field(
        name="Seed" if len(seeds) == 1 else "Seeds", value=clip(", ".join(seeds) or "—", 1024)
    )
    embed.add_field(name="Cost", value=credits(result.credits_charged), inline=True)
    embed.add_field(name="Credits left", value=str(result.credits_remaining), inline=True)
    if result.warnings:
        notes = "\n".join(f"• {w}" for w in result.warnings)
        embed.add_field(name="Notes", value=clip(notes, 1024), inline=False)
    embed.set_footer(text=f"job {result.job_id} · requested by {clip(requester.display_name, 64)}")
    return embed


async def result_files(
    images: list[tuple[bytes, str]], job_id: str, limit: int, *, spoiler: bool = False
) -> tuple[list[discord.File], bool]:
    """One file per image (hidden as spoilers with ``spoiler``); images over the per-file
    budget are sent as downscaled previews.

    Returns the files and whether any was downscaled. ``limit`` is the upload limit of the
    message (Discord counts all files together), so each file gets an equal share of it.
    """
    budget = max(64 * 1024, limit // max(1, len(images)) - 16 * 1024)
    files = []
    shrunk = False
    for index, (data, mime) in enumerate(images, start=1):
        if len(data) > budget:
            data, mime = await asyncio.to_thread(preview, data, max_edge=2048, max_bytes=budget)
            shrunk = True
        name = f"imagegate_{job_id}_{index}.{EXTENSIONS.get(mime, 'png')}"
        files.append(discord.File(io.BytesIO(data), filename=name, spoiler=spoiler))
    return files, shrunk


def timestamp(moment: datetime | None, style: str = "R") -> str:
    """Discord's localised timestamp markup (``<t:…:R>`` shows "in 5 hours")."""
    return "—" if moment is None else f"<t:{int(moment.timestamp())}:{style}>"


def quota_text(status: QuotaStatus) -> str:
    """The one line /quota leads with: the remaining credits as a number (or what is owed)."""
    if status.remaining < 0:
        return (
            f"You owe **{-status.remaining}** {'credit' if status.remaining == -1 else 'credits'};"
            " your next allowance pays it first."
        )
    return (
        f"You have **{status.remaining}** {'credit' if status.remaining == 1 else 'credits'} left."
    )


def quota_embed(status: QuotaStatus, *, title: str = "Your credits") -> discord.Embed:
    embed = discord.Embed(title=title, colour=COLOUR)
    embed.add_field(name="Remaining", value=str(status.remaining), inline=True)
    embed.add_field(name=f"Allowance per {status.period}", value=str(status.allowance), inline=True)
    embed.add_field(name="Granted (never expire)", value=str(status.granted), inline=True)
    resets = status.resets_at
    embed.add_field(
        name="Allowance resets",
        value="—" if resets is None else f"{timestamp(resets, 'f')} ({timestamp(resets)})",
        inline=False,
    )
    running = f"{status.in_flight} job{'s' * (status.in_flight != 1)}"
    if status.held:
        running += f" ({credits(status.held)} on hold)"
    embed.add_field(name="Jobs in flight", value=running, inline=False)
    if status.late_charged or status.debt:
        embed.add_field(
            name=f"Charged late this {status.period}",
            value=f"{credits(status.late_charged)} for images delivered after their reservation"
            f" was released; {credits(status.debt)} owed, paid first by your next allowance",
            inline=False,
        )
    return embed


def models_embed(
    models: list[ModelInfo], default: str | None, styles: list[Style] | None = None
) -> discord.Embed:
    """Every configured model with its operations and price per image."""
    lines = []
    for model in models:
        price = credits(model.price)
        ops = ", ".join(model.operations)
        star = " (default)" if model.ref == default else ""
        aliases = f" · aliases: {', '.join(model.aliases)}" if model.aliases else ""
        lines.append(f"**`{model.ref}`**{star} — {price}/image · {ops}{aliases}")
        if model.description:
            lines.append(f"  {clip(model.description, 150)}")
    embed = discord.Embed(title="Models", colour=COLOUR, description=clip("\n".join(lines), 4000))
    if styles:
        embed.add_field(name="Styles", value=clip(style_lines(styles), 1024), inline=False)
    embed.set_footer(text="Pick one with the model option of /imagine, /edit or /upscale.")
    return embed


def style_lines(styles: list[Style]) -> str:
    """One line per style: name, description (or template) and where it comes from."""
    lines = []
    for style in styles:
        about = style.description or style.prompt
        where = "" if style.source == "config" else " · this server"
        lines.append(f"**`{style.name}`** — {clip(about, 120)}{where}")
    return "\n".join(lines) or "No styles yet."


def styles_embed(styles: list[Style]) -> discord.Embed:
    embed = discord.Embed(
        title="Styles", colour=COLOUR, description=clip(style_lines(styles), 4000)
    )
    embed.set_footer(text="Pick one with the style option of /imagine or /edit.")
    return embed


def preferences_embed(prefs: Preferences, *, server_delivery: str | None) -> discord.Embed:
    """A member's /settings: each default, or what applies when it is not set."""
    embed = discord.Embed(title="Your defaults", colour=COLOUR)
    embed.add_field(name="Model", value=f"`{prefs.model}`" if prefs.model else "server default")
    embed.add_field(name="Style", value=f"`{prefs.style}`" if prefs.style else "none")
    embed.add_field(name="Aspect", value=prefs.aspect or "model default")
    embed.add_field(name="Count", value=str(prefs.count or 1))
    delivery = prefs.delivery or "public"
    if server_delivery and server_delivery != delivery:
        delivery += f" (this server delivers {server_delivery}ly, which wins here)"
    embed.add_field(name="Delivery", value=delivery, inline=False)
    embed.set_footer(text="Options you give /imagine always win over these.")
    return embed
