"""The life of one image job on Discord: acknowledge, show progress, call the core, deliver.

``JobRunner.run`` is shared by the slash commands, the context menus' modal and the result
buttons. The order matters:

1. the interaction is acknowledged (a private "thinking" defer) before any I/O;
2. the private deferred message shows progress, edited at most once per
   ``[discord] progress_interval_s`` (starting, queued with position, generating, elapsed);
3. the work (download and check attachments, call one ``ImageService`` method) runs; the
   core queues a job for its provider after reserving its credits and reports its place;
4. the result goes out as a follow-up with files, an embed and buttons; when the interaction
   token has expired (15 minutes) or Discord refuses it, it is posted to the channel (or, for
   private delivery, sent as a DM) instead;
5. the private message becomes a one-line summary, and the audit channel gets a line.

Any failure in 3 becomes a private message (``errors.report``); nothing is charged for a job
that delivered nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import discord

from core import Caller, ImageGateError, ImageRequest, ImageResult, Progress, check_upload

from . import errors, render, views
from .guilds import scope_of

if TYPE_CHECKING:
    from .client import ImageBot

log = logging.getLogger("imagegate.bot")

# Deliver through the channel when less than this is left of the token's 15 minutes.
TOKEN_MARGIN = timedelta(seconds=20)


class Delivery(NamedTuple):
    """What a job's work returns: the core's result, the prompt to show with it, and whether
    the images go out as spoilers."""

    result: ImageResult
    prompt: str
    spoiler: bool = False


Work = Callable[["Tracker"], Awaitable[Delivery]]


def caller_of(interaction: discord.Interaction, *, admin: bool = False) -> Caller:
    """The core's view of whoever clicked or typed: ``discord:<user id>`` plus guild and roles."""
    user = interaction.user
    return Caller(
        frontend="discord",
        user_id=str(user.id),
        guild_id=interaction.guild_id,
        role_ids=role_ids(user),
        is_admin=admin,
    )


_uncached_guilds: set[int] = set()


def role_ids(user: discord.User | discord.Member) -> tuple[int, ...]:
    """The member's roles (not @everyone), which pick role allowances.

    discord.py resolves ``Member.roles`` from its guild cache. Without the guild (no Guilds
    intent, or not yet received) the roles cannot be known: that is logged once per guild,
    so role allowances never vanish without a word.
    """
    if not isinstance(user, discord.Member):
        return ()
    if user.guild.unavailable and user.guild.id not in _uncached_guilds:
        _uncached_guilds.add(user.guild.id)
        log.warning(
            "server %s is not in the bot's cache: members' roles, and so role allowances,"
            " cannot be seen there (is the Guilds intent enabled?)",
            user.guild.id,
        )
    return tuple(role.id for role in user.roles if not role.is_default())


def idempotency_key(interaction: discord.Interaction) -> str:
    return f"discord:{interaction.id}"


def make_request(**fields: Any) -> ImageRequest:
    """An ``ImageRequest`` from command input (``None`` = not given).

    Raises:
        InvalidRequestError: naming the first bad field and what is allowed.
    """
    return ImageRequest.checked(**fields)


def check_attachment(attachment: discord.Attachment, what: str, max_bytes: int) -> None:
    """Refuse an attachment by its declared type and size, before downloading it.

    Raises:
        InvalidRequestError: not an accepted image format, or larger than ``max_bytes``.
    """
    check_upload(attachment.content_type, attachment.filename, attachment.size, max_bytes, what)


async def download(attachment: discord.Attachment, what: str) -> bytes:
    """The attachment's bytes from Discord's CDN (the core checks their size and content).

    Raises:
        Refusal: the download failed.
    """
    try:
        return await attachment.read()
    except (discord.HTTPException, discord.DiscordException) as exc:
        log.warning("attachment download failed: %s", type(exc).__name__)
        raise errors.Refusal(
            f"I could not download the {what} from Discord; please try again. Nothing was charged."
        ) from None


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"


