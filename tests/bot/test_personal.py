"""Styles and members' own defaults (/settings) against the fake Discord and the real core."""

from __future__ import annotations

from core import Caller
from tests.bot.conftest import FOLLOWUP, Running, running
from tests.bot.test_admin import reply_text
from tests.discord_fake import FakeDiscord

DMS_CLOSED = {"code": 50007, "message": "Cannot send messages to this user"}
NOIR = {"prompt": "{prompt}, film noir", "negative_prompt": "colour", "description": "crime"}


async def result_of(fake: FakeDiscord, handle):
    return await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )


async def test_server_styles_are_added_listed_and_wrap_the_prompt(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    async with running(fake, settings_for(styles={"noir": NOIR})) as env:
        add = await fake.slash(
            "imagegate styles add",
            {"name": "Comic", "prompt": "comic panel of {prompt}", "description": "bold ink"},
            user=fake.admin,
        )
        assert "`comic` saved" in await reply_text(env, add)
        complete = await fake.autocomplete(
            "imagine", {"prompt": "x", "style": "co"}, focused="style"
        )
        assert [c["value"] for c in await complete.wait_choices()] == ["comic"]

        handle = await fake.slash("imagine", {"prompt": "a cat", "style": "comic"})
        embed = (await result_of(fake, handle)).json["embeds"][0]
        assert embed["description"] == "comic panel of a cat"

        listing = await fake.slash("models")
        edit = await listing.wait_edit()
        styles = next(f for f in edit.json["embeds"][0]["fields"] if f["name"] == "Styles")
        assert "noir" in styles["value"] and "comic" in styles["value"]

        remove = await fake.slash("imagegate styles remove", {"name": "comic"}, user=fake.admin)
        assert "removed" in await reply_text(env, remove)
        gone = await fake.slash("imagine", {"prompt": "a cat", "style": "comic"})
        await fake.wait_until(
            lambda: "no style called" in (gone.original_message or {}).get("content", ""),
            5,
            "refusal",
        )
        assert await env.remaining(fake.user) == 49  # only the first job was charged


async def test_a_style_with_a_banned_word_is_refused(fake_discord: FakeDiscord, settings_for):
    fake = fake_discord
    sections = {
        "styles": {"grim": {"prompt": "{prompt}, lots of gore"}},
        "moderation": {"banned_words": ["gore"]},
    }
    async with running(fake, settings_for(**sections)) as env:
        banned = await fake.slash(
            "imagegate settings banned", {"action": "add", "words": "blood"}, user=fake.admin
        )
        await reply_text(env, banned)
        add = await fake.slash(
            "imagegate styles add", {"name": "red", "prompt": "{prompt} in BLOOD"}, user=fake.admin
        )
        assert "blood" in await reply_text(env, add)
        assert [s.name for s in await env.service.styles(f"discord:guild:{fake.guild.id}")] == [
            "grim"
        ]
        # The operator's style carries a word the operator bans: refused, nothing charged.
        handle = await fake.slash("imagine", {"prompt": "a castle", "style": "grim"})
        await fake.wait_until(
            lambda: "gore" in (handle.original_message or {}).get("content", ""), 5, "refusal"
        )
        assert await env.remaining(fake.user) == 50
        assert not [c for c in fake.calls_to("POST", FOLLOWUP) if c.files]


async def test_settings_apply_and_dms_fall_back_to_private(env: Running):
    fake = env.fake
    saved = await fake.slash("settings", {"count": 2, "delivery": "dm", "aspect": "16:9"})
    await saved.wait_edit()
    prefs = await env.service.preferences(Caller(frontend="discord", user_id=str(fake.user.id)))
    assert (prefs.count, prefs.delivery, prefs.aspect) == (2, "dm", "16:9")

    dm = fake.dm_channel(fake.user)
    handle = await fake.slash("imagine", {"prompt": "a lighthouse"})
    post = await fake.wait_for_call(
        "POST", rf"/channels/{dm['id']}/messages", predicate=lambda c: bool(c.files)
    )
    assert len(post.files) == 2  # the member's count
    await fake.wait_until(
        lambda: "by DM" in (handle.original_message or {}).get("content", ""), 5, "summary"
    )
    assert not [c for c in handle.followups if c.files]

    fake.fail_next("POST", rf"/channels/{dm['id']}/messages", 403, DMS_CLOSED)
    closed = await fake.slash("imagine", {"prompt": "a lighthouse", "count": 1})
    call = await result_of(fake, closed)
    assert call.json["flags"] & 64 and len(call.files) == 1  # privately, the option wins
    await fake.wait_until(
        lambda: "DMs are closed" in (closed.original_message or {}).get("content", ""),
        5,
        "summary",
    )

    # A server's own delivery setting wins over the member's.
    public = await fake.slash("imagegate settings delivery", {"mode": "public"}, user=fake.admin)
    await reply_text(env, public)
    handle = await fake.slash("imagine", {"prompt": "a harbour"})
    call = await result_of(fake, handle)
    assert not call.json.get("flags", 0) & 64

    reset = await fake.slash("settings", {"reset": True})
    await reset.wait_edit()
    assert (
        await env.service.preferences(Caller(frontend="discord", user_id=str(fake.user.id)))
    ).delivery is None
