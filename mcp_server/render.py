"""Tool results for agents: a short text, structured content, a resource link per image, and
image content only as previews within a byte budget.

Every result of an image tool carries ``structuredContent`` matching ``JobOut`` (the tools'
output schema), errors included: clients built on the TypeScript SDK validate it even on
``isError`` results and throw on a mismatch. An error is ``JobOut`` with ``status`` "failed" (or
"cancelled"/"interrupted") and ``error`` set (``code``, whether credits were refunded, when to
retry); its text says the same in words, for clients that show only text.
"""

from __future__ import annotations

import asyncio
import base64
import math
from typing import Literal, cast

from mcp.types import (
    CallToolResult,
    ContentBlock,
    ImageContent,
    Resource,
    ResourceLink,
    TextContent,
)
from pydantic import BaseModel, Field

from core import (
    EXTENSIONS,
    Estimate,
    ImageGateError,
    ImageResult,
    ImageService,
    JobPage,
    JobRecord,
    NotFoundError,
    SpendLimitError,
    StoredImage,
    preview,
)

ReturnImage = Literal["none", "preview", "full"]
JobStatus = Literal[
    "succeeded", "partial", "running", "failed", "interrupted", "cancelled", "dry_run"
]


class ImageOut(BaseModel):
    """One delivered image; read ``uri`` as a resource for the full-size file."""

    uri: str
    mime: str
    width: int
    height: int
    seed: int | None = None
    path: str | None = None  # the copy in [mcp] save_dir, when one is set


class ErrorOut(BaseModel):
    """What an agent needs to react to a failure (the job's id, charge and the credits left
    are the result's own fields)."""

    code: str
    message: str
    advice: str
    retryable: bool
    retry_after_s: int | None = None
    credits_refunded: bool = False
    hint: str


class JobOut(BaseModel):
    """The structured result of generate_image, edit_image, upscale_image and get_job;
    ``error`` is set exactly when the result is an error; ``price``: the most the job can
    cost, in a dry run or a refusal over a spending limit."""

    status: JobStatus
    job_id: str | None
    model: str | None = None
    images: list[ImageOut] = Field(default_factory=list)
    credits_charged: int = 0
    credits_remaining: int | None = None
    warnings: list[str] = Field(default_factory=list)
    price: int | None = None
    error: ErrorOut | None = None


# --- results ----------------------------------------------------------------------------------


async def job_result(
    service: ImageService,
    job: ImageResult | JobRecord,
    status: JobStatus,
    remaining: int | None,
    return_image: ReturnImage,
) -> CallToolResult:
    """Render a job's delivered images: text, inline previews within the budget, resource
    links."""
    warnings = list(job.warnings)
    if isinstance(job, ImageResult) and job.replayed:
        warnings.append("this request was already served: same images, not charged again")
    blocks, notes = await _inline_images(service, job.images, return_image)
    warnings.extend(notes)
    paths, note = await _save_copies(service, job.images)
    warnings.extend(note)
    out = JobOut(
        status=status,
        job_id=job.job_id,
        model=job.model,
        credits_charged=job.credits_charged,
        credits_remaining=remaining,
        warnings=warnings,
        images=[_image_out(i, path) for i, path in zip(job.images, paths, strict=True)],
    )
    links: list[ContentBlock] = [
        ResourceLink(type="resource_link", **image_resource(i).model_dump(exclude_none=True))
        for i in job.images
    ]
    text = TextContent(type="text", text=_summary(out))
    return CallToolResult(
        content=[text, *blocks, *links], structured_content=out.model_dump(mode="json")
    )


async def image_result(
    service: ImageService, result: ImageResult, return_image: ReturnImage, *, requested: int
) -> CallToolResult:
    """Render a finished ``ImageResult`` of a job that asked for ``requested`` images."""
    status: JobStatus = "partial" if len(result.images) < requested else "succeeded"
    return await job_result(service, result, status, result.credits_remaining, return_image)


