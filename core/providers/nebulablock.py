"""NebulaBlock (kind ``nebulablock``): ``POST {base}/images/generation``, base64 results.

Docs: https://docs.nebulablock.com/core-services/overview/image_generation and
https://docs.nebulablock.com/overview/inference-api-openai-compatible/generate_images. Filed
under "OpenAI compatible", but the body is not OpenAI-shaped: no ``n`` and no ``size``, one
image per request. FLUX.1-Fill-dev inpaints from raw base64 ``image`` and ``mask`` and works
in multiples of 16. Balance: ``GET {base}/users/credits`` (API_Reference/Billing).
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from ..errors import InvalidRequestError
from ..images import normalize_mask
from ..types import GeneratedImage, ImageRequest
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderOptions,
    check_output_size,
    decode_b64,
    encode_b64,
    failed_job,
    ignored,
    no_image,
    parse_json,
    size_for_aspect,
    snap,
)

FILL = "black-forest-labs/FLUX.1-Fill-dev"
DEFAULT_SIZE = (1024, 1024)  # when no size is sent: the size the docs' examples use [NB-api]


class _Timings(BaseModel):
    inference: float | None = None


class _Item(BaseModel):
    b64_json: str | None = None
    image_b64: str | None = None  # a Feb-2025 docs revision used this name
    timings: _Timings | None = None


class _Reply(BaseModel):
    status: str = "success"
    message: str = ""
    data: list[_Item] | None = None


class _Credits(BaseModel):
    class _Data(BaseModel):
        available_balance: str | float

    data: _Data


class NebulaBlockImageModel(ImageModel):
    kind = "nebulablock"
    default_base_url = "https://api.nebulablock.com/api/v1"
    tunes = frozenset({"steps", "guidance"})

    class Options(ProviderOptions):
        """The image API documents no fields beyond those imagegate maps itself."""

    @property
    def _fill(self) -> bool:
        return self.model == FILL

    @property
    def _sdxl(self) -> bool:
        return "stable-diffusion-xl" in self.model

    @property
    def capabilities(self) -> Capabilities:
        if self._fill:
            return Capabilities(
                operations=frozenset({"inpaint"}),
                description="NebulaBlock FLUX.1-Fill-dev: inpainting (sizes in multiples of 16)",
            )
        return Capabilities(
            operations=frozenset({"generate"}),
            description=f"NebulaBlock {self.model}: text to image, one image per request",
        )

    def plan(self, request: ImageRequest) -> Plan:
        self.accept(request, self.Options)
        warnings = ignored(request, ("strength", "scale"), f"NebulaBlock {self.model}")
        body: dict[str, Any] = {"model": self.model, "prompt": request.prompt}
        if request.negative_prompt:
            if self._sdxl:
                body["negative_prompt"] = request.negative_prompt
            else:  # [NB-img]: negative_prompt is for SDXL only
                warnings.append(f"negative_prompt is ignored by {self.model} (SDXL only)")
        size = self._size(request, warnings)
        check_output_size(self, size or DEFAULT_SIZE, self.model)
        if size:
            body["width"], body["height"] = size
        if self._fill:
            assert request.image is not None and request.mask is not None
            # Raw base64 with no data: prefix, as in the docs' examples ("/9j/...").
            body["image"] = encode_b64(request.image.data)
            body["mask"] = encode_b64(normalize_mask(request.mask, request.image))
        if request.steps is not None:
            body["num_steps"] = request.steps
        if request.guidance is not None:
            body["guidance_scale"] = request.guidance
        return Plan(request.operation, request.n, request, body, tuple(warnings))

    def _size(self, request: ImageRequest, warnings: list[str]) -> tuple[int, int] | None:
        """The size to send, or None for the model's default."""
        if self._fill:
            return self._fill_size(request, warnings)
        if request.size is not None:
            return request.size
        if request.aspect_ratio is not None:
            return size_for_aspect(request.ratio() or 1.0, low=256)
        return None

    def _fill_size(self, request: ImageRequest, warnings: list[str]) -> tuple[int, int]:
        """FLUX.1-Fill-dev resizes to multiples of 16 [NB-img]: refuse a size it would change;
        warn when the input image itself will come back a little resized."""
        image = request.image
        assert image is not None
        if request.aspect_ratio is not None:
            raise InvalidRequestError("an inpaint keeps the image's shape; leave out aspect ratio")
        if request.size is not None:
            if any(side % 16 for side in request.size):
                raise InvalidRequestError(
                    f"{FILL} needs sides that are multiples of 16, not"
                    f" {request.size[0]}x{request.size[1]}"
                )
            return request.size
        size = (snap(image.width, 16, 16), snap(image.height, 16, 16))
        if size != (image.width, image.height):
            warnings.append(
                f"{FILL} works in multiples of 16: the result will be {size[0]}x{size[1]}"
            )
        return size

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        body = dict(plan.body)
        seed = plan.seed_for(0)
        if seed is not None:
            body["seed"] = seed
        response = await self.api("POST", "/images/generation", deadline, json=body)
        reply = parse_json(self.ctx, response, _Reply)
        if reply.status != "success":
            raise failed_job(self.ctx, reply.message, reply.status)
        items = [item for item in reply.data or [] if item.b64_json or item.image_b64]
        if not items:
            raise no_image(self.ctx)
        return [
            GeneratedImage(
                data=decode_b64(self.ctx, item.b64_json or item.image_b64 or ""),
                seed=seed,
                meta=_meta(item),
            )
            for item in items[:count]
        ]

    async def balance(self) -> str | None:
        """Dollars left (``GET {base}/users/credits``)."""
        response = await self.api("GET", "/users/credits", time.monotonic() + 30)
        return _dollars(parse_json(self.ctx, response, _Credits).data.available_balance)


def _dollars(amount: str | float) -> str:
    """``"100.00000"`` -> ``$100.00``; sub-cent digits are kept where there are any."""
    try:
        value = Decimal(str(amount))
        cents = value.quantize(Decimal("0.01"))
    except InvalidOperation:  # not a number, or not a finite one: as the provider wrote it
        return f"${amount}"
    return f"${cents}" if cents == value else f"${value.normalize():f}"


def _meta(item: _Item) -> dict[str, Any]:
    # timings.inference (seconds) is kept as the provider reports it.
    inference = item.timings.inference if item.timings else None
    return {"timings": {"inference": inference}} if inference is not None else {}
