"""OpenAI Images (kind ``openai``) and the services that copy its shape (set ``base_url``).

Reference: https://platform.openai.com/docs/api-reference/images (generations: JSON; edits:
multipart ``image`` + ``mask``). Our masks are white = repaint; OpenAI's are PNGs whose
transparent pixels mark what to repaint, so masks are converted. gpt-image models always answer
base64 and break when sent ``response_format`` (LiteLLM #10501), so it is sent to the others
only. Unknown model names (compatible services) get no size or option checks, one per call.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import httpx
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from ..errors import ImageGateError, InvalidRequestError, ProviderQuotaError, ProviderResponseError
from ..images import normalize_mask, to_png
from ..types import GeneratedImage, ImageRequest, Operation
from .base import (
    Capabilities,
    ImageModel,
    Plan,
    ProviderCall,
    ProviderOptions,
    check_output_size,
    decode_b64,
    download,
    ignored,
    keep_input_size,
    no_image,
    parse_json,
)

Size = tuple[int, int]
SIZES: dict[str, tuple[Size, ...]] = {
    "dall-e-2": ((256, 256), (512, 512), (1024, 1024)),
    "dall-e-3": ((1024, 1024), (1792, 1024), (1024, 1792)),
    "gpt-image": ((1024, 1024), (1536, 1024), (1024, 1536)),
}
QUALITIES = {"dall-e-2": ("standard",), "dall-e-3": ("standard", "hd")}
QUALITIES["gpt-image"] = ("low", "medium", "high", "auto")
MAX_N = {"dall-e-2": 10, "dall-e-3": 1, "gpt-image": 10}
GPT_IMAGE_ONLY = ("background", "output_format", "output_compression", "moderation")
MAX_EDIT_BYTES = 4 * 1024 * 1024  # dall-e-2: a square PNG under 4 MB


class _Item(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _Reply(BaseModel):
    data: list[_Item]


class OpenAIImageModel(ImageModel):
    kind = "openai"
    default_base_url = "https://api.openai.com/v1"

    class Options(ProviderOptions):
        quality: str | None = Field(
            None, description="dall-e-3: standard|hd; gpt-image: low|medium|high|auto"
        )
        style: Literal["vivid", "natural"] | None = Field(None, description="dall-e-3 only")
        background: Literal["transparent", "opaque", "auto"] | None = Field(
            None, description="gpt-image only"
        )
        output_format: Literal["png", "jpeg", "webp"] | None = Field(
            None, description="gpt-image only"
        )
        output_compression: int | None = Field(
            None, ge=0, le=100, description="gpt-image only, jpeg/webp 0-100"
        )
        moderation: Literal["low", "auto"] | None = Field(None, description="gpt-image only")
        user: str | None = Field(None, description="end-user id passed to OpenAI for abuse checks")

    @property
    def family(self) -> str | None:
        if self.model.startswith("gpt-image"):
            return "gpt-image"
        return self.model if self.model in SIZES else None

    @property
    def capabilities(self) -> Capabilities:
        ops: set[Operation] = {"generate"}
        if self.family != "dall-e-3":
            ops.add("inpaint")
        if self.family == "gpt-image":
            ops.add("variation")  # an edit with no mask, guided by the prompt
        return Capabilities(
            operations=frozenset(ops),
            max_images_per_call=MAX_N.get(self.family or "", 1),
            description=f"OpenAI-compatible images API, model {self.model}",
        )

    def plan(self, request: ImageRequest) -> Plan:
        options = self.accept(request, self.Options)
        who = f"the OpenAI images API ({self.model})"
        warnings = ignored(request, ("negative_prompt", "seed", "steps", "guidance"), who)
        warnings += ignored(request, ("strength", "scale"), who)
        fields: dict[str, Any] = {"prompt": request.prompt, "model": self.model}
        size = self._size(request, warnings)
        if size:
            fields["size"] = f"{size[0]}x{size[1]}"
        # Sent no size, the API picks one: at most its largest (unknown for compatible services).
        largest = size or (max(SIZES[self.family], key=_area) if self.family else None)
        if largest:
            check_output_size(self, largest, self.model)
        if self.family != "gpt-image":
            fields["response_format"] = "b64_json"
        fields.update(self._options(options))
        if request.operation == "generate":
            call = ProviderCall("/images/generations", json=fields)
        else:
            call = ProviderCall("/images/edits", form=fields, files=self._edit_files(request))
        return Plan(request.operation, request.n, request, warnings=tuple(warnings), call=call)

    def _size(self, request: ImageRequest, warnings: list[str]) -> Size | None:
        """The ``size`` to send: a listed size, the listed size of the asked (or, for edits,
        the input's) shape, or None for the provider's default."""
        allowed = SIZES.get(self.family or "", ())
        listed = ", ".join(f"{w}x{h}" for w, h in allowed)
        image = request.image
        want: Size | None = None
        if image is not None:
            keep_input_size(request, f"{self.model} edits")
            if not allowed:
                return None
            want, shape = (image.width, image.height), f"{image.width}x{image.height}"
        elif request.size is not None:
            if allowed and request.size not in allowed:
                raise InvalidRequestError(f"{self.model} makes sizes {listed}, not {request.size}")
            return request.size
        elif request.aspect_ratio is None:
            return None
        elif not allowed:
            raise InvalidRequestError(f"{self.model}: give a size (WxH), not an aspect ratio")
        else:
            shape = request.aspect_ratio
        ratio = want[0] / want[1] if want else request.ratio() or 1.0
        close = [s for s in allowed if abs(math.log(s[0] / s[1] / ratio)) <= 0.02]
        if not close:
            raise InvalidRequestError(f"{self.model} has no {shape} size; it makes {listed}")
        area = want[0] * want[1] if want else 1024 * 1024
        best = min(close, key=lambda s: abs(math.log(s[0] * s[1] / area)))
        if want and best != want:
            warnings.append(f"{self.model} makes {listed}: the result will be {best[0]}x{best[1]}")
        elif not want and abs(best[0] / best[1] - ratio) > 1e-9:
            warnings.append(f"aspect ratio {shape} was served as {best[0]}x{best[1]}")
        return best

    def _options(self, options: Options) -> dict[str, Any]:
        given = options.model_dump(exclude_none=True)
        family = self.family
        if family is None:
            return given  # an unknown compatible service: pass everything through
        if "quality" in given and given["quality"] not in QUALITIES[family]:
            allowed = "|".join(QUALITIES[family])
            raise InvalidRequestError(f"{self.model} quality is {allowed}, not {given['quality']}")
        if "style" in given and family != "dall-e-3":
            raise InvalidRequestError("the style option is for dall-e-3 only")
        wrong = [name for name in GPT_IMAGE_ONLY if name in given and family != "gpt-image"]
        if wrong:
            raise InvalidRequestError(f"{', '.join(wrong)}: for gpt-image models only")
        return given

    def _edit_files(self, request: ImageRequest) -> dict[str, tuple[str, bytes, str]]:
        image = request.image
        assert image is not None
        if self.family == "dall-e-2" and image.width != image.height:
            raise InvalidRequestError("dall-e-2 edits need a square image")
        with Image.open(io.BytesIO(image.data)) as img:
            png = to_png(img.convert("RGBA"))
        if self.family == "dall-e-2" and len(png) >= MAX_EDIT_BYTES:
            raise InvalidRequestError("dall-e-2 edits need an image under 4 MB as PNG")
        files = {"image": ("image.png", png, "image/png")}
        if request.mask is not None:
            gray = normalize_mask(request.mask, image)
            files["mask"] = ("mask.png", _transparent_mask(gray), "image/png")
        return files

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        call = plan.call
        assert call is not None
        response = await self.api("POST", call.path, deadline, **call.send_args(n=count))
        items = parse_json(self.ctx, response, _Reply).data
        if not items:
            raise no_image(self.ctx)
        images = []
        for item in items[:count]:
            if item.b64_json:
                data_bytes = decode_b64(self.ctx, item.b64_json)
            elif item.url:
                data_bytes = await download(self.ctx, item.url, deadline=deadline)
            else:
                raise ProviderResponseError(
                    f"{self.ctx.name} sent an image with no data", provider=self.ctx.name
                )
            meta = {"revised_prompt": item.revised_prompt} if item.revised_prompt else {}
            images.append(GeneratedImage(data=data_bytes, meta=meta))
        return images

    def classify(self, response: httpx.Response) -> ImageGateError | None:
        """OpenAI answers 429 both for "slow down" and for an empty account."""
        try:
            error = response.json().get("error") or {}
            code = str(error.get("code") or error.get("type") or "")
        except (ValueError, AttributeError):
            return None
        if code in ("insufficient_quota", "billing_hard_limit_reached"):
            return ProviderQuotaError(
                f"{self.ctx.name} account is out of credits; tell the operator",
                provider=self.ctx.name,
                status=response.status_code,
            )
        return None


def _area(size: Size) -> int:
    return size[0] * size[1]


def _transparent_mask(gray_png: bytes) -> bytes:
    """White = repaint grayscale -> an RGBA PNG that is transparent where to repaint."""
    with Image.open(io.BytesIO(gray_png)) as gray:
        alpha = ImageOps.invert(gray.convert("L"))
    rgba = Image.new("RGBA", alpha.size, (0, 0, 0, 255))
    rgba.putalpha(alpha)
    return to_png(rgba)