async def record_result(
    service: ImageService, record: JobRecord, remaining: int | None, return_image: ReturnImage
) -> CallToolResult:
    """Render a stored job (after a restart, or once the process forgot it)."""
    failure = record.failure()
    if failure is not None:
        return error_result(failure, remaining=remaining)
    if record.status == "running":
        return running_result(record.job_id, record.model, 0.0, remaining)
    return await job_result(service, record, record.status, remaining, return_image)


def estimate_result(estimate: Estimate) -> CallToolResult:
    """A dry run: what the job would cost; nothing was spent and no provider was called."""
    out = JobOut(
        status="dry_run",
        job_id=None,
        model=estimate.model,
        credits_remaining=estimate.credits_remaining,
        warnings=estimate.warnings,
        price=estimate.credits,
    )
    count = f"{estimate.n} image{'' if estimate.n == 1 else 's'}"
    lines = [
        f"Dry run, nothing spent: {estimate.operation} of {count} with {estimate.model} would"
        f" cost up to {estimate.credits} credit(s) ({estimate.price_per_image} per delivered"
        f" image); you have {estimate.credits_remaining} left.",
        *(f"Warning: {w}" for w in estimate.warnings),
    ]
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(lines))],
        structured_content=out.model_dump(mode="json"),
    )


def image_resource(image: StoredImage) -> Resource:
    """A stored image as ``resources/list`` and resource links show it."""
    return Resource(
        uri=image.uri,
        name=f"{image.id}.{EXTENSIONS.get(image.mime, 'img')}",
        title=f"Image {image.index + 1} of job {image.job_id}",
        mime_type=image.mime,
        description=f"full-size {image.width}x{image.height} image",
        size=image.size_bytes,
    )


class CancelOut(BaseModel):
    """What cancel_job did: the job's status after it (cancelled; running while another server
    process stops it; or the status it had already ended with)."""

    job_id: str
    status: JobStatus
    credits_charged: int
    credits_remaining: int | None = None


def cancel_result(record: JobRecord, remaining: int | None) -> CallToolResult:
    """What ``cancel_job`` did: stopped the job, asked its process to, or nothing (it had
    finished)."""
    out = CancelOut(
        job_id=record.job_id,
        status=record.status,
        credits_charged=record.credits_charged,
        credits_remaining=remaining,
    )
    job = f"Job {record.job_id}"
    if record.status == "running":
        text = (
            f"{job} runs in another server process, which was asked to stop it; it stops within"
            " seconds and is charged nothing. get_job shows when it has."
        )
    elif record.status == "cancelled" and record.cancel_requested:
        text = f"{job} was cancelled: charged {record.credits_charged} credit(s)."
    else:
        text = f"{job} had already ended ({record.status}); nothing to cancel."
    left = "" if remaining is None else f" {remaining} credit(s) left."
    return CallToolResult(
        content=[TextContent(type="text", text=text + left)],
        structured_content=out.model_dump(mode="json"),
    )


class JobLine(BaseModel):
    """One job in ``list_jobs``."""

    job_id: str
    status: JobStatus
    operation: str
    model: str
    prompt: str
    created_at: str
    credits_charged: int
    images: list[str]
    error: str | None = None


class JobsOut(BaseModel):
    """A page of the caller's jobs, newest first; pass ``next_cursor`` for the next page."""

    jobs: list[JobLine]
    next_cursor: str | None = None


