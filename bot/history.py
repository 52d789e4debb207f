"""/history and /show: a member's own jobs, and results seen again with working buttons.

Jobs come from the core (``ImageService.jobs``, ``shown_job``); a deleted result is
listed as deleted and never shown. /show finds the member's own jobs and those posted publicly
in this server (the bot records where it posted a result publicly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from core import ImageResult, JobRecord

from . import render, views
from .guilds import scope_of
from .jobs import Delivery, caller_of

if TYPE_CHECKING:
    from .client import ImageBot

PER_PAGE = 5
STATUS = {
    "running": "⏳ running",
    "succeeded": "✅ done",
    "partial": "◐ partly done",
    "failed": "❌ failed",
    "interrupted": "⚠️ interrupted",
    "cancelled": "✖️ cancelled",
}


class History:
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def page(
        self, interaction: discord.Interaction, page: int, *, edit: bool = False
    ) -> None:
        """Show page ``page`` (from 1) of the member's jobs, newest first, privately."""
        page = max(1, page)
        if edit:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
        caller = caller_of(interaction)
        found = await self.bot.service.jobs(caller, limit=PER_PAGE)
        for _ in range(page - 1):  # keyset pages: walk to the one asked for
            if found.next_cursor is None:
                break
            found = await self.bot.service.jobs(caller, limit=PER_PAGE, cursor=found.next_cursor)
        jobs, more = found.jobs, found.next_cursor is not None
        await interaction.edit_original_response(
            content=None if jobs else "No jobs here yet: try /imagine.",
            embed=history_embed(jobs, page) if jobs else None,
            view=history_view(jobs, page, more),
        )

    async def show(self, interaction: discord.Interaction, job_id: str) -> None:
        """Post a job's result again (privately), with its buttons. A job still running, here
        or in another bot process (a shard), is waited for up to ``[discord] show_wait_s``."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        caller = caller_of(interaction)
        guild = interaction.guild_id
        service = self.bot.service
        job = await service.shown_job(
            caller,
            job_id.strip(),
            scope_of(guild) if guild is not None else None,
            timeout_s=self.bot.settings.discord.show_wait_s,
        )
        if job.status == "running" or not job.images:
            await interaction.edit_original_response(content=_not_shown(job))
            return
        result = ImageResult.from_record(job, (await service.quota(caller)).remaining)
        result.images = [image for image in job.images if not image.lost]  # files gone
        prompt = str(job.request.get("prompt") or "")
        await self.bot.jobs.deliver(interaction, caller, Delivery(result, prompt), mode="private")
        await interaction.edit_original_response(
            content=f"Job `{job.job_id}` from {render.timestamp(job.created_at, 'f')}, again below."
        )


def _not_shown(job: JobRecord) -> str:
    """Why /show has no images to post: still running after the wait, or none made."""
    if job.status == "running":
        return (
            f"Job `{job.job_id}` (started {render.timestamp(job.created_at, 'R')}) is still"
            f" running: try `/show {job.job_id}` again in a minute."
        )
    return f"Job `{job.job_id}` has no images ({STATUS.get(job.status, job.status)})."


def history_embed(jobs: list[JobRecord], page: int) -> discord.Embed:
    lines = []
    for job in jobs:
        prompt = (
            "*(deleted)*" if job.deleted else render.clip(str(job.request.get("prompt") or "—"), 80)
        )
        refund = f", {render.credits(job.credits_refunded)} back" if job.credits_refunded else ""
        lines.append(
            f"{render.timestamp(job.created_at, 'f')} · `{job.job_id}` · {job.operation}\n"
            f"{prompt}\n"
            f"`{render.clip(job.model, 60)}` · {render.credits(job.credits_charged)}{refund}"
            f" · {STATUS.get(job.status, job.status)}"
        )
    embed = discord.Embed(
        title=f"Your jobs (page {page})", colour=render.COLOUR, description="\n\n".join(lines)
    )
    embed.set_footer(text="Pick one below to see its result again.")
    return embed


def history_view(jobs: list[JobRecord], page: int, more: bool) -> discord.ui.View:
    """A menu of the page's results that can be shown (not deleted, with images) and
    Newer / Older buttons."""
    view = discord.ui.View(timeout=None)
    options = [
        discord.SelectOption(
            label=render.clip(str(job.request.get("prompt") or job.operation), 100),
            value=job.job_id,
            description=f"{job.job_id} · {len(job.images)} image(s)",
        )
        for job in jobs
        if job.images and not job.deleted
    ]
    if options:
        view.add_item(views.HistorySelect(options))
    if page > 1:
        view.add_item(views.HistoryPageButton(page - 1, "Newer"))
    if more:
        view.add_item(views.HistoryPageButton(page + 1, "Older"))
    return view
