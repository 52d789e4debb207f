"""Deepmode (kind ``deepmode``): images of a person from a model the user trained.

Docs: https://deepmode.gitbook.io/docs/api-endpoints/handling-images/generate-image (and the
sibling pages for upscale, remix, face-id remix and check-balance). The configured ``models``
are the user's own trained model ids; the API has no model list. Image URLs are signed links
valid for one hour, so results are downloaded at once (and a dead link is renewed once through
``GET /api/images/{id}``).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from PIL import Image
from pydantic import BaseModel, Field, RootModel

from ..errors import InvalidRequestError, ProviderResponseError
from ..images import EXTENSIONS, normalize_mask, to_png
from ..types import GeneratedImage, ImageRequest, InputImage
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderCall,
    ProviderOptions,
    check_output_size,
    download,
    ignored,
    keep_input_size,
    no_image,
    parse_json,
    read_callback_or_reply,
    upscaled_size,
)

# The docs give two ratios and no pixel sizes; portrait is taken as 3:4.
RATIOS = {"1:1": "square", "3:4": "portrait"}
SINGLE = ("upscale", "inpaint", "avatar")  # one image per call
ASSUMED_SIDE = 1024  # the longest side of a generated image (Deepmode does not publish sizes)


class _Image(BaseModel):
    id: str
    image_url: str | None = None
    upscaled: bool | None = None
    ratio: str | None = None


class _Wrapped(BaseModel):
    images: list[_Image]


class _Reply(RootModel[list[_Image] | _Image | _Wrapped]):
    """The generate reply is undocumented (cut off in the docs): a list, one object, or a
    wrapper are all read."""

    def items(self) -> list[_Image]:
        root = self.root
        if isinstance(root, _Wrapped):
            return root.images
        return root if isinstance(root, list) else [root]


class DeepmodeImageModel(ImageModel):
    kind = "deepmode"
    default_base_url = "https://api.deepmode.ai"

    class Options(ProviderOptions):
        upscale: bool = Field(
            False, description="x4 super-resolution of generated images (generate only)"
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate", "upscale", "inpaint", "avatar"}),
            max_images_per_call=8,
            description=(
                f"Deepmode trained model {self.model}: square (1:1) or portrait (3:4) pictures,"
                " x4 upscale of its own results, inpaint (remix), avatar (face-id remix)"
            ),
        )

    def plan(self, request: ImageRequest) -> Plan:
        options = self.accept(request, self.Options)
        op = request.operation
        if op in SINGLE and request.n > 1:
            raise InvalidRequestError(f"Deepmode {op} makes one image per request; ask for n=1")
        warnings = ignored(request, ("seed", "steps", "guidance"), "Deepmode")
        if op != "upscale":
            warnings += ignored(request, ("strength", "scale"), f"Deepmode {op}")
        else:
            warnings += ignored(request, ("negative_prompt", "strength"), "a Deepmode upscale")
            warnings += ["prompt is ignored by a Deepmode upscale"] if request.prompt else []
        if options.upscale and op != "generate":
            warnings.append("the upscale option applies to generate only")
        if op == "generate":
            call = self._generate_call(request, options)
        elif op == "upscale":
            call = self._upscale_call(request)
        else:
            keep_input_size(request, f"Deepmode {op}")
            call = self._remix_call(request)
        return Plan(op, request.n, request, warnings=tuple(warnings), call=call)

    def _generate_call(self, request: ImageRequest, options: Options) -> ProviderCall:
        payload: dict[str, Any] = {"model_id": self.model, "prompt": request.prompt}
        if request.negative_prompt:
            payload["negative_prompt"] = request.negative_prompt
        if request.size is not None:
            raise InvalidRequestError(
                "Deepmode chooses the pixel size itself; ask for an aspect ratio instead:"
                " 1:1 (square) or 3:4 (portrait)"
            )
        if request.aspect_ratio is not None:
            ratio = next((v for k, v in RATIOS.items() if _same(k, request.aspect_ratio)), None)
            if ratio is None:
                raise InvalidRequestError(
                    f"Deepmode makes square (1:1) or portrait (3:4) images, not"
                    f" {request.aspect_ratio}; choose one of those aspect ratios"
                )
            payload["ratio"] = ratio
        # Deepmode picks the pixel size and does not publish it: assume at most ASSUMED_SIDE.
        largest = ASSUMED_SIDE * (4 if options.upscale else 1)
        doing = "Deepmode's x4 upscale option" if options.upscale else "Deepmode"
        check_output_size(self, (largest, largest), f"{doing} (its largest size)")
        if options.upscale:
            payload["upscale"] = True
        return ProviderCall("/api/images/generate", json=payload)

    def _upscale_call(self, request: ImageRequest) -> ProviderCall:
        image = request.image
        assert image is not None
        if image.provider != self.ctx.name or not image.provider_image_id:
            source = f"from {image.provider}" if image.provider else "uploaded or from elsewhere"
            if image.provider == self.ctx.name:
                source = "stored without its Deepmode image id"
            raise InvalidRequestError(
                f"Deepmode can only upscale its own results, and this image is {source};"
                f" upscale an image made with {self.ctx.name}, or use another model"
            )
        if request.scale not in (None, 4):
            raise InvalidRequestError("Deepmode upscales x4 only; ask for scale 4 or leave it out")
        upscaled_size(self, image, 4)
        return ProviderCall("/api/images/upscale", json={"image_id": image.provider_image_id})

    def _remix_call(self, request: ImageRequest) -> ProviderCall:
        # Both remix endpoints are multipart and always get mode=sync: the docs name no way to
        # learn when an async remix is done.
        image = request.image
        assert image is not None
        data = {"prompt": request.prompt, "negative_prompt": request.negative_prompt or ""}
        if request.operation == "inpaint":
            assert request.mask is not None
            mask = normalize_mask(request.mask, image)  # white = repaint, as Deepmode's examples
            files = {"artwork_image": _file("artwork", image), "mask_image": _png("mask", mask)}
            form = {"model_id": self.model, **data, "mode": "sync"}
            return ProviderCall("/api/remix/generate", form=form, files=files)
        # Avatar: the face is both the identity and the artwork, and the whole artwork is
        # repainted (face-id remix needs all three parts).
        white = to_png(Image.new("L", (image.width, image.height), 255))
        files = {
            "identity_image": _file("identity", image),
            "artwork_image": _file("artwork", image),
            "mask_image": _png("mask", white),
        }
        return ProviderCall("/api/face-id-remix", form={**data, "mode": "sync"}, files=files)

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        call = plan.call
        assert call is not None
        multipart = call.files is not None
        extra = {"num_images": count} if plan.operation == "generate" else {}

        async def post(callback: str | None) -> httpx.Response:
            args = call.send_args(**extra, **({"callback": callback} if callback else {}))
            return await self.api("POST", call.path, deadline, **args)

        # The docs say a callback gets the same body as the sync reply; remixes are sync only.
        reply = await read_callback_or_reply(self.ctx, post, deadline, _Reply, use=not multipart)
        items = reply.items()
        if not items:
            raise no_image(self.ctx)
        return [await self._fetch(item, deadline) for item in items[:count]]

    async def _fetch(self, item: _Image, deadline: float) -> GeneratedImage:
        url = item.image_url or (await self._lookup(item.id, deadline)).image_url
        try:
            data = await download(self.ctx, url or "", deadline=deadline)
        except ProviderResponseError as exc:
            if exc.status != 403:
                raise
            # An expired signed link: GET /api/images/{id} issues a fresh one [DM-get].
            data = await download(
                self.ctx, (await self._lookup(item.id, deadline)).image_url or "", deadline=deadline
            )
        meta = {"upscaled": item.upscaled, "ratio": item.ratio}
        return GeneratedImage(
            data=data,
            provider_image_id=item.id,
            meta={k: v for k, v in meta.items() if v is not None},
        )

    async def _lookup(self, image_id: str, deadline: float) -> _Image:
        response = await self.api("GET", f"/api/images/{image_id}", deadline)
        found = parse_json(self.ctx, response, _Image)
        if not found.image_url:
            raise ProviderResponseError(
                f"{self.ctx.name} has no link for image {image_id}", provider=self.ctx.name
            )
        return found

    async def balance(self) -> str | None:
        """Credits left (``GET /api/check-balance``)."""
        response = await self.api("GET", "/api/check-balance", time.monotonic() + 30)
        return f"{parse_json(self.ctx, response, _Balance).remaining_balance} credits"


class _Balance(BaseModel):
    remaining_balance: float | int | str


def _same(ratio: str, asked: str) -> bool:
    w1, _, h1 = ratio.partition(":")
    w2, _, h2 = asked.partition(":")
    return int(w1) * int(h2) == int(w2) * int(h1)


def _file(name: str, image: InputImage) -> tuple[str, bytes, str]:
    return f"{name}.{EXTENSIONS.get(image.mime, 'png')}", image.data, image.mime


def _png(name: str, data: bytes) -> tuple[str, bytes, str]:
    return f"{name}.png", data, "image/png"