def jobs_result(page: JobPage) -> CallToolResult:
    """``list_jobs``: one line of text per job, and the page as ``JobsOut``."""
    out = JobsOut(
        jobs=[
            JobLine(
                job_id=j.job_id,
                status=j.status,
                operation=j.operation,
                model=j.model,
                prompt=_clip(str(j.request.get("prompt") or ""), 120),
                created_at=j.created_at.isoformat(timespec="seconds"),
                credits_charged=j.credits_charged,
                images=[i.uri for i in j.images if not i.lost],
                error=j.error,
            )
            for j in page.jobs
        ],
        next_cursor=page.next_cursor,
    )
    lines = [
        f"{j.created_at} {j.job_id} {j.operation} {j.status}, {j.credits_charged} credit(s):"
        f" {' '.join(j.images) or '(no images)'}"
        + (f' "{_clip(j.prompt, 60)}"' if j.prompt else "")
        for j in out.jobs
    ] or ["No jobs yet."]
    if out.next_cursor:
        lines.append(f'More: call list_jobs with cursor "{out.next_cursor}".')
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(lines))],
        structured_content=out.model_dump(mode="json"),
    )


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _image_out(image: StoredImage, path: str | None = None) -> ImageOut:
    return ImageOut(
        uri=image.uri,
        mime=image.mime,
        width=image.width,
        height=image.height,
        seed=image.seed,
        path=path,
    )


async def _save_copies(
    service: ImageService, images: list[StoredImage]
) -> tuple[list[str | None], list[str]]:
    """The images' copies in ``[mcp] save_dir`` (None each without one), and a warning if they
    could not be written: the images were delivered and paid for either way."""
    directory = service.settings.mcp.save_dir
    if directory is None or not images:
        return [None] * len(images), []
    try:
        return [str(p) for p in await service.save_copies(images, directory)], []
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return [None] * len(images), [f"could not write copies to [mcp] save_dir: {why}"]


def running_result(
    job_id: str, model: str | None, elapsed_s: float, remaining: int | None
) -> CallToolResult:
    """A job still running past the wait bound: its id, to collect with get_job."""
    out = JobOut(status="running", job_id=job_id, model=model, credits_remaining=remaining)
    text = (
        f"Job {job_id} is still running after {elapsed_s:.0f} s. Call get_job with"
        f' job_id "{job_id}" (and wait_s) to collect the images; credits are charged only'
        " for images delivered."
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=out.model_dump(mode="json"),
    )


def _summary(out: JobOut) -> str:
    count = len(out.images)
    lines = [
        f"{'Made' if out.status == 'succeeded' else 'Partly made'} {count} image"
        f"{'' if count == 1 else 's'} with {out.model} (job {out.job_id}):"
    ]
    for image in out.images:
        kind = EXTENSIONS.get(image.mime, image.mime).upper()
        saved = f", saved as {image.path}" if image.path else ""
        lines.append(
            f"- {image.uri} ({image.width}x{image.height} {kind}, seed {image.seed}){saved}"
        )
    remaining = "" if out.credits_remaining is None else f", {out.credits_remaining} left"
    lines.append(f"Charged {out.credits_charged} credit(s){remaining}.")
    lines.extend(f"Warning: {w}" for w in out.warnings)
    lines.append(
        "Read a URI as a resource for the full image, or pass it to edit_image/upscale_image."
    )
    return "\n".join(lines)


async def _inline_images(
    service: ImageService, images: list[StoredImage], mode: ReturnImage
) -> tuple[list[ContentBlock], list[str]]:
    """Image blocks whose base64 text stays within ``[mcp] result_max_bytes`` all together,
    and notes on what was left out (over the budget, or lost: never sent broken)."""
    if mode == "none" or not images:
        return [], []
    lost: list[str] = []
    readable, datas = [], []
    for image in images:
        try:
            datas.append(await service.image_data(image))
            readable.append(image)
        except NotFoundError as exc:
            lost.append(exc.message)
    blocks, note = await _fit(service, readable, datas, mode)
    return blocks, lost + ([note] if note else [])