class Tracker:
    """Progress of one job, shown in the private deferred message at a bounded rate."""

    def __init__(self, runner: JobRunner, interaction: discord.Interaction, what: str) -> None:
        self.runner = runner
        self.interaction = interaction
        self.what = what
        self.interval = runner.bot.settings.discord.progress_interval_s
        self.stage = "starting"
        self.model: str | None = None
        self.provider: str | None = None
        self.position = 0  # in the provider's queue; 0 once running
        self.starts_in: float | None = None  # the core's estimate while queued
        self.job_id: str | None = None
        self.detail: str | None = None  # the provider's latest progress, in words
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self._last_edit = float("-inf")
        self._last_text: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # An edit in flight must land before the next one (a cancelled request may still
        # reach Discord after a later one and overwrite the final summary).
        self._edit_lock = asyncio.Lock()
        self.dead = False
        self._cancel_shown = False  # the Cancel button, once the job has an id

    def callback(self) -> Progress:
        """The ``progress`` argument for the job's ``ImageService`` call (stages and their
        order: ``core.progress``)."""

        async def progress(stage: str, info: dict[str, Any]) -> None:
            self.job_id = info.get("job_id", self.job_id)
            if stage == "provider":  # what the backend reports: queue place, steps, wait
                self.detail = info.get("detail")
            else:
                self.stage = stage
                self.model = info.get("model", self.model)
                self.provider = info.get("provider", self.provider)
                self.position = info.get("position", 0) if stage == "queued" else 0
                self.starts_in = info.get("starts_in_s") if stage == "queued" else None
            self._changed.set()

        return progress

    def service_options(self) -> dict[str, Any]:
        """``idempotency_key`` and ``progress`` for the job's ``ImageService`` call: Discord
        retrying the interaction replays the job instead of charging twice, and its stages
        show here."""
        return {"idempotency_key": idempotency_key(self.interaction), "progress": self.callback()}

    def text(self) -> str:
        elapsed = _elapsed(asyncio.get_running_loop().time() - self.started)
        if self.stage == "starting":
            return f"⏳ {self.what}…"
        if self.stage == "queued" and self.position:
            eta = (
                self.starts_in is not None
                and f", starts in about {_elapsed(max(1, self.starts_in))}"
            )
            return (
                f"🕒 {self.what}: queued for {self.provider}, position {self.position}{eta or ''}"
                f" ({elapsed})"
            )
        if self.stage in ("generating", "queued"):
            model = f" with `{self.model}`" if self.model else ""
            detail = f": {self.detail}" if self.detail else "…"
            return f"🎨 {self.what}{model}{detail} ({elapsed})"
        return f"🎨 {self.what}: {self.stage.replace('_', ' ')}… ({elapsed})"

    async def start(self) -> None:
        """Fill the deferred message at once (so later follow-ups are new messages), then
        keep it current in the background."""
        await self._edit(self.text())
        self._task = asyncio.create_task(self._loop(), name="imagegate-progress")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.dead:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._changed.clear()
            delay = self._last_edit + self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.job_id and not self._cancel_shown:
                self._cancel_shown = await self._edit(
                    self.text(), view=views.cancel_view(self.job_id)
                )
            else:
                await self._edit(self.text())

    async def _edit(self, text: str, **fields: Any) -> bool:
        async with self._edit_lock:
            return await self._edit_now(text, **fields)

    async def _edit_now(self, text: str, **fields: Any) -> bool:
        if self.dead or (text == self._last_text and not fields):
            return False
        self._last_edit = asyncio.get_running_loop().time()
        try:
            await self.interaction.edit_original_response(content=text, **fields)
        except discord.HTTPException as exc:
            if errors.is_expired_error(exc):
                self.dead = True
            log.info("progress edit failed (HTTP %s, code %s)", exc.status, exc.code)
            return False
        except (aiohttp.ClientError, OSError) as exc:
            log.info("progress edit failed (%s)", type(exc).__name__)
            return False
        self._last_text = text
        return True

    async def stop(self) -> None:
        """Stop editing (safe to call twice)."""
        if self._task is not None:
            async with self._edit_lock:  # let an edit in flight finish first
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def finish(self, text: str) -> None:
        if not _expiring(self.interaction):
            await self._edit(text, view=None)  # the Cancel button goes


def _expiring(interaction: discord.Interaction) -> bool:
    return datetime.now(UTC) >= interaction.expires_at - TOKEN_MARGIN


