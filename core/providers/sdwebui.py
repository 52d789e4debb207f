"""Stable Diffusion WebUI, AUTOMATIC1111 or Forge (kind ``sdwebui``): its ``/sdapi/v1`` API.

Source: AUTOMATIC1111/stable-diffusion-webui ``modules/api/api.py`` and ``models.py`` (see
docs/providers.md). generate is ``txt2img``; variation is ``img2img``; inpaint is ``img2img``
with a ``mask`` (white = repaint, the WebUI's default); upscale is ``extra-single-image``. The
configured model is a checkpoint (title, name or hash from ``/sdapi/v1/sd-models``) sent as
``override_settings.sd_model_checkpoint``; the model ``default`` uses whatever is loaded. A
WebUI started with ``--api-auth user:password`` wants HTTP basic auth: ``api_key_env`` names a
variable holding ``user:password``. While a request runs, ``/sdapi/v1/progress`` is polled
for its steps. The WebUI runs one job at a time and its ``/interrupt`` stops whichever job is
running, so a cancelled job is left to finish there (nothing is charged for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from ..errors import InvalidRequestError, ProviderResponseError
from ..images import normalize_mask
from ..progress import ProviderProgress, report
from ..types import GeneratedImage, ImageRequest
from .base import (
    Capabilities,
    Plan,
    ProviderOptions,
    check_output_size,
    decode_b64,
    encode_b64,
    ignored,
    keep_input_size,
    no_image,
    parse_json,
    upscaled_size,
)
from .selfhosted import SelfHostedImageModel, sampling_params, sd_size

MAX_IMAGES = 4  # batch_size per call: what a consumer GPU holds at 512x512
PATHS = {"generate": "txt2img", "variation": "img2img", "inpaint": "img2img"}


class _Images(BaseModel):
    images: list[str] | None = None
    info: str = "{}"


class _Info(BaseModel):
    all_seeds: list[int] = []
    index_of_first_image: int = 0


class _Upscaled(BaseModel):
    image: str


class _State(BaseModel):
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class _Progress(BaseModel):
    progress: float = 0.0
    eta_relative: float = 0.0
    state: _State = _State()


class _Checkpoint(BaseModel):
    title: str


class SDWebUIImageModel(SelfHostedImageModel):
    kind = "sdwebui"
    default_base_url = "http://127.0.0.1:7860"

    class Options(ProviderOptions):
        sampler: str | None = Field(
            None, description="sampler as /sdapi/v1/samplers lists it, e.g. 'DPM++ 2M'"
        )
        scheduler: str | None = Field(None, description="scheduler, e.g. 'Karras' (WebUI 1.9+)")
        upscaler: str = Field(
            "R-ESRGAN 4x+", description="upscale: upscaler as /sdapi/v1/upscalers lists it"
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate", "variation", "inpaint", "upscale"}),
            max_images_per_call=MAX_IMAGES,
            description=(
                f"Stable Diffusion WebUI ({self.model}): text to image, variation, inpaint"
                " and upscale on your own GPU"
            ),
        )

    def plan(self, request: ImageRequest) -> Plan:
        options = self.accept(request, self.Options)
        if request.operation == "upscale":
            body, warnings = self._upscale(request, options)
        else:
            body, warnings = self._sample(request, options)
        return Plan(request.operation, request.n, request, body, tuple(warnings))

    def _sample(self, request: ImageRequest, options: Options) -> tuple[dict, list[str]]:
        op = request.operation
        warnings = ignored(request, ("scale",), f"the WebUI's {PATHS[op]}")
        body: dict[str, Any] = {"prompt": request.prompt, "save_images": False}
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        body.update(sampling_params(request, options.sampler))
        if options.scheduler:
            body["scheduler"] = options.scheduler
        if self.model != "default":
            body["override_settings"] = {"sd_model_checkpoint": self.model}
        if op == "generate":
            warnings += ignored(request, ("strength",), "text to image")
            size = sd_size(request, "the WebUI", hint=" (try 512x512, 768x512 or 1024x1024)")
            check_output_size(self, size, "the WebUI")
            body["width"], body["height"] = size
            return body, warnings
        image = request.image
        assert image is not None
        keep_input_size(request, f"the WebUI's {op}")
        body.update(init_images=[encode_b64(image.data)], width=image.width, height=image.height)
        if request.strength is not None:
            body["denoising_strength"] = request.strength
        if op == "inpaint":
            assert request.mask is not None
            body["mask"] = encode_b64(normalize_mask(request.mask, image))
            body["inpainting_fill"] = 1  # start from the original pixels under the mask
        return body, warnings

    def _upscale(self, request: ImageRequest, options: Options) -> tuple[dict, list[str]]:
        image = request.image
        assert image is not None
        if request.size or request.aspect_ratio:
            raise InvalidRequestError("an upscale's size follows from its scale (2, 3 or 4)")
        fields = ("negative_prompt", "seed", "steps", "guidance", "strength")
        warnings = ignored(request, fields, "the WebUI's upscale")
        warnings += ["prompt is ignored by the WebUI's upscale"] if request.prompt else []
        scale = request.scale or 2
        upscaled_size(self, image, scale)
        body = {
            "image": encode_b64(image.data),
            "resize_mode": 0,
            "upscaling_resize": scale,
            "upscaler_1": options.upscaler,
        }
        return body, warnings

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        if plan.operation == "upscale":
            response = await self._post("extra-single-image", plan.body, deadline)
            upscaled = parse_json(self.ctx, response, _Upscaled)
            return [GeneratedImage(data=decode_b64(self.ctx, upscaled.image))]
        seed = plan.seed_for(0)
        body = {**plan.body, "seed": -1 if seed is None else seed, "batch_size": count}
        response = await self._watching(self._post(PATHS[plan.operation], body, deadline))
        return self._images(parse_json(self.ctx, response, _Images), count)

    def _images(self, reply: _Images, count: int) -> list[GeneratedImage]:
        try:
            info = _Info.model_validate_json(reply.info)
        except ValidationError:
            info = _Info()
        # A grid (when the WebUI is set to return one) comes first; extensions append more.
        images = (reply.images or [])[info.index_of_first_image :][:count]
        if not images:
            raise no_image(self.ctx)
        seeds = info.all_seeds + [None] * len(images)  # type: ignore[list-item]
        return [
            GeneratedImage(data=decode_b64(self.ctx, data), seed=seed)
            for data, seed in zip(images, seeds, strict=False)
        ]

    async def _post(self, path: str, body: dict[str, Any], deadline: float) -> httpx.Response:
        return await self.api("POST", f"/sdapi/v1/{path}", deadline, json=body)

    async def _watching(self, call: Any) -> httpx.Response:
        """Await ``call`` (the generation request), reporting the WebUI's progress meanwhile."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.ctx.settings.poll_interval_s)
                if done:
                    return task.result()
                await self._report_progress()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _report_progress(self) -> None:
        path = "/sdapi/v1/progress?skip_current_image=true"
        try:
            response = await self.api("GET", path, time.monotonic() + 10)
            found = _Progress.model_validate_json(response.content)
        except (ProviderResponseError, ValidationError, Exception):  # noqa: BLE001 - advisory
            return
        state = found.state
        if state.job_count == 0:
            return
        await report(
            ProviderProgress(
                provider=self.ctx.name,
                step=state.sampling_step or None,
                steps=state.sampling_steps or None,
                fraction=found.progress,
                wait_s=found.eta_relative if found.eta_relative > 0 else None,
            )
        )

    async def available_models(self) -> list[str] | None:
        """The checkpoints' titles, from ``GET /sdapi/v1/sd-models``."""
        response = await self.api("GET", "/sdapi/v1/sd-models", time.monotonic() + 30)
        try:
            checkpoints = [_Checkpoint.model_validate(item) for item in json.loads(response.text)]
        except (ValueError, ValidationError, TypeError):
            raise ProviderResponseError(
                f"{self.ctx.name} sent a model list we could not read", provider=self.ctx.name
            ) from None
        return [c.title for c in checkpoints]