async def _fit(
    service: ImageService, images: list[StoredImage], datas: list[bytes], mode: ReturnImage
) -> tuple[list[ContentBlock], str | None]:
    if not images:
        return [], None
    mcp = service.settings.mcp
    budget = mcp.result_max_bytes
    if mode == "full" and sum(_b64_len(len(d)) for d in datas) <= budget:
        return [_image_block(d, i.mime) for d, i in zip(datas, images, strict=True)], None
    per_image = min(mcp.preview_max_bytes, budget // len(images)) * 3 // 4 - 64
    blocks: list[ContentBlock] = []
    used = 0
    for data in datas:
        small, mime = await asyncio.to_thread(
            preview, data, max_edge=mcp.preview_max_edge, max_bytes=per_image
        )
        if used + _b64_len(len(small)) > budget:
            break
        used += _b64_len(len(small))
        blocks.append(_image_block(small, mime))
    note = None
    if mode == "full":
        note = "full-size images exceed the inline size budget: previews sent instead"
    if len(blocks) < len(images):
        note = f"only {len(blocks)} of {len(images)} previews fit the inline size budget"
    return blocks, note


def _image_block(data: bytes, mime: str) -> ImageContent:
    return ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime)


def _b64_len(size: int) -> int:
    return 4 * math.ceil(size / 3)


# --- errors -----------------------------------------------------------------------------------

# What to do, per kind of advice the core attaches to an error (``ImageGateError.advice``).
HINTS: dict[str, str] = {
    "fix_request": "Fix the arguments and call again.",
    "retry": "Wait, then call again; collect running jobs with get_job first.",
    "try_other_model": "Call again later, or pick another model from list_models.",
    "wait_for_credits": "Call get_quota for your balance; wait for the reset or ask an operator"
    " for credits.",
    "change_content": "Change the prompt or image; the same request will be refused again.",
    "tell_operator": "This needs the server's operator.",
    "check_reference": "Use a job id or imagegate://images/ URI from your own results.",
    "resend_if_wanted": "Run the request again if you still want it.",
    "report_bug": "This is a server bug; tell the operator.",
}


_ERROR_STATUS: dict[str, JobStatus] = {"cancelled": "cancelled", "interrupted": "interrupted"}


def error_result(
    exc: ImageGateError, *, remaining: int | None = None, structured: bool = True
) -> CallToolResult:
    """An ``isError`` result: readable text plus a ``JobOut`` whose ``error`` holds the facts
    the error carries (retryable, when, what it cost, whether it was refunded). Tools whose
    output schema is not ``JobOut`` pass ``structured=False``: the text alone then."""
    facts = exc.as_dict()
    out = ErrorOut(
        code=exc.code,
        message=exc.message,
        advice=exc.advice,
        retryable=exc.retryable,
        retry_after_s=cast(int | None, facts["retry_after_s"]),
        credits_refunded=exc.refunded,
        hint=HINTS[exc.advice],
    )
    parts = [f"{out.code}: {out.message.rstrip('.')}.", _cost(exc)]
    if remaining is not None:
        parts.append(f"{remaining} credit(s) left.")
    if exc.retryable:
        wait = f" in about {out.retry_after_s} s" if out.retry_after_s is not None else ""
        parts.append(f"You can retry this call{wait}.")
    elif out.retry_after_s is not None:
        parts.append(f"The limit lifts in about {out.retry_after_s} s.")
    parts.append(out.hint)
    job = JobOut(
        status=_ERROR_STATUS.get(exc.code, "failed"),
        job_id=exc.job_id,
        credits_charged=exc.credits_charged,
        credits_remaining=remaining,
        price=exc.price if isinstance(exc, SpendLimitError) else None,
        error=out,
    )
    return CallToolResult(
        content=[TextContent(type="text", text=" ".join(parts))],
        structured_content=job.model_dump(mode="json") if structured else None,
        is_error=True,
    )


def _cost(exc: ImageGateError) -> str:
    if exc.credits_charged:
        charged = exc.credits_charged
        return f"Job {exc.job_id} was charged {charged} credit(s) for what it delivered."
    if exc.refunded:
        return f"Job {exc.job_id} was not charged: its credits were refunded."
    return "Nothing was charged."
