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

from core import ImageGateError

log = logging.getLogger("imagegate.bot")

# Discord error codes that mean the interaction's token can no longer be used.
EXPIRED_CODES = frozenset({10015, 10062, 50027})


class Refusal(Exception):
    """A request the bot refuses by its own rules (channel, moderation, input); user-safe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# What to do, per kind of advice the core attaches to an error (``ImageGateError.advice``).
ADVICE_TEXT: dict[str, str] = {
    "fix_request": "Change what you asked for and send it again.",
    "retry": "Wait a little, then send it again.",
    "try_other_model": "Send it again later, or pick another model (see /models).",
    "wait_for_credits": "Ask a server admin for more credits, or wait for the reset.",
    "change_content": "Change the prompt or the image; the same request will be refused again.",
    "tell_operator": "Tell the bot's operator.",
    "check_reference": "Use one of your own results.",
    "resend_if_wanted": "Send it again if you still want it.",
    "report_bug": "Tell the bot's operator.",
}
_LEAD = {
    "content_rejected": "The image provider's safety filter refused this request: ",
    "provider_unavailable": "The image provider failed: ",
    "provider_rate_limited": "The image provider failed: ",
    "timeout": "The image provider failed: ",
}
_EMOJI = {
    "fix_request": "⚠️",
    "wait_for_credits": "⛔",
    "retry": "⏳",
    "change_content": "🚫",
    "check_reference": "🔍",
    "tell_operator": "🔒",
}


def user_message(exc: BaseException) -> str:
    """The text a user sees for ``exc`` (logs unexpected errors as a side effect)."""
    if isinstance(exc, app_commands.CommandInvokeError):
        exc = exc.original
    if isinstance(exc, Refusal):
        return f"🚫 {exc.message}"
    if isinstance(exc, ImageGateError):
        return core_message(exc)
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


def core_message(exc: ImageGateError) -> str:
    """A core error in words, from the facts it carries: what happened, what it cost, whether
    to try again (and when), and what to do."""
    facts = exc.as_dict()
    lead = f"{_EMOJI.get(exc.advice, '⚠️')} {_LEAD.get(exc.code, '')}"
    parts = [lead + _sentence(exc.message), _cost(exc)]
    wait = facts["retry_after_s"]
    if exc.retryable:
        parts.append(f"You can try again in about {wait} s." if wait else "You can try again.")
    elif wait and exc.advice == "wait_for_credits":
        parts.append(f"Your credits renew in about {_duration(int(str(wait)))}.")
    parts.append(ADVICE_TEXT[exc.advice])
    return " ".join(parts)


def _cost(exc: ImageGateError) -> str:
    if exc.credits_charged:
        return f"{exc.credits_charged} credit(s) were charged for the images already made."
    if exc.refunded:
        return "Its credits were returned."
    return "Nothing was charged."


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


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
