"""/imagine, /edit, /upscale, the "Upscale" and "Edit image" message menus, and the result
buttons (reroll, variations, upscale k, delete).

Handlers stay thin: check the input without I/O (refusals are private and immediate), build
the ``Caller`` and ``ImageRequest``, hand one ``ImageService`` call to ``JobRunner``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple

import discord
from discord import app_commands
from discord.ext import commands

from core import (
    EDIT_MODES,
    FORMAT_NAMES,
    MAX_PROMPT_CHARS,
    Caller,
    EditMode,
    ImageRequest,
    InputImage,
    InvalidRequestError,
    JobRecord,
    NotFoundError,
    Operation,
    UnknownModelError,
    is_accepted_upload,
)

from .. import errors, moderation, render, views
from ..catalog import edit_model_choices, fixed_choices, model_choices, style_choices
from ..guilds import scope_of
from ..jobs import (
    Delivery,
    Tracker,
    caller_of,
    check_attachment,
    download,
    make_request,
)

if TYPE_CHECKING:
    from ..client import ImageBot

log = logging.getLogger("imagegate.bot")

PROMPT_MAX = min(1500, MAX_PROMPT_CHARS)
NEGATIVE_MAX = 500
MAX_COUNT = 4
MAX_SEED = 2**32 - 1
MAX_STEPS = 200
MAX_GUIDANCE = 50.0
STEPS_HELP = "Sampling steps (1-200), where the model uses them"
GUIDANCE_HELP = "How closely to follow the prompt (CFG, 0-50), where the model uses it"
ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
ASPECT_NAMES = {
    "1:1": "1:1 square",
    "4:3": "4:3 landscape",
    "3:4": "3:4 portrait",
    "3:2": "3:2 photo",
    "2:3": "2:3 portrait photo",
    "16:9": "16:9 widescreen",
    "9:16": "9:16 phone",
    "21:9": "21:9 cinema",
}
MODE_NAMES = {
    "variation": "variation: a new take on the image",
    "sketch": "sketch: keep the drawing's lines",
    "inpaint": "inpaint: repaint the mask's white area",
    "background": "background: new scene around the subject",
    "avatar": "avatar: a portrait from a face",
}


def _age_restricted(interaction: discord.Interaction) -> bool:
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    try:
        return bool(is_nsfw()) if callable(is_nsfw) else False
    except Exception:  # a thread whose parent is not cached
        return False


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


class EditOptions(NamedTuple):
    """The optional parts of an edit."""

    mask: discord.Attachment | None = None
    strength: float | None = None
    model: str | None = None
    style: str | None = None
    spoiler: bool = False


class GenerateCog(commands.Cog, name="Generate"):
    """Image commands and the work behind the result buttons."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        self.upscale_menu = app_commands.ContextMenu(name="Upscale", callback=self.upscale_message)
        self.edit_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.upscale_menu)
        self.bot.tree.add_command(self.edit_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.upscale_menu.name, type=self.upscale_menu.type)
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    # --- checks that need no I/O ------------------------------------------------------------

    @property
    def max_attachment(self) -> int:
        return self.bot.service.max_input_bytes("discord")

    def precheck(self, interaction: discord.Interaction, *texts: str | None) -> None:
        """Channel allowed here; the prompt, negative prompt (every text that will reach the
        provider) within the server's rules.

        Raises:
            Refusal: with the reason, before anything is spent.
        """
        config = self.bot.guild_settings.get(interaction.guild_id)
        parent = getattr(interaction.channel, "parent_id", None)
        if not config.allows_channel(interaction.channel_id, parent):
            places = ", ".join(f"<#{c}>" for c in config.channels[:10])
            raise errors.Refusal(f"Image commands are not enabled in this channel. Try {places}.")
        self.moderate(interaction, *texts)

    def moderate(self, interaction: discord.Interaction, *texts: str | None) -> None:
        """The server's banned words and NSFW policy (in DMs: no server's list, and NSFW
        terms are refused; the operator's list applies everywhere, in the core).

        Raises:
            Refusal: with the reason, before anything is spent.
        """
        config = self.bot.guild_settings.get(interaction.guild_id)
        reason = moderation.check_prompt(
            *texts,
            banned=config.banned_words,
            nsfw_policy=config.nsfw,
            age_restricted=_age_restricted(interaction),
        )
        if reason:
            prompt = next((t for t in texts if t), "")
            self.bot.schedule(
                self.bot.jobs.audit(interaction, None, None, refused=reason, prompt=prompt)
            )
            raise errors.Refusal(reason)

    def model_for(
        self, interaction: discord.Interaction, model: str | None, operation: Operation
    ) -> str:
        """The user's model if it can do ``operation``; else the core's choice, preferring
        the server's default model.

        Raises:
            Refusal: the user named a model that is unknown or cannot do ``operation``.
        """
        service = self.bot.service
        if model:
            model = model.strip()
            try:
                service.check_model(model, operation)
            except UnknownModelError:
                raise errors.Refusal(
                    f"There is no model called “{model[:100]}”. See /models."
                ) from None
            except InvalidRequestError:
                raise errors.Refusal(
                    f"`{model}` cannot do {operation}. See /models for one that can."
                ) from None
            return model
        return service.model_for(operation, self.server_model(interaction))

    def server_model(self, interaction: discord.Interaction) -> str | None:
        """The server's default model (``/imagegate settings model``), if any."""
        return self.bot.guild_settings.get(interaction.guild_id).default_model

    def tuning(
        self, model: str, steps: int | None, guidance: float | None
    ) -> dict[str, int | float]:
        """``steps``/``guidance`` as given, once the chosen model is known to use them.

        Raises:
            Refusal: the model does not use one that was given (nothing was spent).
        """
        given = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
        for name in given:
            if not self.bot.catalog.takes(model, name):
                raise errors.Refusal(
                    f"`{model}` does not use {name}. Leave it out, or pick a model that does"
                    " (see /models)."
                )
        return given

    # --- /imagine ---------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Create images from a text prompt")
    @app_commands.describe(
        prompt="What to draw",
        negative="What to leave out",
        model="Which model (see /models); your /settings or the server's default if empty",
        count="How many images (1-4); each costs credits",
        aspect="Shape of the images",
        seed="Seed for repeatable results (0-4294967295)",
        steps=STEPS_HELP,
        guidance=GUIDANCE_HELP,
        style="A style from /models that wraps your prompt",
        spoiler="Send the images as spoilers",
    )
    @app_commands.choices(aspect=fixed_choices(ASPECT_NAMES))
    @app_commands.autocomplete(model=model_choices("generate"), style=style_choices)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        negative: app_commands.Range[str, 1, NEGATIVE_MAX] | None = None,
        model: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        aspect: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
        style: app_commands.Range[str, 1, 32] | None = None,
        spoiler: bool = False,
    ) -> None:
        prompt = prompt.strip()
        if not prompt or len(prompt) > PROMPT_MAX:
            raise errors.Refusal(f"The prompt must be 1 to {PROMPT_MAX} characters.")
        if negative is not None and len(negative) > NEGATIVE_MAX:
            raise errors.Refusal(f"The negative prompt can be at most {NEGATIVE_MAX} characters.")
        if count is not None and not 1 <= count <= MAX_COUNT:
            raise errors.Refusal(f"Count must be between 1 and {MAX_COUNT}.")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise errors.Refusal(f"The seed must be between 0 and {MAX_SEED}.")
        if aspect is not None and aspect not in ASPECTS:
            raise errors.Refusal(f"The aspect must be one of {', '.join(ASPECTS)}.")
        self.precheck(interaction, prompt, negative)
        chosen = self.model_for(interaction, model, "generate") if model else None
        if chosen:  # a model named: refuse unused steps/guidance at once
            self.tuning(chosen, steps, guidance)
        fields = {
            "prompt": prompt,
            "negative_prompt": negative or None,
            "n": count,
            "aspect_ratio": aspect,
            "seed": seed,
            "model": chosen,
            "steps": steps,
            "guidance": guidance,
        }
        await self.run_generate(interaction, fields, style, spoiler)

    async def run_generate(
        self,
        interaction: discord.Interaction,
        fields: dict[str, Any],
        style: str | None,
        spoiler: bool,
        *,
        what: str | None = None,
    ) -> None:
        """A text-to-image job from checked options (None = left out: the member's
        preferences, the style and the server fill them in, in the core)."""
        caller = caller_of(interaction)

        async def work(tracker: Tracker) -> Delivery:
            request = await self.personalise(interaction, caller, "generate", style, fields)
            self.tuning(request.model or "", request.steps, request.guidance)
            tracker.what = what or f"Imagining {_plural(request.n, 'image')}"
            result = await self.bot.service.generate(caller, request, **tracker.service_options())
            return Delivery(result, request.prompt, spoiler)

        count = fields.get("n")
        label = what or ("Imagining " + (_plural(count, "image") if count else "images"))
        await self.bot.jobs.run(interaction, caller, work, what=label)

    async def personalise(
        self,
        interaction: discord.Interaction,
        caller: Caller,
        operation: Operation,
        style: str | None,
        fields: dict[str, Any],
    ) -> ImageRequest:
        """The core's request with the style and the member's defaults applied; the styled
        text passes the server's filters too.

        Raises:
            Refusal: the styled text breaks this server's rules.
            NotFoundError: no such style here.
        """
        guild = interaction.guild_id
        request = await self.bot.service.personalise(
            caller,
            operation,
            style=style,
            scope=scope_of(guild) if guild is not None else None,
            prefer=self.server_model(interaction),
            **fields,
        )
        self.moderate(interaction, request.prompt, request.negative_prompt)
        return request

    # --- /edit ------------------------------------------------------------------------------

    @app_commands.command(
        name="edit", description="Change an image: variation, sketch, inpaint, background or avatar"
    )
    @app_commands.describe(
        image=f"The image to edit ({FORMAT_NAMES})",
        mode="What kind of edit",
        prompt="What the result should show",
        mask="For inpaint: same size as the image; white = repaint, black = keep",
        strength="How far to move from the original (0-1)",
        model="Which model (see /models)",
        style="A style from /models that wraps your prompt",
        spoiler="Send the images as spoilers",
    )
    @app_commands.choices(mode=fixed_choices(MODE_NAMES))
    @app_commands.autocomplete(model=edit_model_choices, style=style_choices)
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        mode: str,
        prompt: app_commands.Range[str, 1, PROMPT_MAX] | None = None,
        mask: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
        model: str | None = None,
        style: app_commands.Range[str, 1, 32] | None = None,
        spoiler: bool = False,
    ) -> None:
        if mode not in EDIT_MODES:
            raise errors.Refusal(f"The mode must be one of {', '.join(EDIT_MODES)}.")
        if mode == "inpaint" and mask is None:
            raise errors.Refusal(
                "Inpaint needs a mask: the image's size, white = repaint, black = keep."
            )
        if mask is not None and mode != "inpaint":
            raise errors.Refusal("A mask is only used by the inpaint mode.")
        if strength is not None and not 0.0 <= strength <= 1.0:
            raise errors.Refusal("Strength must be between 0 and 1.")
        options = EditOptions(mask, strength, model, style, spoiler)
        await self.start_edit(interaction, image, mode, prompt or "", options)

    async def start_edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        mode: EditMode,
        prompt: str,
        options: EditOptions | None = None,
    ) -> None:
        options = options or EditOptions()
        prompt = prompt.strip()
        if len(prompt) > PROMPT_MAX:
            raise errors.Refusal(f"The prompt can be at most {PROMPT_MAX} characters.")
        check_attachment(image, "image", self.max_attachment)
        mask = options.mask
        if mask is not None:
            check_attachment(mask, "mask", self.max_attachment)
        self.precheck(interaction, prompt)
        model = self.model_for(interaction, options.model, mode) if options.model else None
        caller = caller_of(interaction)

        async def work(tracker: Tracker) -> Delivery:
            source = await self.load(caller, image, "image")
            mask_input = await self.load(caller, mask, "mask") if mask is not None else None
            fields = {
                "prompt": prompt,
                "image": source,
                "mask": mask_input,
                "strength": options.strength,
                "model": model,
            }
            request = await self.personalise(interaction, caller, mode, options.style, fields)
            result = await self.bot.service.edit(caller, request, **tracker.service_options())
            return Delivery(result, request.prompt, options.spoiler)

        await self.bot.jobs.run(interaction, caller, work, what=f"Editing ({mode})")

    # --- remix ------------------------------------------------------------------------------

    async def start_remix(
        self, interaction: discord.Interaction, job_id: str, prompt: str, negative: str
    ) -> None:
        """Run job ``job_id`` again with the same settings (seed included) and new text; the
        presser pays, as for a new job."""
        prompt, negative = prompt.strip(), negative.strip()
        if not prompt or len(prompt) > PROMPT_MAX:
            raise errors.Refusal(f"The prompt must be 1 to {PROMPT_MAX} characters.")
        if len(negative) > NEGATIVE_MAX:
            raise errors.Refusal(f"The negative prompt can be at most {NEGATIVE_MAX} characters.")
        self.precheck(interaction, prompt, negative)
        caller = caller_of(interaction)

        async def work(tracker: Tracker) -> Delivery:
            result = await self.bot.service.rerun(
                caller,
                job_id,
                new_seed=False,
                shared=True,
                prompt=prompt,
                negative_prompt=negative,
                **tracker.service_options(),
            )
            return Delivery(result, prompt)

        await self.bot.jobs.run(interaction, caller, work, what="Remixing")

    # --- /upscale ---------------------------------------------------------------------------

    @app_commands.command(name="upscale", description="Make an image larger and sharper")
    @app_commands.describe(
        image=f"The image to upscale ({FORMAT_NAMES})",
        scale="How much larger",
        model="Which model (see /models)",
    )
    @app_commands.choices(scale=[app_commands.Choice(name=f"{k}x", value=k) for k in (2, 3, 4)])
    @app_commands.autocomplete(model=model_choices("upscale"))
    async def upscale(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        scale: int | None = None,
        model: str | None = None,
    ) -> None:
        if scale is not None and scale not in (2, 3, 4):
            raise errors.Refusal("The scale must be 2, 3 or 4.")
        check_attachment(image, "image", self.max_attachment)
        self.precheck(interaction)
        model = self.model_for(interaction, model, "upscale")
        caller = caller_of(interaction)

        async def work(tracker: Tracker) -> Delivery:
            source = await self.load(caller, image, "image")
            request = make_request(operation="upscale", image=source, scale=scale, model=model)
            result = await self.bot.service.upscale(caller, request, **tracker.service_options())
            return Delivery(result, "")

        await self.bot.jobs.run(interaction, caller, work, what="Upscaling")

    async def load(self, caller: Caller, attachment: discord.Attachment, what: str) -> InputImage:
        """Download an attachment and have the core check it (size, format, pixels) and
        recognise it where it is one of the caller's own results."""
        data = await download(attachment, what)
        return await self.bot.service.load_input(
            data, what=what, max_bytes=self.max_attachment, caller=caller
        )

    # --- message context menus --------------------------------------------------------------

    async def upscale_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """The "Upscale" menu: /upscale of the message's first image."""
        await self.upscale.callback(self, interaction, _image_of(message))

    async def edit_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        attachment = _image_of(message)
        self.precheck(interaction)
        await interaction.response.send_modal(EditModal(self, attachment))


