"""/imagegate: who may change credits (the operator's trusted people, never Manage Server
alone), Manage Server for the server's settings, and the settings' effects."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from core import Caller
from tests.bot.conftest import FOLLOWUP, Running, running
from tests.bot.test_buttons import result_of
from tests.discord_fake import MISSING_ACCESS, FakeDiscord, FakeUser


async def reply_text(env: Running, handle) -> str:
    """The private answer of an admin command (deferred, then the original edited)."""
    await env.fake.wait_until(
        lambda: (
            bool((handle.original_message or {}).get("content"))
            or (handle.callback is not None and handle.callback.type == 4)
        ),
        5,
        "admin reply",
    )
    if handle.callback.type == 4:
        return handle.callback.data.get("content") or ""
    return handle.original_message["content"]


async def test_admin_commands_need_manage_server(env: Running):
    fake = env.fake
    # Members see /imagegate (for their token); the bot checks the rest on every use.
    grant = await fake.slash("imagegate grant", {"user": fake.user, "credits": 5}, user=fake.user)
    assert "owner of this bot's Discord application" in await reply_text(env, grant)
    assert await env.remaining(fake.user) == 50
    member = await fake.slash("imagegate settings nsfw", {"policy": "off"}, user=fake.user)
    assert "Manage Server" in (await member.wait_callback()).data["content"]
    # Permission taken away since the command list was loaded: refused too.
    stale = await fake.slash(
        "imagegate settings nsfw",
        {"policy": "off"},
        user=fake.admin,
        permissions=discord.Permissions(send_messages=True),
        validate=False,
    )
    assert "Manage Server" in (await stale.wait_callback()).data["content"]


async def test_a_member_gets_and_revokes_a_token_for_their_own_credits(env: Running, caplog):
    caplog.set_level(logging.INFO, logger="imagegate")
    fake = env.fake
    minted = await fake.slash("imagegate token", user=fake.user)
    text = await reply_text(env, minted)
    [token] = re.findall(r"ig_mcp_\w{8}_[\w-]+", text)
    assert minted.callback.data["flags"] & 64  # private
    info = await env.service.verify_token("mcp", token)
    assert info is not None and info.user == f"discord:{fake.user.id}"
    assert f"revoke:{info.prefix}" in text and info.shown in text
    # Someone else cannot revoke it: for them it does not exist.
    theft = await fake.slash("imagegate token", {"revoke": info.prefix}, user=fake.admin)
    assert "no token of yours" in await reply_text(env, theft)
    assert await env.service.verify_token("mcp", token) is not None
    revoked = await fake.slash("imagegate token", {"revoke": info.prefix}, user=fake.user)
    assert f"Revoked `{info.shown}`" in await reply_text(env, revoked)
    assert await env.service.verify_token("mcp", token) is None
    assert token not in caplog.text and info.shown in caplog.text  # logged, never in clear


async def test_grant_and_allowance(env: Running):
    fake = env.fake  # no admin lists configured: the application's owner is trusted
    grant = await fake.slash(
        "imagegate grant", {"user": fake.user, "credits": 25, "reason": "contest"}, user=fake.owner
    )
    assert "**75**" in await reply_text(env, grant)
    assert await env.remaining(fake.user) == 75

    allowance = await fake.slash(
        "imagegate allowance", {"user": fake.user, "credits": 10}, user=fake.owner
    )
    assert "set to 10 per day" in await reply_text(env, allowance)
    assert await env.remaining(fake.user) == 35
    # Both changes are in the audit trail, with who made them.
    user, owner = (Caller(frontend="discord", user_id=str(u.id)) for u in (fake.user, fake.owner))
    trail = await env.service.history(user, user)
    assert [(e.kind, e.actor) for e in trail[:2]] == [
        ("allowance", owner.key),
        ("grant", owner.key),
    ]
    assert trail[0].reason == "allowance 50 -> 10 per day"

    quota = await fake.slash("quota")
    await fake.wait_until(lambda: bool((quota.original_message or {}).get("content")), 5, "quota")
    assert "**35**" in quota.original_message["content"]


async def credit_change(
    env: Running, command: str, by: FakeUser, target: FakeUser, guild: Any = None, **options: Any
) -> str:
    """Run ``/imagegate grant|allowance`` as ``by`` (``validate=False``: the operator's trusted
    people may lack Manage Server, which only hides the group) and return the private reply."""
    handle = await env.fake.slash(
        f"imagegate {command}", {"user": target, **options}, user=by, guild=guild, validate=False
    )
    return await reply_text(env, handle)


async def test_manage_server_in_some_guild_cannot_mint_credits(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    stranger = fake.create_user("stranger")
    theirs = fake.add_guild("Stranger's own server", owner=stranger)  # all permissions there
    helper = fake.create_user("helper", guild=theirs)  # a plain member, listed by the operator
    settings = settings_for(
        discord={"admin_guild_ids": [fake.guild.id], "admin_user_ids": [helper.id]}
    )
    async with running(fake, settings) as env:
        # Manage Server in a server the operator did not list: refused, saying who can.
        refused = await credit_change(env, "grant", stranger, stranger, theirs, credits=1000)
        assert "credit admins" in refused and "Manage Server covers" in refused
        assert await env.remaining(stranger) == 50
        # The application's owner is not in the lists, and the lists decide once set.
        assert "credit admins" in await credit_change(
            env, "allowance", fake.owner, fake.owner, theirs, credits=1000
        )
        # Manage Server in a listed server, used there: trusted.
        assert "**60**" in await credit_change(env, "grant", fake.admin, stranger, credits=10)
        # A listed user, anywhere, even without Manage Server.
        assert "set to 5 per day" in await credit_change(
            env, "allowance", helper, stranger, theirs, credits=5
        )
        assert await env.remaining(stranger) == 15
        # Manage Server still covers that server's own settings.
        settings_reply = await fake.slash(
            "imagegate settings nsfw", {"policy": "strict"}, user=stranger, guild=theirs
        )
        assert "NSFW policy" in await reply_text(env, settings_reply)


async def test_a_team_owned_application_trusts_its_admins_and_developers(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    dev, reader, pending = (fake.create_user(n) for n in ("dev", "reader", "pending"))
    fake.set_team(fake.user, [(dev, "developer"), (reader, "read_only")], invited=[pending])
    async with running(fake, settings_for()) as env:
        assert "**53**" in await credit_change(env, "grant", dev, fake.user, credits=3)
        assert "**55**" in await credit_change(env, "grant", fake.user, fake.user, credits=2)
        for who in (reader, pending, fake.owner, fake.admin):  # fake.owner: not the team's
            refused = await credit_change(env, "grant", who, fake.user, credits=100)
            assert "owner of this bot's Discord application (or its team)" in refused, who
        # Discord cannot say who owns the application: refused, nothing changed.
        fake.fail_next("GET", r"/(oauth2/)?applications/@me", 403, MISSING_ACCESS)
        assert "could not check" in await credit_change(env, "grant", dev, fake.user, credits=9)
        assert await env.remaining(fake.user) == 55


async def test_banned_words_and_nsfw_policy_refuse_before_any_spend(env: Running):
    fake = env.fake
    banned = await fake.slash(
        "imagegate settings banned", {"action": "add", "words": "Clown, spider*"}, user=fake.admin
    )
    assert "Added 2" in await reply_text(env, banned)

    for prompt in ("a CLOWN at night", "giant spiders"):
        handle = await fake.slash("imagine", {"prompt": prompt})
        reply = await handle.wait_callback()
        assert reply.type == 4 and reply.data["flags"] & 64
        assert "does not allow" in reply.data["content"]

    # NSFW terms: refused in ordinary channels, allowed in age-restricted ones (default policy).
    plain = await fake.slash("imagine", {"prompt": "a nude statue"})
    reply = await plain.wait_callback()
    assert reply.type == 4 and "age-restricted" in reply.data["content"]
    allowed = await fake.slash(
        "imagine", {"prompt": "a nude statue"}, channel=fake.guild.nsfw_channel
    )
    await result_of(fake, allowed)
    assert await env.remaining(fake.user) == 49

    strict = await fake.slash("imagegate settings nsfw", {"policy": "strict"}, user=fake.admin)
    await reply_text(env, strict)
    again = await fake.slash(
        "imagine", {"prompt": "a nude statue"}, channel=fake.guild.nsfw_channel
    )
    assert "not allowed on this server" in (await again.wait_callback()).data["content"]
    assert await env.remaining(fake.user) == 49


async def test_allowed_channels_default_model_and_private_delivery(env: Running):
    fake = env.fake
    art = fake.guild.nsfw_channel
    add = await fake.slash(
        "imagegate settings channels", {"action": "add", "channel": art}, user=fake.admin
    )
    assert "only" in await reply_text(env, add)

    elsewhere = await fake.slash("imagine", {"prompt": "a tree"})
    reply = await elsewhere.wait_callback()
    assert reply.type == 4 and f"<#{art['id']}>" in reply.data["content"]

    model = await fake.slash(
        "imagegate settings model", {"model": "placeholder:default"}, user=fake.admin
    )
    assert "placeholder:default" in await reply_text(env, model)
    unknown = await fake.slash("imagegate settings model", {"model": "nope:x"}, user=fake.admin)
    assert "no model called" in await reply_text(env, unknown)

    private = await fake.slash("imagegate settings delivery", {"mode": "private"}, user=fake.admin)
    await reply_text(env, private)
    handle = await fake.slash("imagine", {"prompt": "a tree"}, channel=art)
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )
    assert call.json["flags"] & 64  # only the requester sees it

    show = await fake.slash("imagegate settings show", user=fake.admin)
    embed = (await show.wait_callback()).data["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Delivery"] == "private" and f"<#{art['id']}>" in fields["Allowed channels"]

    # Settings are stored: a reloaded cache sees the same.
    await env.bot.guild_settings.load()
    config = env.bot.guild_settings.get(fake.guild.id)
    assert config.private and config.channels == (int(art["id"]),)
    assert config.default_model == "placeholder:default"


async def private_reply(env: Running, handle) -> str:
    """The refusal of an image command: an immediate private reply (the bot's own checks), or
    the deferred message once the job is refused (the core's); both say what it cost."""

    def refusal() -> str:
        if handle.callback is not None and handle.callback.type == 4:
            return handle.callback.data.get("content") or ""
        return (handle.original_message or {}).get("content") or ""

    await env.fake.wait_until(lambda: "Nothing was charged" in refusal(), 5, "refusal")
    return refusal()


async def test_filters_check_every_text_as_the_provider_receives_it(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    settings = settings_for(moderation={"banned_words": ["spider*"]})
    async with running(fake, settings) as env:
        strict = await fake.slash("imagegate settings nsfw", {"policy": "strict"}, user=fake.admin)
        await reply_text(env, strict)
        banned = await fake.slash(
            "imagegate settings banned", {"action": "add", "words": "clown"}, user=fake.admin
        )
        await reply_text(env, banned)
        # A left-to-right mark inside the word: the provider would receive "nude".
        hidden = await fake.slash(
            "imagine", {"prompt": "a n\u200eude statue"}, channel=fake.guild.nsfw_channel
        )
        assert "not allowed on this server" in await private_reply(env, hidden)
        # The negative prompt reaches the provider too.
        negative = await fake.slash("imagine", {"prompt": "a circus", "negative": "c l\u00adown"})
        assert "does not allow “c lown”" in await private_reply(env, negative)
        # The operator's list applies in every server ...
        spiders = await fake.slash("imagine", {"prompt": "giant spi\u200bders"})
        assert "service does not allow “spiders”" in await private_reply(env, spiders)
        # ... and in DMs, where no server's list applies but NSFW terms are refused.
        dm_spiders = await fake.slash("imagine", {"prompt": "spiders"}, dm=True)
        assert "does not allow “spiders”" in await private_reply(env, dm_spiders)
        dm_nude = await fake.slash("imagine", {"prompt": "a nude statue"}, dm=True)
        assert "age-restricted" in await private_reply(env, dm_nude)
        assert await env.remaining(fake.user) == 50
        dm_clown = await fake.slash("imagine", {"prompt": "a clown"}, dm=True)
        await result_of(fake, dm_clown)
        assert await env.remaining(fake.user) == 49
