"""Value types shared by the core and both front ends (pydantic, immutable where it matters)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import (
    ImageGateError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobInterruptedError,
    NotFoundError,
)
from .moderation import normalise_prompt

Operation = Literal["generate", "variation", "sketch", "inpaint", "background", "avatar", "upscale"]
EditMode = Literal["variation", "sketch", "inpaint", "background", "avatar"]
OPERATIONS: tuple[Operation, ...] = (
    "generate",
    "variation",
    "sketch",
    "inpaint",
    "background",
    "avatar",
    "upscale",
)
EDIT_MODES: tuple[EditMode, ...] = ("variation", "sketch", "inpaint", "background", "avatar")
MAX_PROMPT_CHARS = 4000
MAX_IMAGES_PER_JOB = 10
MAX_SIDE = 4096
IMAGE_URI_PREFIX = "imagegate://images/"
_IMAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def image_reference(text: str, *, bare: bool = False) -> str | None:
    """The image id that ``text`` names: ``imagegate://images/{id}``, or with ``bare`` also
    the id alone; None when ``text`` is no reference.

    Raises:
        NotFoundError: an ``imagegate://images/`` URI whose id cannot exist.
    """
    text = text.strip()
    if text.startswith(IMAGE_URI_PREFIX):
        image_id = text.removeprefix(IMAGE_URI_PREFIX)
        if not _IMAGE_ID.fullmatch(image_id):
            raise NotFoundError(f"no image {image_id[:80]!r} of yours")
        return image_id
    return text if bare and _IMAGE_ID.fullmatch(text) else None


class Caller(BaseModel):
    """Who asks: ``frontend:user_id`` keys the quota; guild, roles and client pick the policy."""

    model_config = ConfigDict(frozen=True)

    frontend: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\s:]+$")
    guild_id: int | None = None
    role_ids: tuple[int, ...] = ()
    is_admin: bool = False

    @property
    def key(self) -> str:
        """The quota key, e.g. ``discord:1234``."""
        return f"{self.frontend}:{self.user_id}"

    @classmethod
    def parse(cls, text: str, **extra: Any) -> Caller:
        """Build a caller from ``frontend:id``.

        Raises:
            InvalidRequestError: the text is not of that form.
        """
        frontend, sep, user_id = text.partition(":")
        if not sep:
            raise InvalidRequestError(
                f"user must look like frontend:id (e.g. cli:ops), not {text!r}"
            )
        try:
            return cls(frontend=frontend, user_id=user_id, **extra)
        except ValueError:
            raise InvalidRequestError(f"invalid user {text!r}: use frontend:id") from None


class InputImage(BaseModel):
    """An input image whose type and size were read from its header and checked against the
    limits (``core.images.load_input``); ``ImageService`` decodes it in full, off the event
    loop, before it reserves credits for a job.

    ``source`` names where it came from when it is one of our stored results, so providers that
    work on their own image ids (Deepmode upscale) can find them.
    """

    model_config = ConfigDict(frozen=True)

    data: bytes = Field(repr=False)
    mime: str
    width: int
    height: int
    source_image_id: str | None = None
    provider: str | None = None
    provider_image_id: str | None = None


class ImageRequest(BaseModel):
    """What a front end asks for. Check with ``ImageService``; adapters map it in ``plan()``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: Operation = "generate"
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    n: int = 1
    size: tuple[int, int] | None = None
    aspect_ratio: str | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=50)
    strength: float | None = Field(None, ge=0, le=1)
    scale: int | None = Field(None, ge=2, le=4)
    model: str | None = None
    image: InputImage | None = None
    mask: InputImage | None = None
    # Options of the chosen model (``ModelInfo.options``), then per provider kind or name.
    options: dict[str, Any] = Field(default_factory=dict)
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _as_providers_see_it(cls, value: str | None) -> str | None:
        # The one normalisation (core.moderation): what is stored, filtered and sent.
        return None if value is None else normalise_prompt(value)

    @field_validator("n")
    @classmethod
    def _count_in_range(cls, value: int) -> int:
        # One wording for every front end (the MCP schema only advertises the range).
        if not 1 <= value <= MAX_IMAGES_PER_JOB:
            raise ValueError(f"the number of images must be between 1 and {MAX_IMAGES_PER_JOB}")
        return value

    @field_validator("size")
    @classmethod
    def _size_in_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(64 <= side <= MAX_SIDE for side in value):
            raise ValueError(f"each side must be between 64 and {MAX_SIDE} pixels")
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        w, sep, h = value.partition(":")
        if not (sep and w.isdecimal() and h.isdecimal() and 0 < int(w) <= 32 and 0 < int(h) <= 32):
            raise ValueError(
                "aspect ratio must look like W:H with whole numbers up to 32, e.g. 16:9"
            )
        return value

    @model_validator(mode="after")
    def _operation_inputs(self) -> ImageRequest:
        if self.operation == "generate":
            if not self.prompt:
                raise ValueError("a prompt is required")
            if self.image is not None:
                raise ValueError("generate takes no input image; use an edit mode")
        elif self.image is None:
            raise ValueError(f"{self.operation} needs an input image")
        if self.operation == "inpaint" and self.mask is None:
            raise ValueError("inpaint needs a mask (white = repaint, black = keep)")
        if self.mask is not None and self.operation != "inpaint":
            raise ValueError("a mask is only used by the inpaint mode")
        if self.size is not None and self.aspect_ratio is not None:
            raise ValueError("give a size or an aspect ratio, not both")
        return self

    @classmethod
    def checked(cls, **fields: Any) -> ImageRequest:
        """Build a request from front-end input (``None`` values mean "not given").

        ``options`` may hold ``steps`` and ``guidance`` too (as ``ModelInfo.options`` lists
        them); they become the request's own fields.

        Raises:
            InvalidRequestError: naming the first bad field and what is allowed.
        """
        fields = _lift_tunables(fields)
        try:
            return cls(**{k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise InvalidRequestError(f"{where}: {message}" if where else message) from None

    def provider_texts(self) -> tuple[str, ...]:
        """Every text of this request that reaches a provider, as it reaches it: what the
        word filters must check."""
        return tuple(text for text in (self.prompt, self.negative_prompt) if text)

    def ratio(self) -> float | None:
        """The requested width/height ratio, from the size or the aspect ratio."""
        if self.size:
            return self.size[0] / self.size[1]
        if self.aspect_ratio:
            w, _, h = self.aspect_ratio.partition(":")
            return int(w) / int(h)
        return None


def _lift_tunables(fields: dict[str, Any]) -> dict[str, Any]:
    options = dict(fields.get("options") or {})
    lifted = {name: options.pop(name) for name in ("steps", "guidance") if name in options}
    for name in lifted:
        if fields.get(name) is not None:
            raise InvalidRequestError(f"{name} is given twice (also among the options)")
    return {**fields, **lifted, "options": options}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"1024x768"`` -> ``(1024, 768)``; None stays None.

    Raises:
        InvalidRequestError: not of the form WIDTHxHEIGHT.
    """
    if text is None:
        return None
    width, sep, height = text.lower().partition("x")
    if not (
        sep and width.isdecimal() and height.isdecimal() and len(width) <= 5 and len(height) <= 5
    ):
        raise InvalidRequestError(f"size must look like WIDTHxHEIGHT, e.g. 1024x768, not {text!r}")
    return int(width), int(height)


class GeneratedImage(BaseModel):
    """One image as an adapter returns it: raw bytes, not yet checked."""

    data: bytes = Field(repr=False)
    seed: int | None = None
    provider_image_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class StoredImage(BaseModel):
    """A delivered image: checked, stored on disk, recorded with its job."""

    id: str
    job_id: str
    index: int
    path: Path
    mime: str
    width: int
    height: int
    seed: int | None = None
    sha256: str
    model: str
    provider_image_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    size_bytes: int | None = None  # None for images stored before sizes were recorded
    lost: str | None = None  # why its file is gone or damaged; a lost image is never served

    @property
    def uri(self) -> str:
        """The MCP resource URI of this image."""
        return f"{IMAGE_URI_PREFIX}{self.id}"


class ImageResult(BaseModel):
    """What ``ImageService.generate/edit/upscale`` return."""

    job_id: str
    operation: Operation
    model: str
    images: list[StoredImage]
    credits_charged: int
    credits_remaining: int
    warnings: list[str] = Field(default_factory=list)
    replayed: bool = False

    @classmethod
    def from_record(cls, job: JobRecord, remaining: int, *, replayed: bool = False) -> ImageResult:
        """A stored job's result, every image included (lost ones too), for a caller who has
        ``remaining`` credits now; ``replayed``: handed out again for a repeated request."""
        return cls(
            job_id=job.job_id,
            operation=job.operation,
            model=job.model,
            images=job.images,
            credits_charged=job.credits_charged,
            credits_remaining=remaining,
            warnings=job.warnings,
            replayed=replayed,
        )


class Estimate(BaseModel):
    """What a job would cost, from ``ImageService.estimate`` (nothing reserved, no provider
    called). ``credits`` is the most it can cost: ``n`` images at the highest price in the
    model's fallback chain, the amount a real job holds; it is charged only for delivered
    images, at the price of the model that made each."""

    operation: Operation
    model: str
    n: int
    price_per_image: int
    credits: int
    credits_remaining: int
    warnings: list[str] = Field(default_factory=list)

    @property
    def affordable(self) -> bool:
        return self.credits <= self.credits_remaining


JobStatus = Literal["running", "succeeded", "partial", "failed", "interrupted", "cancelled"]


class JobRecord(BaseModel):
    """A job as stored: enough to reroll, vary or upscale it after a restart."""

    job_id: str
    user: str
    operation: Operation
    model: str
    status: JobStatus
    request: dict[str, Any]
    images: list[StoredImage]
    credits_charged: int
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    cancel_requested: bool = False  # asked to stop; the process running it will
    credits_held: int | None = None  # reserved when it started; the rest went back
    deleted: bool = False  # its owner (or a moderator) deleted the result: never show it

    @property
    def credits_refunded(self) -> int:
        """Credits reserved for the job and given back (0 while it runs)."""
        if self.status == "running" or self.credits_held is None:
            return 0
        return max(0, self.credits_held - self.credits_charged)

    def failure(self) -> ImageGateError | None:
        """The error a failed, interrupted or cancelled job ended with, carrying its billing
        facts (what it charged, whether its credits were given back); None for other jobs."""
        error: ImageGateError
        if self.status == "failed":
            error = JobFailedError(self.error or "the job failed")
        elif self.status == "interrupted":
            error = JobInterruptedError("the server stopped while the job ran")
        elif self.status == "cancelled":
            error = JobCancelledError("the job was cancelled before it finished")
        else:
            return None
        charged = self.credits_charged
        error.ended_job(self.job_id, charged=charged, refunded=charged == 0)
        return error


class JobPage(BaseModel):
    """A page of a user's jobs, newest first; ``next_cursor`` asks for the next (None: the
    last page)."""

    jobs: list[JobRecord]
    next_cursor: str | None = None


class ImagePage(BaseModel):
    """A page of a user's stored images, newest first; ``next_cursor`` as in ``JobPage``."""

    images: list[StoredImage]
    next_cursor: str | None = None


class QuotaStatus(BaseModel):
    """A user's credits as ``quota show --json`` and ``get_quota`` report them.

    ``remaining`` is below zero while the user owes credits (``debt``): a job delivered after
    its reservation had been released is charged anyway (a ``late_charge`` ledger entry), and
    what no credit covered then is paid first by the next allowance. ``late_charged``: credits
    charged that way in the current period.
    """

    user: str
    remaining: int
    allowance: int
    granted: int
    held: int
    in_flight: int
    period: str
    resets_at: datetime | None
    debt: int = 0
    late_charged: int = 0


class LedgerEntry(BaseModel):
    """One line of a user's append-only ledger."""

    entry_id: int
    user: str
    kind: str
    d_allowance_used: int
    d_granted: int
    d_held: int
    hold_id: str | None
    reason: str | None
    created_at: datetime
    d_debt: int = 0  # credits owed (``late_charge`` adds, a period reset pays)
    # Who made an operator's change (grant, adjust, allowance): a user key such as ``cli:ops``.
    actor: str | None = None


class ModelInfo(BaseModel):
    """A configured model as ``imagegate models --json`` and ``list_models`` show it."""

    ref: str
    provider: str
    kind: str
    model: str
    operations: list[Operation]
    max_images: int
    price: int
    prices: dict[str, int]
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    # Each option the model takes (a small JSON schema each): ``steps``/``guidance`` where the
    # provider uses them, and the provider's own. Front ends pass them as ``options``.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
