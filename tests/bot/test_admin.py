"""/imagegate (Manage Server): permission checks, credits, and the server settings' effects."""

from __future__ import annotations

import discord
import pytest

from tests.bot.conftest import FOLLOWUP, Running
from tests.bot.test_buttons import result_of
from tests.discord_fake import InvalidInteraction


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
    # Discord hides the group from members without Manage Server ...
    with pytest.raises(InvalidInteraction):
        await fake.slash("imagegate grant", {"user": fake.user, "credits": 5}, user=fake.user)
    # ... and if a server admin exposes it anyway, the bot checks again on every use.
    sneaky = await fake.slash(
        "imagegate grant", {"user": fake.user, "credits": 5}, user=fake.user, validate=False
    )
    reply = await sneaky.wait_callback()
    assert reply.type == 4 and reply.data["flags"] & 64
    assert "Manage Server" in reply.data["content"]
    assert await env.remaining(fake.user) == 50
    # Permission taken away since the command list was loaded: refused too.
    stale = await fake.slash(
        "imagegate settings nsfw",
        {"policy": "off"},
        user=fake.admin,
        permissions=discord.Permissions(send_messages=True),
        validate=False,
    )
    assert "Manage Server" in (await stale.wait_callback()).data["content"]


async def test_grant_and_allowance(env: Running):
    fake = env.fake
    grant = await fake.slash(
        "imagegate grant", {"user": fake.user, "credits": 25, "reason": "contest"}, user=fake.admin
    )
    assert "**75**" in await reply_text(env, grant)
    assert await env.remaining(fake.user) == 75

    allowance = await fake.slash(
        "imagegate allowance", {"user": fake.user, "credits": 10}, user=fake.admin
    )
    assert "set to 10 per day" in await reply_text(env, allowance)
    assert await env.remaining(fake.user) == 35

    quota = await fake.slash("quota")
    await fake.wait_until(lambda: bool((quota.original_message or {}).get("content")), 5, "quota")
    assert "**35**" in quota.original_message["content"]


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
