"""Result buttons: DynamicItems whose custom id carries the job id, so they work forever.

Custom ids: ``imagegate:reroll:<job>``, ``imagegate:vary:<job>[:k]``, ``imagegate:upscale:<job>:k``,
``imagegate:remix:<job>`` and ``imagegate:delete:<job>`` (k counts images from 1, as the labels
do). Nothing is kept in memory: after a restart discord.py matches the id against these
templates and the job is read back from SQLite. The work itself lives in ``cogs.generate``
(``ButtonActions``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from . import errors

if TYPE_CHECKING:
    from .client import ImageBot

PREFIX = "imagegate"
JOB = r"(?P<job>[A-Za-z0-9_-]{1,64})"
MAX_UPSCALE_BUTTONS = 5


def custom_id(action: str, job_id: str, k: int | None = None) -> str:
    value = f"{PREFIX}:{action}:{job_id}" + (f":{k}" if k is not None else "")
    if len(value) > 100:  # Discord's limit; job ids are 16 characters
        raise ValueError("custom id too long")
    return value


class _JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagegate:_:(?P<job>x)"):
    action = "_"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id(self.action, job_id, k), **button))
        self.job_id = job_id
        self.k = k

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> _JobButton:
        k = match.groupdict().get("k")
        return cls(match["job"], int(k) if k else None, **_style_of(item))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: ImageBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.actions.handle(interaction, self.action, self.job_id, self.k)
        except Exception as exc:  # a button must never fail silently or leak a traceback
            await errors.report(interaction, exc)


def _style_of(item: discord.ui.Item[Any]) -> dict[str, Any]:
    if not isinstance(item, discord.ui.Button):
        return {}
    return {"label": item.label, "style": item.style, "emoji": item.emoji, "row": item.row}


class RerollButton(_JobButton, template=rf"imagegate:reroll:{JOB}"):
    action = "reroll"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        button = {
            "label": "Reroll",
            "emoji": "🔄",
            "style": discord.ButtonStyle.secondary,
            **button,
        }
        super().__init__(job_id, None, **button)


class VariationsButton(_JobButton, template=rf"imagegate:vary:{JOB}(?::(?P<k>\d{{1,2}}))?"):
    action = "vary"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        label = "Variations" if k is None else f"Variations {k}"
        button = {"label": label, "emoji": "🎲", "style": discord.ButtonStyle.secondary, **button}
        super().__init__(job_id, k, **button)


class UpscaleButton(_JobButton, template=rf"imagegate:upscale:{JOB}:(?P<k>\d{{1,2}})"):
    action = "upscale"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        button = {"label": f"Upscale {k}", "style": discord.ButtonStyle.primary, **button}
        super().__init__(job_id, k or 1, **button)


class RemixButton(_JobButton, template=rf"imagegate:remix:{JOB}"):
    action = "remix"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        button = {"label": "Remix", "emoji": "✏️", "style": discord.ButtonStyle.secondary, **button}
        super().__init__(job_id, None, **button)


class DeleteButton(_JobButton, template=rf"imagegate:delete:{JOB}"):
    action = "delete"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        button = {"label": "Delete", "emoji": "🗑️", "style": discord.ButtonStyle.danger, **button}
        super().__init__(job_id, None, **button)


class CancelButton(_JobButton, template=rf"imagegate:cancel:{JOB}"):
    """On the private progress message: stop the job (requester or Manage Messages)."""

    action = "cancel"

    def __init__(self, job_id: str, k: int | None = None, **button: Any) -> None:
        button = {"label": "Cancel", "emoji": "✖️", "style": discord.ButtonStyle.danger, **button}
        super().__init__(job_id, None, **button)


class HistoryPageButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"imagegate:history:(?P<page>\d{1,4})"
):
    """Older / Newer on a /history page (the page number is in the custom id)."""

    def __init__(self, page: int, label: str = "Older", **button: Any) -> None:
        style = {"style": discord.ButtonStyle.secondary, **button, "label": label}
        super().__init__(discord.ui.Button(custom_id=f"{PREFIX}:history:{page}", **style))
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> HistoryPageButton:
        label = item.label if isinstance(item, discord.ui.Button) and item.label else "Page"
        return cls(int(match["page"]), label)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: ImageBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.history.page(interaction, self.page, edit=True)
        except Exception as exc:
            await errors.report(interaction, exc)


class HistorySelect(discord.ui.DynamicItem[discord.ui.Select], template=r"imagegate:history-show"):
    """The /history menu: pick a job to see its result again, with working buttons."""

    def __init__(self, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"{PREFIX}:history-show",
                placeholder="Show a result again",
                options=options or [discord.SelectOption(label="-", value="-")],
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> HistorySelect:
        options = item.options if isinstance(item, discord.ui.Select) else None
        return cls(options)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: ImageBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.history.show(interaction, self.item.values[0])
        except Exception as exc:
            await errors.report(interaction, exc)


DYNAMIC_ITEMS = (
    RerollButton,
    VariationsButton,
    UpscaleButton,
    RemixButton,
    DeleteButton,
    CancelButton,
    HistoryPageButton,
    HistorySelect,
)


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job_id: str, operation: str, count: int) -> discord.ui.View:
    """Row 1: Reroll, Variations, Remix, Delete; row 2: Upscale 1..N (upscaled results have
    only Variations and Delete)."""
    view = discord.ui.View(timeout=None)
    if operation != "upscale":
        view.add_item(RerollButton(job_id, row=0))
    view.add_item(VariationsButton(job_id, row=0))
    if operation != "upscale":
        view.add_item(RemixButton(job_id, row=0))
    view.add_item(DeleteButton(job_id, row=0))
    if operation != "upscale":
        for k in range(1, min(count, MAX_UPSCALE_BUTTONS) + 1):
            view.add_item(UpscaleButton(job_id, k, row=1))
    return view


def variations_picker(job_id: str, count: int) -> discord.ui.View:
    """The private "which image?" row shown when Variations is pressed on a multi-image result."""
    view = discord.ui.View(timeout=None)
    for k in range(1, min(count, MAX_UPSCALE_BUTTONS) + 1):
        view.add_item(VariationsButton(job_id, k, row=0))
    return view


def image_count(message: discord.Message | None, job_id: str) -> int:
    """How many images a result message shows, from its attachments or its Upscale buttons."""
    if message is None:
        return 1
    upscales = [
        child
        for row in message.components
        for child in getattr(row, "children", ())
        if getattr(child, "custom_id", "")
        and child.custom_id.startswith(f"{PREFIX}:upscale:{job_id}:")
    ]
    return max(len(upscales), len(message.attachments), 1)
