"""Tests of the fake Discord harness, driven by a real discord.py client logged in against it."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.discord_fake import (
    UNKNOWN_INTERACTION,
    FakeDiscord,
    InvalidInteraction,
    logged_in,
)

CALLBACK = r"/interactions/\d+/[^/]+/callback"
FOLLOWUP = r"/webhooks/\d+/[^/]+"
STYLES = ["anime", "oil painting", "photo", "pixel art"]


def png_bytes(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# A minimal bot
# ------------------------------------------------------------------------------------------------


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"reroll:(?P<job>\d+)"):
    def __init__(self, job: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll", style=discord.ButtonStyle.primary, custom_id=f"reroll:{job}"
            )
        )
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> RerollButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[ProbeBot]) -> None:  # type: ignore[override]
        interaction.client.events.put_nowait(("reroll", (self.job, interaction.user.id)))
        await interaction.response.send_message(f"rerolling {self.job}", ephemeral=True)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput = discord.ui.TextInput(
        label="What went wrong?", custom_id="feedback:text", max_length=100
    )

    async def on_submit(self, interaction: discord.Interaction[ProbeBot]) -> None:  # type: ignore[override]
        interaction.client.events.put_nowait(("modal", self.text.value))
        await interaction.response.send_message("thanks", ephemeral=True)


@app_commands.command(name="imagine", description="Generate an image")
async def imagine(
    interaction: discord.Interaction[ProbeBot],
    prompt: app_commands.Range[str, 1, 200],
    image: discord.Attachment,
) -> None:
    await interaction.response.defer(thinking=True)
    data = await image.read()
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(42))
    view.add_item(discord.ui.Button(label="Upscale", custom_id="upscale:42"))
    msg = await interaction.followup.send(
        f"{prompt}: done",
        file=discord.File(io.BytesIO(data[::-1]), "result.png"),
        view=view,
        wait=True,
    )
    interaction.client.events.put_nowait(("followup", msg))


@app_commands.command(name="style", description="Pick a style")
async def style(interaction: discord.Interaction, name: str) -> None:
    await interaction.response.send_message(f"style {name}")


@style.autocomplete("name")
async def style_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=s, value=s) for s in STYLES if current in s]


@app_commands.command(name="feedback", description="Send feedback")
async def feedback(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(FeedbackModal(custom_id="feedback"))


@app_commands.command(name="quota", description="Admin: show quotas")
@app_commands.default_permissions(manage_guild=True)
async def quota(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(
        f"manage_guild={interaction.permissions.manage_guild}", ephemeral=True
    )


@app_commands.context_menu(name="Describe image")
async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
    await interaction.response.defer(ephemeral=True)
    assert interaction.channel is not None
    await interaction.channel.send(f"{len(message.attachments)} attachment(s)")  # type: ignore[union-attr]
    await interaction.edit_original_response(content="described")


class ProbeBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for cmd in (imagine, style, feedback, quota, describe):
            self.tree.add_command(cmd)
        self.tree.error(self._on_tree_error)

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.events.put_nowait(("error", error))

    async def setup_hook(self) -> None:
        self.add_dynamic_items(RerollButton)
        await self.tree.sync()

    async def next_event(self, timeout: float = 5.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


async def test_login_ready_and_command_sync(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = ProbeBot()
    async with logged_in(bot, fake):
        assert bot.is_ready()
        assert bot.user is not None and bot.user.id == fake.bot_user.id
        assert bot.application_id == fake.application_id
        guild = bot.get_guild(fake.guild.id)
        assert guild is not None
        text = guild.get_channel(int(fake.guild.text_channel["id"]))
        nsfw = guild.get_channel(int(fake.guild.nsfw_channel["id"]))
        assert isinstance(text, discord.TextChannel) and not text.is_nsfw()
        assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
        assert guild.get_role(int(fake.guild.moderator_role["id"])) is not None
        assert guild.me is not None

        synced = {c["name"]: c for c in fake.commands}
        assert set(synced) == {"imagine", "style", "feedback", "quota", "Describe image"}
        options = {o["name"]: o for o in synced["imagine"]["options"]}
        assert options["image"]["type"] == 11 and options["prompt"]["max_length"] == 200
        assert synced["quota"]["default_member_permissions"] == str(1 << 5)
        assert synced["Describe image"]["type"] == 3

        paths = [(c.method, c.path) for c in fake.calls]
        assert ("GET", "/users/@me") in paths
        assert ("GET", "/oauth2/applications/@me") in paths
        assert ("PUT", f"/applications/{fake.application_id}/commands") in paths
        assert fake.identify_payloads and "intents" in fake.identify_payloads[0]
        assert [f["op"] for f in fake.gateway_received][:2] in ([1, 2], [2, 1])
    assert bot.is_closed()
    assert not fake.unhandled_calls


async def test_slash_defer_followup_file_and_dynamic_button(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = ProbeBot()
    source = png_bytes()
    async with logged_in(bot, fake):
        image = fake.add_attachment("in.png", source, "image/png")
        assert image["size"] == len(source) and (image["width"], image["height"]) == (4, 3)

        handle = await fake.slash("imagine", {"prompt": "a cat", "image": image})
        assert handle.payload["data"]["id"] == fake.find_command("imagine")["id"]

        callback = await handle.wait_callback()
        assert callback.type == 5
        assert callback.timestamp - handle.dispatched_at < 3.0

        followup = await handle.wait_followup()
        assert followup.files[0].filename == "result.png"
        assert followup.files[0].data == source[::-1]
        assert followup.json["content"] == "a cat: done"
        cdn = fake.calls_to("GET", r"/cdn/.*")
        assert len(cdn) == 1 and cdn[0].timestamp < followup.timestamp

        kind, sent = await bot.next_event()
        assert kind == "followup"
        # The first follow-up after a thinking defer replaces the loading message.
        message = handle.original_message
        assert message is not None and message in fake.messages
        assert sent.id == int(message["id"])
        assert message["flags"] == 0 and message["content"] == "a cat: done"
        attachment = message["attachments"][0]
        assert attachment["content_type"] == "image/png"
        assert fake.attachment_bytes(attachment) == source[::-1]
        buttons = [c["custom_id"] for c in message["components"][0]["components"]]
        assert buttons == ["reroll:42", "upscale:42"]

        click = await fake.click(message, "reroll:42", user=fake.admin)
        reply = await click.wait_callback()
        assert reply.type == 4
        assert reply.data["content"] == "rerolling 42" and reply.data["flags"] == 64
        assert await bot.next_event() == ("reroll", (42, fake.admin.id))
        assert click.original_message is not None and click.original_message["flags"] == 64

        with pytest.raises(InvalidInteraction):
            await fake.click(message, "no-such-button")
    assert not fake.unhandled_calls


@pytest.mark.parametrize("global_", [False, True], ids=["bucket", "global"])
async def test_followup_survives_429(fake_discord: FakeDiscord, global_: bool) -> None:
    fake = fake_discord
    bot = ProbeBot()
    async with logged_in(bot, fake):
        fault = fake.fail_next("POST", FOLLOWUP, 429, retry_after=0.2, global_=global_)
        image = fake.add_attachment("in.png", png_bytes("blue"), "image/png")
        handle = await fake.slash("imagine", {"prompt": "rain", "image": image})

        followup = await handle.wait_followup()
        assert followup.files[0].data == png_bytes("blue")[::-1]
        (limited,) = fault.hits
        assert limited.status == 429 and limited.response["retry_after"] == 0.2
        assert followup.timestamp - limited.timestamp >= 0.19
        attempts = [
            c for c in handle.calls if c.method == "POST" and re.fullmatch(FOLLOWUP, c.path)
        ]
        assert [c.status for c in attempts] == [429, 200]
        kind, _ = await bot.next_event()
        assert kind == "followup"


async def test_unknown_interaction_surfaces_as_not_found(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = ProbeBot()
    async with logged_in(bot, fake):
        fake.fail_next("POST", CALLBACK, 404, UNKNOWN_INTERACTION)
        image = fake.add_attachment("in.png", png_bytes(), "image/png")
        handle = await fake.slash("imagine", {"prompt": "late", "image": image})

        kind, error = await bot.next_event()
        assert kind == "error"
        assert isinstance(error, app_commands.CommandInvokeError)
        assert isinstance(error.original, discord.NotFound)
        assert error.original.code == 10062
        failed = await handle.wait_callback(include_failed=True)
        assert failed.status == 404 and handle.callback is None
        assert not handle.followups


async def test_modal_autocomplete_context_menu_and_permissions(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = ProbeBot()
    async with logged_in(bot, fake):
        # Autocomplete -> type 8 choices.
        ac = await fake.autocomplete("style", {"name": "art"}, focused="name")
        assert [c["value"] for c in await ac.wait_choices()] == ["pixel art"]

        # Modal: open (type 9), then submit.
        opener = await fake.slash("feedback")
        modal = await opener.wait_modal()
        assert modal["custom_id"] == "feedback" and modal["title"] == "Feedback"
        submit = await fake.submit_modal("feedback", {"feedback:text": "too blurry"})
        assert await bot.next_event() == ("modal", "too blurry")
        assert (await submit.wait_callback()).data["content"] == "thanks"
        with pytest.raises(InvalidInteraction):
            await fake.submit_modal("feedback", {"feedback:text": "x" * 101})

        # Message context menu on a user's message: defer, channel post, edit original.
        posted = await fake.post_user_message(
            "look", attachments=[fake.add_attachment("a.png", png_bytes(), ephemeral=False)]
        )
        ctx = await fake.context_menu("Describe image", posted, user=fake.admin)
        assert (await ctx.wait_callback()).type == 5
        edit = await ctx.wait_edit()
        assert edit.json["content"] == "described"
        channel_post = await fake.wait_for_call(
            "POST", rf"/channels/{fake.guild.text_channel['id']}/messages"
        )
        assert channel_post.json["content"] == "1 attachment(s)"
        assert ctx.original_message is not None and ctx.original_message["flags"] == 64

        # default_member_permissions: hidden from plain users, usable by moderators.
        with pytest.raises(InvalidInteraction):
            await fake.slash("quota", user=fake.user)
        admin = await fake.slash("quota", user=fake.admin)
        assert (await admin.wait_callback()).data["content"] == "manage_guild=True"

        # Discord's client enforces the synced schema (Range max_length 200 here) ...
        image = fake.add_attachment("in.png", png_bytes(), "image/png")
        with pytest.raises(InvalidInteraction):
            await fake.slash("imagine", {"prompt": "x" * 201, "image": image})
        with pytest.raises(InvalidInteraction):
            await fake.slash("imagine", {"prompt": "only a prompt"})
        # ... while validate=False sends it anyway (discord.py does not check Range itself).
        raw = await fake.slash("imagine", {"prompt": "x" * 201, "image": image}, validate=False)
        await raw.wait_followup()
    assert not fake.unhandled_calls


async def test_callback_rules_and_reconnect(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = ProbeBot()
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    async with logged_in(bot, fake):
        image = fake.add_attachment("in.png", png_bytes(), "image/png")
        handle = await fake.slash("imagine", {"prompt": "again", "image": image})
        await handle.wait_followup()
        assert handle.acknowledged_type == 5

        # A second acknowledgement of one interaction -> 400 40060 (sent by hand: discord.py
        # itself refuses locally with InteractionResponded).
        url = f"{fake.api_base}/interactions/{handle.id}/{handle.token}/callback"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"type": 4, "data": {"content": "x"}}) as resp:
                assert resp.status == 400
                assert (await resp.json())["code"] == 40060

        # An expired token: follow-ups fail with 401 50027.
        handle.expire()
        message = handle.original_message
        assert message is not None
        webhook = discord.Webhook.from_url(
            f"https://discord.com/api/webhooks/{fake.application_id}/{handle.token}",
            client=bot,
        )
        with pytest.raises(discord.HTTPException) as excinfo:
            await webhook.send("late", wait=True)
        assert excinfo.value.status == 401 and excinfo.value.code == 50027

        # op 7 RECONNECT -> discord.py RESUMEs on resume_gateway_url -> RESUMED.
        since = len(fake.gateway_received)
        await fake.request_reconnect()
        resume = await fake.wait_for_gateway_op(6, since=since)
        assert resume["d"]["session_id"]
        await asyncio.wait_for(resumed.wait(), 5)
        after = await fake.slash("style", {"name": "photo"})
        assert (await after.wait_callback()).data["content"] == "style photo"
