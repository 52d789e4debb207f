"""/imagegate: a member's own MCP token, credits and server settings.

Every member sees the group, for ``/imagegate token`` (their own token, on their own credits).
Discord sets permissions per top-level command only, so the other commands check on every use,
from the interaction: Manage Server for this server's settings and for looking at a member's
credits; for granting, taking or re-setting credits, the operator's trust (``bot.trust``),
never Manage Server alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from core import MAX_STYLE_TEXT, Caller, filter_form, make_style

from .. import errors, moderation, render, trust
from ..catalog import fixed_choices, model_choices, style_choices
from ..guilds import (
    DELIVERY_MODES,
    MAX_BANNED_WORDS,
    MAX_CHANNELS,
    NSFW_POLICIES,
    GuildConfig,
    scope_of,
)
from ..jobs import caller_of

if TYPE_CHECKING:
    from ..client import ImageBot

log = logging.getLogger("imagegate.bot")
T = TypeVar("T")

MAX_GRANT = 1_000_000
# Marks the commands that create, take or re-set credits (``extras`` of the command).
MOVES_CREDITS = "moves_credits"
# Marks the commands every member may use, on their own account.
FOR_MEMBERS = "for_members"
NSFW_NAMES = {
    "age_restricted": "NSFW prompts only in age-restricted channels (default)",
    "strict": "No NSFW prompts anywhere",
    "off": "No word filter (providers still moderate)",
}
ListAction = Literal["add", "remove", "clear"]  # the choices of a list setting's action


class TextChannelOption(app_commands.Transformer):
    """A channel option limited to channels where people post (text, news, forum, threads);
    the value stays the resolved id-bearing object, so no cache is needed."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        kinds = discord.ChannelType
        return [
            kinds.text,
            kinds.news,
            kinds.forum,
            kinds.media,
            kinds.public_thread,
            kinds.private_thread,
            kinds.news_thread,
        ]

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> Any:
        return value


def _edited(
    current: Sequence[T], action: str, given: list[T], limit: int, what: str
) -> tuple[T, ...]:
    """A server's list setting (of ``what``) after ``action`` (add, remove or clear) with
    ``given``.

    Raises:
        Refusal: an unknown action, or the list would grow past ``limit`` entries.
    """
    if action == "clear":
        return ()
    if action == "remove":
        return tuple(item for item in current if item not in given)
    if action != "add":
        raise errors.Refusal("The action must be add, remove or clear.")
    added = tuple(dict.fromkeys([*current, *given]))
    if len(added) > len(current) and len(added) > limit:
        raise errors.Refusal(f"At most {limit} {what} can be listed.")
    return added


def _target(user: discord.abc.User, interaction: discord.Interaction) -> Caller:
    if user.bot:
        raise errors.Refusal("Bots have no credits.")
    return Caller(frontend="discord", user_id=str(user.id), guild_id=interaction.guild_id)


def settings_embed(config: GuildConfig) -> discord.Embed:
    embed = discord.Embed(title="imagegate settings for this server", colour=render.COLOUR)
    channels = ", ".join(f"<#{c}>" for c in config.channels) or "all channels"
    embed.add_field(name="Allowed channels", value=render.clip(channels, 1024), inline=False)
    embed.add_field(
        name="Default model",
        value=f"`{config.default_model}`" if config.default_model else "the bot's default",
    )
    embed.add_field(name="NSFW policy", value=NSFW_NAMES.get(config.nsfw, config.nsfw))
    embed.add_field(name="Delivery", value=config.delivery or "each member's choice (public)")
    words = ", ".join(f"`{w}`" for w in config.banned_words) or "none"
    embed.add_field(
        name=f"Banned words ({len(config.banned_words)})",
        value=render.clip(words, 1024),
        inline=False,
    )
    return embed


