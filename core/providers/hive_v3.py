"""Hive image generation, v3 model API (kind ``hive_v3``): ``POST /api/v3/{vendor}/{model}``.

Docs: https://docs.thehive.ai/docs/image-generation-models (models; V3 intro). The field set
comes from several third-party clients (exobon/imagify-saas and others) and is unverified:
``{"input": {prompt, negative_prompt, image_size, num_inference_steps, guidance_scale,
num_images, seed, output_format, output_quality}}``. V3 keys are Bearer secrets; v2 project
keys do not work here. Moderation refusals are content errors, never retried.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import InvalidRequestError
from ..types import GeneratedImage, ImageRequest
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderOptions,
    check_output_size,
    content_rejected,
    download,
    ignored,
    no_image,
    parse_json,
    size_for_aspect,
)

MAX_IMAGES = 4  # believed 4-6; the lower bound is used
SIDES = (256, 2048)
MAX_STEPS = 50
MAX_GUIDANCE = 20.0


class _Moderation(BaseModel):
    safe: bool = True


class _Output(BaseModel):
    url: str
    content_moderation: _Moderation | None = None


class _Reply(BaseModel):
    id: str = ""
    output: list[_Output]


class HiveV3ImageModel(ImageModel):
    kind = "hive_v3"
    default_base_url = "https://api.thehive.ai"
    tunes = frozenset({"steps", "guidance"})

    class Options(ProviderOptions):
        output_format: Literal["jpeg", "png"] | None = Field(
            None, description="result file format (Hive's default is jpeg)"
        )
        output_quality: int | None = Field(
            None, ge=1, le=100, description="JPEG quality 1-100 (Hive's default is 90)"
        )

    @property
    def _sdxl(self) -> bool:
        return "sdxl" in self.model.lower()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate"}),
            max_images_per_call=MAX_IMAGES,
            description=f"Hive v3 {self.model}: text to image, sides 256-2048, up to 4 per call",
        )

    def plan(self, request: ImageRequest) -> Plan:
        options = self.accept(request, self.Options)
        warnings = ignored(request, ("strength", "scale"), "Hive v3")
        fields: dict[str, Any] = {"prompt": request.prompt}
        if request.negative_prompt:
            if self._sdxl:
                fields["negative_prompt"] = request.negative_prompt
            else:
                warnings.append(f"negative_prompt is ignored by {self.model} (SDXL models only)")
        size = self._size(request)
        check_output_size(self, size or self._default_size, self.model)
        if size:
            fields["image_size"] = {"width": size[0], "height": size[1]}
        if request.steps is not None:
            if request.steps > MAX_STEPS:
                raise InvalidRequestError(f"Hive v3 takes 1-{MAX_STEPS} steps, not {request.steps}")
            fields["num_inference_steps"] = request.steps
        if request.guidance is not None:
            if not self._sdxl:
                warnings.append(f"guidance is ignored by {self.model} (SDXL models only)")
            elif request.guidance > MAX_GUIDANCE:
                raise InvalidRequestError(f"Hive v3 guidance is 0-{MAX_GUIDANCE:g}")
            else:
                fields["guidance_scale"] = request.guidance
        if options.output_format:
            fields["output_format"] = options.output_format
        if options.output_quality is not None:
            fields["output_quality"] = options.output_quality
        return Plan(request.operation, request.n, request, {"input": fields}, tuple(warnings))

    def _size(self, request: ImageRequest) -> tuple[int, int] | None:
        low, high = SIDES
        if request.size is not None:
            if not all(low <= side <= high for side in request.size):
                raise InvalidRequestError(
                    f"Hive v3 sizes are {low}-{high} pixels a side, not"
                    f" {request.size[0]}x{request.size[1]}"
                )
            return request.size
        if request.aspect_ratio is None:
            return None  # the model's default
        width, height = self._default_size
        return size_for_aspect(request.ratio() or 1.0, area=width * height, low=low, high=high)

    @property
    def _default_size(self) -> tuple[int, int]:
        """The model's size when none is sent: 1024x1024; 512x512 for emoji."""
        return (512, 512) if "emoji" in self.model else (1024, 1024)

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        fields = {**plan.body["input"], "num_images": count}
        seed = plan.seed_for(0)
        if seed is not None:
            fields["seed"] = seed % 2**31  # Hive takes 0..2147483647 (-1 = random)
        response = await self.api("POST", f"/api/v3/{self.model}", deadline, json={"input": fields})
        reply = parse_json(self.ctx, response, _Reply)
        if any(o.content_moderation and not o.content_moderation.safe for o in reply.output):
            raise content_rejected(self.ctx, "an image was flagged by moderation")
        if not reply.output:
            raise no_image(self.ctx)
        images = []
        for index, output in enumerate(reply.output[:count]):
            data = await download(self.ctx, output.url, deadline=deadline)
            # One seed per call: only the first image's seed is known.
            images.append(
                GeneratedImage(
                    data=data,
                    seed=fields.get("seed") if index == 0 else None,
                    meta={"hive_id": reply.id} if reply.id else {},
                )
            )
        return images