def _cancel_reply(job: JobRecord) -> str:
    """What the Cancel button's presser is told (the job's own message says the rest)."""
    if job.status == "running":
        return "✖️ Cancelling: images already made are kept and charged, the rest is given back."
    if job.status == "cancelled":
        return f"✖️ Cancelled: {render.credits(job.credits_refunded)} given back."
    return "This job is not running any more."


def _image_of(message: discord.Message) -> discord.Attachment:
    """The first image attached to ``message``.

    Raises:
        Refusal: it has none.
    """
    for attachment in message.attachments:
        if is_accepted_upload(attachment.content_type, attachment.filename):
            return attachment
    raise errors.Refusal("That message has no image attached.")


MENU_MODES = tuple(m for m in EDIT_MODES if m != "inpaint")  # inpaint needs a mask upload


class _JobModal(discord.ui.Modal):
    """A form whose submission starts a job; a failure is told privately (and the form is
    done either way)."""

    def __init__(self, cog: GenerateCog, kind: str) -> None:
        super().__init__(timeout=900, custom_id=f"imagegate:{kind}-modal:{secrets.token_hex(6)}")
        self.cog = cog

    async def on_error(  # type: ignore[override]  # Modal's signature differs from View's
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        self.stop()
        await errors.report(interaction, error)


class EditModal(_JobModal, title="Edit image"):
    """The "Edit image" menu: which kind of edit (inpaint needs a mask, so /edit) and its
    prompt."""

    mode: discord.ui.Label[EditModal] = discord.ui.Label(
        text="Kind of edit",
        component=discord.ui.Select(
            options=[
                discord.SelectOption(label=MODE_NAMES[m][:100], value=m, default=m == "variation")
                for m in MENU_MODES
            ],
        ),
    )
    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="What should the new version show?",
        style=discord.TextStyle.paragraph,
        placeholder="e.g. the same scene at night, in watercolour",
        min_length=1,
        max_length=1000,
    )

    def __init__(self, cog: GenerateCog, attachment: discord.Attachment) -> None:
        super().__init__(cog, "edit")
        self.attachment = attachment

    async def on_submit(self, interaction: discord.Interaction) -> None:
        select = self.mode.component
        assert isinstance(select, discord.ui.Select)
        mode = select.values[0] if select.values else "variation"
        if mode not in MENU_MODES:
            raise errors.Refusal(f"The mode must be one of {', '.join(MENU_MODES)}.")
        await self.cog.start_edit(interaction, self.attachment, mode, self.prompt.value)


