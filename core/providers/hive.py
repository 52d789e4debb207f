"""Hive image generation, v2 task API (kind ``hive``): ``Token`` auth, 1024x1024, up to 6.

Docs: https://docs.thehive.ai/docs/image-generation (request), https://docs.thehive.ai/reference/
submit-a-task-synchronously and .../submit-a-task-asynchronously (task envelope). The API has
no model field (the project behind the key fixes it), so the configured model is a label. The
prompt and every image go through Hive's moderation; a refusal fails the whole call and is
reported as a content refusal, never retried.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

from ..errors import InvalidRequestError, ProviderResponseError
from ..types import GeneratedImage, ImageRequest
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderOptions,
    check_output_size,
    download,
    failed_job,
    ignored,
    no_image,
    read_callback_or_reply,
    require_key,
)

SIZE = (1024, 1024)  # the only v2 size [HV-ref]
MAX_IMAGES = 6  # [HV-ig]
_MODERATION = ("moderation", "nsfw", "flagged")


class _Image(BaseModel):
    url: str


class _Output(BaseModel):
    images: list[_Image] = []


class _Response(BaseModel):
    output: list[_Output] = []


class _Code(BaseModel):
    code: str | int = "0"
    message: str = ""


class _Status(BaseModel):
    status: _Code = _Code()
    response: _Response | None = None


class _Task(BaseModel):
    id: str = ""
    status: list[_Status]


class HiveImageModel(ImageModel):
    kind = "hive"
    default_base_url = "https://api.thehive.ai"

    class Options(ProviderOptions):
        """The v2 API documents no options beyond the prompt, negative text and count."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate"}),
            max_images_per_call=MAX_IMAGES,
            description=f"Hive v2 ({self.model}): 1024x1024 text to image, up to 6 per call",
        )

    def plan(self, request: ImageRequest) -> Plan:
        self.accept(request, self.Options)
        if request.size not in (None, SIZE) or request.aspect_ratio not in (None, "1:1"):
            raise InvalidRequestError(
                "Hive v2 makes 1024x1024 (1:1) images only; leave out the size or ask for 1:1"
            )
        check_output_size(self, SIZE, "Hive v2")
        warnings = ignored(request, ("seed", "steps", "guidance", "strength", "scale"), "Hive v2")
        options: dict[str, Any] = {}
        if request.negative_prompt:
            options["neg_text"] = request.negative_prompt
        body = {"text_data": request.prompt, "options": options}
        return Plan(request.operation, request.n, request, body, tuple(warnings))

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        body: dict[str, Any] = {**plan.body, "options": {**plan.body["options"]}}
        body["options"]["num_images"] = count

        async def post(callback: str | None) -> httpx.Response:
            # Async: an immediate acknowledgement, then the finished task POSTed to us.
            mode = "async" if callback else "sync"
            sent = {**body, "callback_url": callback} if callback else body
            return await self.api("POST", f"/api/v2/task/{mode}", deadline, json=sent)

        task = await read_callback_or_reply(self.ctx, post, deadline, _Task)
        urls = self._urls(task)
        return [
            GeneratedImage(data=await download(self.ctx, u, deadline=deadline), meta=_meta(task))
            for u in urls[:count]
        ]

    def _urls(self, task: _Task) -> list[str]:
        if not task.status:
            raise ProviderResponseError(
                f"{self.ctx.name} sent an empty task", provider=self.ctx.name
            )
        first = task.status[0]
        if str(first.status.code) != "0":
            raise failed_job(self.ctx, first.status.message, first.status.code, _MODERATION)
        outputs = first.response.output if first.response else []
        urls = [image.url for output in outputs for image in output.images]
        if not urls:
            raise no_image(self.ctx)
        return urls

    def auth(self) -> dict[str, Any]:
        """v2 project keys go in ``Authorization: Token``."""
        return {"headers": {"authorization": f"Token {require_key(self.ctx)}"}}


def _meta(task: _Task) -> dict[str, Any]:
    return {"task_id": task.id} if task.id else {}