@app_commands.guild_only()
class AdminCog(
    commands.GroupCog,
    group_name="imagegate",
    group_description="Your MCP token; credits and settings (Manage Server)",
):
    settings = app_commands.Group(name="settings", description="Server settings for image commands")
    styles = app_commands.Group(name="styles", description="This server's prompt styles")

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        command = interaction.command
        if command is not None and command.extras.get(FOR_MEMBERS):
            return True
        if command is not None and command.extras.get(MOVES_CREDITS):
            return True  # the command checks the operator's trust once it has deferred
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    def admin(self, interaction: discord.Interaction) -> Caller:
        """The caller as admin of this server's settings (Manage Server)."""
        return caller_of(interaction, admin=bool(interaction.permissions.manage_guild))

    async def credit_admin(self, interaction: discord.Interaction) -> Caller:
        """The caller as admin of credits, when the operator trusts them (asks Discord for the
        application's owner, so call it after deferring).

        Raises:
            Refusal: saying who may change credits.
        """
        try:
            trusted = await trust.may_move_credits(self.bot, interaction)
        except discord.HTTPException as exc:
            log.warning("could not read the application's owner (HTTP %s)", exc.status)
            raise errors.Refusal(
                "I could not check with Discord who may change credits; try again in a moment."
            ) from None
        if not trusted:
            log.warning(
                "credit change refused: %s in server %s is not a credit admin",
                interaction.user.id,
                interaction.guild_id,
            )
            raise errors.Refusal(trust.who_may_move_credits(self.bot.settings))
        return caller_of(interaction, admin=True)

    # --- a member's own token -------------------------------------------------------------

    @app_commands.command(
        name="token",
        description="Get a token for your AI agents (MCP): they spend your credits (private)",
        extras={FOR_MEMBERS: True},
    )
    @app_commands.describe(revoke="Revoke your token with this prefix instead of getting one")
    async def token(
        self, interaction: discord.Interaction, revoke: app_commands.Range[str, 1, 60] | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        me = caller_of(interaction)
        service = self.bot.service
        if revoke:
            info = await service.revoke_own_token(me, revoke)
            content = f"Revoked `{info.shown}`: agents that use it are refused from now on."
        else:
            token, info = await service.mint_own_token(me, label=f"Discord {interaction.guild_id}")
            content = (
                "Your MCP token, shown only this once (keep it secret):\n"
                f"```\n{token}\n```\n"
                "An agent sends it as `Authorization: Bearer <token>` to this community's"
                " imagegate MCP server (its operator has the address). What it makes is paid"
                " from your credits, like /imagine.\n"
                f"Revoke it with `/imagegate token revoke:{info.prefix}`."
            )
        active = [f"`{t.shown}` ({t.created_at:%Y-%m-%d})" for t in await service.own_tokens(me)]
        content += "\nYour active tokens: " + (", ".join(active) or "none") + "."
        await interaction.edit_original_response(content=content)

    # --- credits ----------------------------------------------------------------------------

    @app_commands.command(
        name="grant",
        description="Give a member credits that never expire (negative takes back)",
        extras={MOVES_CREDITS: True},
    )
    @app_commands.describe(
        user="Who gets the credits",
        credits="How many (negative to take back)",
        reason="Why (kept in the ledger)",
    )
    async def grant(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        credits: app_commands.Range[int, -MAX_GRANT, MAX_GRANT],
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        if not -MAX_GRANT <= credits <= MAX_GRANT or credits == 0:
            raise errors.Refusal(
                f"Credits must be between -{MAX_GRANT} and {MAX_GRANT}, and not 0."
            )
        target = _target(user, interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        admin = await self.credit_admin(interaction)
        note = reason or f"granted on Discord by {interaction.user.id} in {interaction.guild_id}"
        status = await self.bot.service.grant(admin, target, credits, reason=note[:200])
        verb = "Granted" if credits > 0 else "Took back"
        await interaction.edit_original_response(
            content=f"{verb} {render.credits(abs(credits))} for {user.mention};"
            f" they have **{status.remaining}** left.",
            embed=render.quota_embed(status, title=f"Credits of {user.display_name}"),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(
        name="allowance",
        description="Set a member's allowance per period (empty: back to the default)",
        extras={MOVES_CREDITS: True},
    )
    @app_commands.describe(
        user="Whose allowance", credits="Credits per period; leave empty to reset"
    )
    async def allowance(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        credits: app_commands.Range[int, 0, MAX_GRANT] | None = None,
    ) -> None:
        if credits is not None and not 0 <= credits <= MAX_GRANT:
            raise errors.Refusal(f"The allowance must be between 0 and {MAX_GRANT}.")
        target = _target(user, interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        admin = await self.credit_admin(interaction)
        status = await self.bot.service.set_allowance(admin, target, credits)
        what = (
            "reset to the default" if credits is None else f"set to {credits} per {status.period}"
        )
        await interaction.edit_original_response(
            content=f"Allowance of {user.mention} {what}; they have **{status.remaining}** left.",
            embed=render.quota_embed(status, title=f"Credits of {user.display_name}"),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="credits", description="Show a member's credits")
    @app_commands.describe(user="Whose credits")
    async def credits(self, interaction: discord.Interaction, user: discord.User) -> None:
        target = _target(user, interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await self.bot.service.quota(target)
        await interaction.edit_original_response(
            content=f"{user.mention} has **{status.remaining}** credits left.",
            embed=render.quota_embed(status, title=f"Credits of {user.display_name}"),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    # --- server settings --------------------------------------------------------------------

    async def _update(self, interaction: discord.Interaction, done: str, **changes) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        config = await self.bot.guild_settings.update(
            self.admin(interaction), interaction.guild_id, **changes
        )
        log.info(
            "server %s settings changed by %s: %s",
            interaction.guild_id,
            interaction.user.id,
            ", ".join(changes),
        )
        await interaction.edit_original_response(content=f"✅ {done}", embed=settings_embed(config))

    def _current(self, interaction: discord.Interaction) -> GuildConfig:
        return self.bot.guild_settings.get(interaction.guild_id)

    @settings.command(name="show", description="Show this server's imagegate settings")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            embed=settings_embed(self._current(interaction)), ephemeral=True
        )

    @settings.command(
        name="channels",
        description="Limit image commands to some channels (empty list: everywhere)",
    )
    @app_commands.describe(
        action="Add, remove, or clear the list", channel="The channel to add or remove"
    )
    async def settings_channels(
        self,
        interaction: discord.Interaction,
        action: ListAction,
        channel: app_commands.Transform[Any, TextChannelOption] | None = None,
    ) -> None:
        if channel is None and action != "clear":
            raise errors.Refusal(f"Pick the channel to {action}.")
        given = [channel.id] if channel is not None else []
        channels = _edited(
            self._current(interaction).channels, action, given, MAX_CHANNELS, "channels"
        )
        if action == "clear":
            done = "Image commands now work in every channel."
        elif action == "add":
            others = " (and the other listed channels)." if len(channels) > 1 else " only."
            done = f"Image commands now work in <#{given[0]}>{others}"
        else:
            done = f"Removed <#{given[0]}>." + (
                "" if channels else " Image commands now work everywhere."
            )
        await self._update(interaction, done, channels=channels)

    @settings.command(
        name="model",
        description="The model used when a member names none (empty: the bot's default)",
    )
    @app_commands.describe(model="A model from /models; leave empty to reset")
    @app_commands.autocomplete(model=model_choices())
    async def settings_model(
        self, interaction: discord.Interaction, model: str | None = None
    ) -> None:
        if model and not self.bot.catalog.known(model.strip()):
            raise errors.Refusal(f"There is no model called “{model[:100]}”. See /models.")
        model = model.strip() if model else None
        done = (
            f"Default model is now `{model}`."
            if model
            else "Default model reset to the bot's default."
        )
        await self._update(interaction, done, default_model=model)

    @settings.command(
        name="banned", description="Words refused in prompts (comma-separated; word* = any ending)"
    )
    @app_commands.describe(
        action="Add, remove, or clear the list", words="Comma-separated words or phrases"
    )
    async def settings_banned(
        self,
        interaction: discord.Interaction,
        action: ListAction,
        words: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        # Stored as matched (core.filter_form), so "ＮＵＤＥ" and "nude" are one entry.
        given = [w for w in map(filter_form, (words or "").split(",")) if w]
        if not given and action != "clear":
            raise errors.Refusal(f"List the words to {action}, separated by commas.")
        if any(len(w) > 50 for w in given):
            raise errors.Refusal("Each banned word or phrase can be at most 50 characters.")
        current = self._current(interaction).banned_words
        banned = _edited(current, action, given, MAX_BANNED_WORDS, "banned words")
        done = {
            "clear": "Banned word list cleared.",
            "add": f"Added {len(given)} banned word(s).",
            "remove": f"Removed {len(given)} banned word(s).",
        }[action]
        await self._update(interaction, done, banned_words=banned)

    @settings.command(name="nsfw", description="Where NSFW-looking prompts are allowed")
    @app_commands.describe(policy="The NSFW policy for this server")
    @app_commands.choices(policy=fixed_choices(NSFW_NAMES))
    async def settings_nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        if policy not in NSFW_POLICIES:
            raise errors.Refusal(f"The policy must be one of {', '.join(NSFW_POLICIES)}.")
        await self._update(interaction, f"NSFW policy: {NSFW_NAMES[policy]}.", nsfw=policy)

    @settings.command(
        name="delivery",
        description="Post results publicly in the channel or privately to the requester",
    )
    @app_commands.describe(mode="public: everyone sees results; private: only the requester does")
    @app_commands.choices(mode=[app_commands.Choice(name=m, value=m) for m in DELIVERY_MODES])
    async def settings_delivery(self, interaction: discord.Interaction, mode: str) -> None:
        if mode not in DELIVERY_MODES:
            raise errors.Refusal(f"Delivery must be one of {', '.join(DELIVERY_MODES)}.")
        await self._update(interaction, f"Results are now delivered {mode}ly.", delivery=mode)

    # --- server styles ----------------------------------------------------------------------

    @styles.command(name="add", description="Add or replace a style members can pick")
    @app_commands.describe(
        name="Short name (lowercase letters, digits, - or _)",
        prompt="Template with {prompt} where the member's prompt goes",
        negative="Added to the negative prompt",
        model="Model used when the member names none",
        aspect="Shape used when the member picks none, e.g. 16:9",
        description="Shown in /models and the style list",
    )
    @app_commands.autocomplete(model=model_choices("generate"))
    async def styles_add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        prompt: app_commands.Range[str, 1, MAX_STYLE_TEXT],
        negative: app_commands.Range[str, 1, MAX_STYLE_TEXT] | None = None,
        model: str | None = None,
        aspect: str | None = None,
        description: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        style = make_style(
            name,
            prompt,
            negative_prompt=negative,
            model=model,
            aspect=aspect,
            description=description or "",
        )
        config = self._current(interaction)
        reason = moderation.check_prompt(
            style.prompt.replace("{prompt}", " "),
            style.negative_prompt,
            banned=config.banned_words,
            nsfw_policy=config.nsfw,
            age_restricted=False,  # a style can be used in any channel
        )
        if reason:
            raise errors.Refusal(reason.removesuffix(" Nothing was charged."))
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        await self.bot.service.add_style(
            self.admin(interaction), scope_of(interaction.guild_id), style
        )
        await interaction.edit_original_response(
            content=f"✅ Style `{style.name}` saved: {render.clip(style.prompt, 300)}"
        )

    @styles.command(name="remove", description="Remove a style of this server")
    @app_commands.describe(name="The style to remove")
    @app_commands.autocomplete(name=style_choices)
    async def styles_remove(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        scope = scope_of(interaction.guild_id)
        await self.bot.service.remove_style(self.admin(interaction), scope, name)
        await interaction.edit_original_response(
            content=f"✅ Style `{name.strip().lower()}` removed."
        )

    @styles.command(name="list", description="The styles members can pick here")
    async def styles_list(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        found = await self.bot.service.styles(scope_of(interaction.guild_id))
        await interaction.edit_original_response(embed=render.styles_embed(found))