class RemixModal(_JobModal, title="Remix"):
    """The Remix button: the job's prompt and negative prompt, pre-filled, to change."""

    def __init__(self, cog: GenerateCog, job: JobRecord) -> None:
        super().__init__(cog, "remix")
        self.job_id = job.job_id
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=render.clip(str(job.request.get("prompt") or ""), PROMPT_MAX),
            min_length=1,
            max_length=PROMPT_MAX,
        )
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt",
            default=render.clip(str(job.request.get("negative_prompt") or ""), NEGATIVE_MAX)
            or None,
            required=False,
            max_length=NEGATIVE_MAX,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.start_remix(interaction, self.job_id, self.prompt.value, self.negative.value)


class ButtonActions:
    """What the result buttons do; see ``views`` for their custom ids.

    Anyone who can see a public result may press its buttons, and spends their own credits as
    themselves. Reading the job of someone else's result uses an elevated *read* (the result
    is on screen anyway); nothing is ever charged to the requester for another's click.
    """

    def __init__(self, bot: ImageBot, cog: GenerateCog) -> None:
        self.bot = bot
        self.cog = cog

    async def handle(
        self, interaction: discord.Interaction, action: str, job_id: str, k: int | None
    ) -> None:
        if action == "delete":
            await self.delete(interaction, job_id)
            return
        if action == "cancel":
            await self.cancel(interaction, job_id)
            return
        self.cog.precheck(interaction)
        if action == "remix":
            job = await self.read_job(caller_of(interaction), job_id)
            await interaction.response.send_modal(RemixModal(self.cog, job))
            return
        if action == "vary" and k is None:
            count = views.image_count(interaction.message, job_id)
            if count > 1:
                await interaction.response.send_message(
                    "Which image should I make variations of?",
                    view=views.variations_picker(job_id, count),
                    ephemeral=True,
                )
                return
            k = 1
        caller = caller_of(interaction)
        labels = {
            "reroll": "Rerolling",
            "vary": f"Making variations of image {k}",
            "upscale": f"Upscaling image {k}",
        }

        async def work(tracker: Tracker) -> Delivery:
            job = await self.read_job(caller, job_id)
            prompt = str(job.request.get("prompt") or "")
            self.cog.moderate(interaction, prompt, job.request.get("negative_prompt"))
            service = self.bot.service
            # Whoever sees a result's buttons was shown it, so they may build on it (and pay).
            common: dict[str, Any] = {"shared": True, **tracker.service_options()}
            if action == "reroll":
                result = await service.rerun(caller, job_id, **common)
            else:
                result = await service.from_result(
                    caller,
                    job_id,
                    k or 1,
                    "upscale" if action == "upscale" else "variation",
                    prefer=self.cog.server_model(interaction),
                    n=min(MAX_COUNT, int(job.request.get("n") or 1)),
                    **common,
                )
            return Delivery(result, prompt)

        await self.bot.jobs.run(interaction, caller, work, what=labels[action])

    async def read_job(self, caller: Caller, job_id: str) -> JobRecord:
        """The job behind a result message, whoever's it is (read only).

        Raises:
            NotFoundError: the job is gone (e.g. another database).
        """
        try:
            return await self.bot.service.job(caller, job_id, shared=True)
        except NotFoundError:
            raise NotFoundError("This result is no longer available (its job is gone).") from None

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """Delete a result message: its requester, or anyone with Manage Messages."""
        await interaction.response.defer()
        caller = caller_of(interaction)
        try:
            owner = (await self.read_job(caller, job_id)).user == caller.key
        except NotFoundError:
            owner = False
        if not (owner or interaction.permissions.manage_messages):
            await interaction.followup.send(
                "🔒 Only the person who asked for these images, or someone with Manage Messages,"
                " can delete them.",
                ephemeral=True,
            )
            return
        with contextlib.suppress(NotFoundError):  # never shown again by /history or /show
            await self.bot.service.delete_job(caller, job_id, moderator=not owner)
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            if interaction.message is None:
                raise
            await interaction.message.delete()
        log.info("result of job %s deleted by %s", job_id, caller.key)

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """Stop a running job: its requester, or anyone with Manage Messages. The job's own
        progress message then says what was charged and what was given back."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        caller = caller_of(interaction)
        moderator = bool(interaction.permissions.manage_messages)
        try:
            job = await self.bot.service.cancel(caller, job_id, moderator=moderator)
        except NotFoundError:
            await interaction.edit_original_response(
                content="🔒 Only the person who started this job, or someone with Manage"
                " Messages, can cancel it."
            )
            return
        await interaction.edit_original_response(content=_cancel_reply(job))
