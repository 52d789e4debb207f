"""Every failure a user can see becomes one short private message; nothing else leaks.

``ImageGateError`` messages are user-safe by contract and are shown as they are, with a word
on what it cost. discord.py's own check errors get plain explanations. Anything else is a
bug: it is logged with its traceback under a short reference, and the user sees only that
reference.
"""

from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands

from core import (
    ContentRejectedError,
    ImageGateError,
    InvalidRequestError,
    JobTimeoutError,
    NotFoundError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
)

log = logging.getLogger("imagegate.bot")

# Discord error codes that mean the interaction's token can no longer be used.
EXPIRED_CODES = frozenset({10015, 10062, 50027})


class Refusal(Exception):
    """A request the bot refuses by its own rules (channel, moderation, input); user-safe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def user_message(exc: BaseException) -> str:
    """The text a user sees for ``exc`` (logs unexpected errors as a side effect)."""
    if isinstance(exc, app_commands.CommandInvokeError):
        exc = exc.original
    if isinstance(exc, Refusal):
        return f"🚫 {exc.message}"
    if isinstance(exc, QuotaExceededError):
        return (
            f"⛔ {_sentence(exc.message)}"
            " Ask a server admin for more credits, or wait for the reset."
        )
    if isinstance(exc, RateLimitedError):
        return f"⏳ {_sentence(exc.message)} Nothing was charged."
    if isinstance(exc, ContentRejectedError):
        return (
            f"🚫 The image provider's safety filter refused this request: {_sentence(exc.message)}"
            " Nothing was charged; change the prompt or image and try again."
        )
    if isinstance(exc, InvalidRequestError):
        return f"⚠️ {_sentence(exc.message)} Nothing was charged."
    if isinstance(exc, NotFoundError):
        return f"🔍 {_sentence(exc.message)}"
    if isinstance(exc, JobTimeoutError | ProviderError):
        return (
            f"⚠️ The image provider failed: {_sentence(exc.message)}"
            " Nothing was charged for images that were not delivered; try again in a moment."
        )
    if isinstance(exc, ImageGateError):
        return f"⚠️ {_sentence(exc.message)}"
    if isinstance(exc, app_commands.MissingPermissions | app_commands.BotMissingPermissions):
        who = "You need" if isinstance(exc, app_commands.MissingPermissions) else "I need"
        perms = ", ".join(
            p.replace("_", " ").replace("guild", "server").title() for p in exc.missing_permissions
        )
        return f"🔒 {who} the {perms} permission for this."
    if isinstance(exc, app_commands.NoPrivateMessage):
        return "🔒 This command only works in a server."
    if isinstance(exc, app_commands.TransformerError):
        return f"⚠️ The value {str(exc.value)[:100]!r} is not valid for that option."
    if isinstance(exc, app_commands.CommandOnCooldown):
        return f"⏳ Slow down: try again in {exc.retry_after:.0f} s."
    if isinstance(exc, app_commands.CheckFailure):
        return "🔒 You cannot use this command here."
    ref = secrets.token_hex(3)
    log.error("unexpected error (ref %s)", ref, exc_info=exc)
    return (
        f"💥 Something went wrong on our side (ref `{ref}`)."
        " If a job failed, its credits were returned."
    )


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


async def tell(interaction: discord.Interaction, text: str) -> None:
    """Say ``text`` privately, whatever state the interaction is in; never raises.

    Not yet answered: an ephemeral reply. Deferred with "thinking" (the bot always defers
    privately): edit that private message. Otherwise: a private follow-up.
    """
    text = text if len(text) <= 2000 else text[:1999] + "…"
    response = interaction.response
    try:
        if not response.is_done():
            await response.send_message(text, ephemeral=True)
        elif response.type == discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(
                content=text, embed=None, attachments=[], view=None
            )
        else:
            await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning(
            "could not tell user %s about a failure (HTTP %s, code %s)",
            interaction.user.id,
            exc.status,
            exc.code,
        )


async def report(interaction: discord.Interaction, exc: BaseException) -> None:
    """Tell the user what went wrong with their interaction (privately)."""
    await tell(interaction, user_message(exc))


async def on_app_command_error(
    interaction: discord.Interaction, error: app_commands.AppCommandError
) -> None:
    """``CommandTree.on_error``: core errors and check failures become private messages."""
    if interaction.type == discord.InteractionType.autocomplete:
        log.warning("autocomplete failed: %s", type(error).__name__)
        return
    await report(interaction, error)


def is_expired_error(exc: discord.HTTPException) -> bool:
    """True when Discord refused because the interaction token expired or is unknown."""
    return exc.code in EXPIRED_CODES or exc.status == 401