class JobRunner:
    """Runs jobs for one bot."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def run(
        self, interaction: discord.Interaction, caller: Caller, work: Work, *, what: str
    ) -> None:
        """Acknowledge, run ``work`` with progress, deliver; every failure is told privately."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:
            # Too late (10062) or already answered: the user saw "did not respond"; running the
            # job anyway would spend credits they think were not spent.
            log.warning(
                "could not acknowledge interaction %s (HTTP %s, code %s); job not started",
                interaction.id,
                exc.status,
                exc.code,
            )
            return
        tracker = Tracker(self, interaction, what)
        try:
            await tracker.start()
            delivery = await work(tracker)
        except Exception as exc:
            await tracker.stop()
            await errors.report(interaction, exc)
            return
        finally:
            await tracker.stop()
        mode = await self.delivery_mode(interaction, caller)
        message, where = await self.deliver(interaction, caller, delivery, mode=mode)
        if mode == "public" and where in ("followup", "channel"):
            await self.shared(interaction, caller, delivery.result.job_id)
        await tracker.finish(_summary(delivery.result, where, tracker))
        await self.audit(interaction, delivery, message)

    async def shared(self, interaction: discord.Interaction, caller: Caller, job_id: str) -> None:
        """Note that the job's result is public in this server, so /show works for others."""
        if interaction.guild_id is None:
            return
        try:
            await self.bot.service.share_job(caller, job_id, scope_of(interaction.guild_id))
        except ImageGateError as exc:  # the result is out; /show will just not find it
            log.warning("could not record job %s as public: %s", job_id, exc.message)

    async def delivery_mode(self, interaction: discord.Interaction, caller: Caller) -> str:
        """``public``, ``private`` or ``dm``: the server's delivery setting where it is set,
        else the member's own (``/settings``), else public."""
        server = self.bot.guild_settings.get(interaction.guild_id).delivery
        if server:
            return server
        try:
            own = (await self.bot.service.preferences(caller)).delivery
        except ImageGateError as exc:  # the images are made: deliver them the default way
            log.warning("preferences of %s unreadable: %s", caller.key, exc.message)
            own = None
        return own or "public"

    async def deliver(
        self,
        interaction: discord.Interaction,
        caller: Caller,
        delivery: Delivery,
        *,
        mode: str = "public",
    ) -> tuple[discord.Message | None, str]:
        """Post the images (``mode`` as ``delivery_mode``); returns the message and where it
        went (``followup``, ``channel``, ``dm``, ``dm-closed`` (privately, because the
        member's DMs are closed) or ``nowhere``)."""
        private = mode != "public"
        result = delivery.result
        service = self.bot.service  # the result was the caller's to see (their job, or /show)
        data = [(await service.image_data(image), image.mime) for image in result.images]
        embed = render.result_embed(result, delivery.prompt, interaction.user)
        view = views.result_view(result.job_id, result.operation, len(result.images))
        limit = interaction.filesize_limit

        async def files(share: int) -> list[discord.File]:
            out, shrunk = await render.result_files(
                data, result.job_id, share, spoiler=delivery.spoiler
            )
            if shrunk:
                embed.set_author(
                    name="Sent as previews: the full images exceed Discord's upload limit"
                )
            return out

        closed = False
        user = interaction.user
        if mode == "dm":
            sent = await self._send_to(user, [("dm", user)], embed, view, files, limit, result)
            if sent is not None:
                return sent
            closed = True
        if not _expiring(interaction):
            for share in (limit, limit // 4):
                try:
                    message = await interaction.followup.send(
                        embed=embed,
                        files=await files(share),
                        view=view,
                        ephemeral=private,
                        wait=True,
                    )
                    return message, "dm-closed" if closed else "followup"
                except discord.HTTPException as exc:
                    log.warning(
                        "follow-up for job %s failed (HTTP %s, code %s)",
                        result.job_id,
                        exc.status,
                        exc.code,
                    )
                    if not (exc.status == 413 or exc.code == 40005):
                        break
                except (aiohttp.ClientError, OSError) as exc:
                    log.warning(
                        "follow-up for job %s failed (%s)", result.job_id, type(exc).__name__
                    )
                    break
        return await self._fallback(interaction, embed, view, files, limit, private, result)

    async def _fallback(
        self,
        interaction: discord.Interaction,
        embed: discord.Embed,
        view: discord.ui.View,
        files: Callable[[int], Awaitable[list[discord.File]]],
        limit: int,
        private: bool,
        result: ImageResult,
    ) -> tuple[discord.Message | None, str]:
        """Post where the interaction token is not needed: the channel, else a DM."""
        targets: list[tuple[str, discord.abc.Messageable]] = []
        if not private and interaction.channel_id is not None:
            channel = interaction.channel or self.bot.get_partial_messageable(
                interaction.channel_id, guild_id=interaction.guild_id
            )
            if isinstance(channel, discord.abc.Messageable):
                targets.append(("channel", channel))
        targets.append(("dm", interaction.user))
        sent = await self._send_to(interaction.user, targets, embed, view, files, limit, result)
        if sent is None:
            log.error("job %s could not be delivered anywhere", result.job_id)
            return None, "nowhere"
        return sent

    async def _send_to(
        self,
        user: discord.User | discord.Member,
        targets: list[tuple[str, discord.abc.Messageable]],
        embed: discord.Embed,
        view: discord.ui.View,
        files: Callable[[int], Awaitable[list[discord.File]]],
        limit: int,
        result: ImageResult,
    ) -> tuple[discord.Message, str] | None:
        """Post to the first target that takes the message (mentioning the requester)."""
        content = f"{user.mention} your images are ready (job `{result.job_id}`)."
        for where, target in targets:
            try:
                message = await target.send(
                    content=content,
                    embed=embed,
                    files=await files(limit),
                    view=view,
                    allowed_mentions=discord.AllowedMentions(users=[user]),
                )
                log.info("job %s delivered by %s", result.job_id, where)
                return message, where
            except discord.HTTPException as exc:
                log.warning(
                    "delivery of job %s to %s failed (HTTP %s, code %s)",
                    result.job_id,
                    where,
                    exc.status,
                    exc.code,
                )
            except (aiohttp.ClientError, OSError) as exc:
                log.warning(
                    "delivery of job %s to %s failed (%s)", result.job_id, where, type(exc).__name__
                )
        return None

    async def audit(
        self,
        interaction: discord.Interaction,
        delivery: Delivery | None,
        message: discord.Message | None,
        *,
        refused: str | None = None,
        prompt: str = "",
    ) -> None:
        """One line in the audit channel (if configured): requester, prompt, job id and link."""
        channel_id = self.bot.settings.discord.audit_channel_id
        if not channel_id:
            return
        user = interaction.user
        embed = discord.Embed(
            title="Refused prompt"
            if refused
            else f"Job {delivery.result.job_id}"
            if delivery
            else "Job",
            colour=discord.Colour.red() if refused else render.COLOUR,
            timestamp=datetime.now(UTC),
        )
        embed.add_field(name="Requester", value=f"{user.mention} (`{user.id}`)", inline=True)
        where = f"<#{interaction.channel_id}>" if interaction.channel_id else "DM"
        embed.add_field(name="Where", value=where, inline=True)
        if delivery is not None:
            result = delivery.result
            prompt = delivery.prompt
            embed.add_field(
                name="Job", value=f"`{result.job_id}` · {result.operation}", inline=True
            )
            embed.add_field(name="Model", value=render.clip(result.model, 1024), inline=True)
            embed.add_field(name="Cost", value=render.credits(result.credits_charged), inline=True)
            link = _link(message, interaction)
            if link:
                embed.add_field(name="Link", value=link, inline=False)
        if refused:
            embed.add_field(name="Reason", value=render.clip(refused, 1024), inline=False)
        embed.description = render.clip(prompt or "(no prompt)", 2000)
        try:
            channel = self.bot.get_partial_messageable(channel_id)
            await channel.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("audit post failed (HTTP %s, code %s)", exc.status, exc.code)


def _link(message: discord.Message | None, interaction: discord.Interaction) -> str | None:
    if message is not None and not message.flags.ephemeral and interaction.guild_id:
        return message.jump_url
    if interaction.guild_id and interaction.channel_id:
        channel = f"https://discord.com/channels/{interaction.guild_id}/{interaction.channel_id}"
        return f"{channel} (private result)"
    return None


def _summary(result: ImageResult, where: str, tracker: Tracker) -> str:
    took = _elapsed(asyncio.get_running_loop().time() - tracker.started)
    count = len(result.images)
    images = f"{count} image{'s' * (count != 1)}"
    cost = f"{render.credits(result.credits_charged)} charged, {result.credits_remaining} left"
    places = {
        "followup": "below",
        "channel": "posted in the channel",
        "dm": "sent to you by DM",
        "dm-closed": "below (your DMs are closed, so only you can see them here)",
    }
    if where == "nowhere":
        return (
            f"⚠️ Job `{result.job_id}` made {images} ({cost}), but I could not post them here or"
            " by DM. Ask an admin to check my permissions."
        )
    return f"✅ Done in {took}: {images} {places[where]} (job `{result.job_id}`; {cost})."
