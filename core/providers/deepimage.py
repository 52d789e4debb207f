"""Deep-Image.ai (kind ``deepimage``): one job per image, then poll or take the webhook.

Docs: https://documentation.deep-image.ai/api-methods (process_result / process / result),
https://documentation.deep-image.ai/image-processing/image-generation (``background.generate``
and its adapter types), .../inpainting-and-outpainting-uncrop, .../webhooks. The API has no
image count, so ``n`` images are ``n`` jobs; ``sample_num`` works as the seed.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from ..errors import (
    ImageGateError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderQuotaError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from ..images import normalize_mask
from ..types import GeneratedImage, ImageRequest, InputImage, Operation
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderOptions,
    callback_or_reply,
    check_output_size,
    download,
    encode_b64,
    ignored,
    keep_input_size,
    parse_data,
    parse_json,
    pause,
    provider_message,
    require_key,
    size_for_aspect,
    upscaled_size,
)

ADAPTERS: dict[Operation, str] = {
    "background": "generate_background",
    "avatar": "face",
    "variation": "control",
    "sketch": "control2",
    "inpaint": "inpainting",
}
PENDING = ("received", "not_started", "in_progress")


class _Job(BaseModel):
    job: str = ""
    status: str = ""
    result_url: str | None = None


class _Me(BaseModel):
    credits: float | int | str | None = None


class DeepImageImageModel(ImageModel):
    kind = "deepimage"
    default_base_url = "https://deep-image.ai"

    class Options(ProviderOptions):
        # The model lists in the docs disagree, so model_type is passed through unchecked.
        model_type: str | None = Field(
            None, description="generation model, e.g. realistic, fantasy, premium"
        )
        enhancements: list[str] | None = Field(
            None, description="extra passes, e.g. denoise, deblur, face_enhance, light, color"
        )
        output_format: Literal["jpeg", "jpg", "png", "webp"] | None = Field(
            None, description="result file format (default jpeg)"
        )
        face_id: bool | None = Field(
            None, description="avatar: keep the face's identity (default true)"
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate", "upscale", *ADAPTERS}),
            max_images_per_call=1,
            description=(
                "Deep-Image.ai: text to image, new background, avatar, variation, sketch,"
                " inpaint and generative upscale; one image per job"
            ),
        )

    def plan(self, request: ImageRequest) -> Plan:
        options = self.accept(request, self.Options)
        op, image = request.operation, request.image
        warnings = ignored(request, ("steps", "guidance"), "Deep-Image")
        body: dict[str, Any] = {}
        if op == "upscale":
            assert image is not None
            warnings += ignored(request, ("negative_prompt", "seed", "strength"), "an upscale")
            if request.size or request.aspect_ratio:
                raise InvalidRequestError("an upscale's size follows from its scale (2, 3 or 4)")
            scale = request.scale or 2
            upscaled_size(self, image, scale)
            percent = f"{scale * 100}%"
            body.update(url=_b64(image), width=percent, height=percent, generative_upscale=True)
            if request.prompt:  # a prompted upscale: the description guides the new detail
                upscale = {"description": request.prompt, "adapter_type": "upscale"}
                body["background"] = {"generate": upscale}
        else:
            warnings += ignored(request, ("scale",), f"Deep-Image {op}")
            if op == "generate":
                size = _size(request)
                check_output_size(self, size)
                body["width"], body["height"] = size
            else:
                assert image is not None
                keep_input_size(request, f"Deep-Image {op}")
                body["url"] = _b64(image)
            body["background"] = {"generate": self._generate(request, options, warnings)}
        if options.enhancements is not None:
            body["enhancements"] = options.enhancements
        if options.output_format:
            body["output_format"] = options.output_format
        return Plan(op, request.n, request, body, tuple(warnings))

    def _generate(self, request: ImageRequest, options: Options, warnings: list[str]) -> dict:
        """The ``background.generate`` block [DI-gen]."""
        op = request.operation
        generate: dict[str, Any] = {"description": request.prompt}
        if op != "generate":
            generate["adapter_type"] = ADAPTERS[op]
        # A configured model other than "default" names the model_type (e.g. deepimage:fantasy).
        model_type = options.model_type or (self.model if self.model != "default" else None)
        if model_type:
            generate["model_type"] = model_type
        if request.negative_prompt:
            generate["negative_prompt"] = request.negative_prompt
        if op == "avatar":
            generate["face_id"] = options.face_id is not False
        elif options.face_id is not None:
            warnings.append("face_id is used by avatars only")
        if op in ("variation", "sketch") and request.strength is not None:
            # Our strength is how much to change; the scale is how much of the edges to keep.
            generate["controlnet_conditioning_scale"] = round(1 - request.strength, 3)
        elif request.strength is not None:
            warnings.append(f"strength is ignored by Deep-Image {op}")
        if op == "inpaint":
            assert request.mask is not None and request.image is not None
            # [DI-inp] documents ip_image2 as the mask's URL; a base64 URL is sent here.
            mask = normalize_mask(request.mask, request.image)
            generate["ip_image2"] = "base64," + encode_b64(mask)
        return generate

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        body = copy.deepcopy(plan.body)
        seed = plan.seed_for(0) if plan.operation != "upscale" else None
        if seed is not None:
            body["background"]["generate"]["sample_num"] = seed

        async def post(callback: str | None) -> _Job:
            if callback is None:  # waits up to 25 s for the result
                return await self._post("process_result", body, deadline)
            return await self._post(
                "process", {**body, "webhooks": {"complete": callback}}, deadline
            )

        # A late webhook is not waited for: polling takes over.
        grace = 10 * self.ctx.settings.poll_interval_s
        job, called_back = await callback_or_reply(self.ctx, post, deadline, grace_s=grace)
        url = job.result_url if job.status == "complete" else None
        if called_back is not None:
            url = parse_data(self.ctx, called_back, _Job).result_url
        url = url or await self._poll(job.job, deadline)
        data = await download(self.ctx, url, deadline=deadline)
        return [GeneratedImage(data=data, seed=seed, provider_image_id=job.job)]

    async def _post(self, endpoint: str, body: dict[str, Any], deadline: float) -> _Job:
        response = await self.api("POST", f"/rest_api/{endpoint}", deadline, json=body)
        return self._checked(parse_json(self.ctx, response, _Job))

    async def _poll(self, job: str, deadline: float) -> str:
        while True:
            await pause(self.ctx, deadline)
            if time.monotonic() >= deadline:
                raise ProviderTimeoutError(
                    f"{self.ctx.name} job {job} was not done in time", provider=self.ctx.name
                )
            response = await self.api("GET", f"/rest_api/result/{job}", deadline)
            found = self._checked(parse_json(self.ctx, response, _Job))
            if found.status == "complete" and found.result_url:
                return found.result_url

    def _checked(self, job: _Job) -> _Job:
        name = self.ctx.name
        if job.status == "failed":  # the documented 500 body ("No credits were lost")
            raise ProviderUnavailableError(f"{name} failed to process the image", provider=name)
        done = job.status == "complete" and job.result_url
        if not job.job or not (done or job.status in PENDING):
            raise ProviderResponseError(
                f"{name} sent a job we could not read", provider=name, detail=repr(job.status)
            )
        return job

    def classify(self, response: httpx.Response) -> ImageGateError | None:
        """The documented errors that the HTTP status alone would misfile."""
        message = provider_message(response, self.ctx.api_key)
        kwargs: dict[str, Any] = {"provider": self.ctx.name, "status": response.status_code}
        name = self.ctx.name
        if "NOT_ENOUGH_CREDITS" in response.text or "No more requests" in message:
            return ProviderQuotaError(
                f"{name} account is out of credits; tell the operator", **kwargs
            )
        if response.status_code == 404 and "No user found" in message:
            return ProviderAuthError(f"{name} refused our API key; tell the operator", **kwargs)
        if response.status_code == 404:  # "Job not found" / "Image deleted" on result/{job}
            return ProviderResponseError(f"{name} lost the job ({message})", **kwargs)
        return None

    def auth(self) -> dict[str, Any]:
        return {"headers": {"x-api-key": require_key(self.ctx)}}

    async def balance(self) -> str | None:
        """Credits left, from ``GET /rest_api/me`` (its shape is undocumented)."""
        response = await self.api("GET", "/rest_api/me", time.monotonic() + 30)
        credits = parse_json(self.ctx, response, _Me).credits
        return "unknown" if credits is None else f"{credits} credits"


def _b64(image: InputImage) -> str:
    # [DI-oas]: an input image in JSON is "base64,<data>" (no data: prefix).
    return "base64," + encode_b64(image.data)


def _size(request: ImageRequest) -> tuple[int, int]:
    if request.size is not None:
        return request.size
    return size_for_aspect(request.ratio() or 1.0)
