"""Who may create, take or re-set credits through Discord.

A member's credits are one wallet, spendable in every server the bot is in (and the MCP server
and the CLI pay from the same provider accounts), so Manage Server in *a* server is no reason
to trust someone with them: anyone can add a public bot to a server of their own. The operator
names the people it trusts in ``[discord] admin_user_ids`` (those users, anywhere) and
``admin_guild_ids`` (members with Manage Server in one of those servers, using the command
there). With neither set, only the Discord application's owner, or the admins and developers
of the team that owns it, are trusted. The owner is asked from Discord (application info) at
each use, so a change of team needs no restart; credit changes are rare enough for the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from core import Settings

if TYPE_CHECKING:
    from .client import ImageBot

# Team roles that may change the application itself; read-only members may not.
TRUSTED_TEAM_ROLES = (discord.TeamMemberRole.admin, discord.TeamMemberRole.developer)


async def may_move_credits(bot: ImageBot, interaction: discord.Interaction) -> bool:
    """True when whoever sent ``interaction`` may create, take or re-set credits.

    Raises:
        discord.HTTPException: asking Discord for the application's owner failed.
    """
    listed = bot.settings.discord
    if listed.admin_user_ids or listed.admin_guild_ids:
        in_admin_server = (
            interaction.guild_id in listed.admin_guild_ids and interaction.permissions.manage_guild
        )
        return interaction.user.id in listed.admin_user_ids or in_admin_server
    return interaction.user.id in await application_owners(bot)


async def application_owners(client: discord.Client) -> frozenset[int]:
    """The application's owner, or its team's owner, admins and developers who accepted."""
    app = await client.application_info()
    if app.team is None:
        return frozenset({app.owner.id})
    members = {
        member.id
        for member in app.team.members
        if member.role in TRUSTED_TEAM_ROLES
        and member.membership_state == discord.TeamMembershipState.accepted
    }
    return frozenset(members | ({app.team.owner_id} if app.team.owner_id else set()))


def who_may_move_credits(settings: Settings) -> str:
    """The refusal a user sees: who can change credits, and that Manage Server cannot."""
    listed = settings.discord
    if listed.admin_user_ids or listed.admin_guild_ids:
        who = "the people the bot's operator listed as credit admins"
        if listed.admin_guild_ids:
            who += " (or members with Manage Server in the operator's admin servers)"
    else:
        who = "the owner of this bot's Discord application (or its team)"
    return (
        f"Only {who} can grant, take back or change credits: credits are shared across every"
        " server the bot is in. Manage Server covers this server's settings only."
    )
