"""AI Horde (kind ``horde``): the volunteer-run Stable Diffusion cluster, REST API v2.

Source: Haidra-Org/AI-Horde ``horde/apis/v2/stable.py``, ``base.py`` and
``horde/apis/models/stable_v2.py`` (see docs/providers.md). ``POST /api/v2/generate/async``,
then ``GET /api/v2/generate/check/{id}`` every ``poll_interval_s`` (queue position and wait
time, reported as progress), then once ``GET /api/v2/generate/status/{id}`` for the images
(that endpoint allows 10 calls a minute). A cancelled or timed-out job is deleted with
``DELETE /api/v2/generate/status/{id}``, which stops the kudos being spent. The key goes in
the ``apikey`` header; without ``api_key_env`` the anonymous key ``0000000000`` is used (the
lowest priority). The negative prompt follows the prompt after ``###``, as the Horde expects.
Images a worker's safety filter censored are dropped (and not charged); if all are, the
request counts as refused on content grounds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from pydantic import BaseModel, Field

from ..errors import (
    ImageGateError,
    InvalidRequestError,
    ProviderQuotaError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from ..images import normalize_mask
from ..progress import ProviderProgress, report
from ..types import GeneratedImage, ImageRequest
from .base import (
    CANCEL_TIMEOUT_S,
    Capabilities,
    ImageModel,
    Plan,
    ProviderOptions,
    call_api,
    check_output_size,
    content_rejected,
    decode_b64,
    download,
    encode_b64,
    ignored,
    keep_input_size,
    no_image,
    parse_json,
    parse_options,
    provider_message,
    require_key,
    size_for_aspect,
)

ANONYMOUS_KEY = "0000000000"
CLIENT_AGENT = "imagegate:0.1.0:self-hosted"  # the Horde asks every client to name itself
MAX_IMAGES = 4
DEFAULT_SIZE = (512, 512)
SIDE = (64, 3072)  # multiples of 64 [stable_v2.py width/height]
PROCESSING = {"variation": "img2img", "inpaint": "inpainting"}
SAMPLERS = (
    "k_lms", "k_heun", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a", "k_dpm_fast",
    "k_dpm_adaptive", "k_dpmpp_2s_a", "k_dpmpp_2m", "dpmsolver", "k_dpmpp_sde", "DDIM", "lcm",
)  # fmt: skip


class _Queued(BaseModel):
    id: str


class _Check(BaseModel):
    done: bool = False
    faulted: bool = False
    is_possible: bool = True
    queue_position: int = 0
    wait_time: float = 0
    finished: int = 0
    processing: int = 0


class _Generation(BaseModel):
    img: str
    seed: str = ""
    id: str = ""
    censored: bool = False


class _Status(_Check):
    generations: list[_Generation] = []


class _User(BaseModel):
    kudos: float = 0.0


class _Model(BaseModel):
    name: str
    count: int = 0


class HordeImageModel(ImageModel):
    kind = "horde"
    default_base_url = "https://aihorde.net"
    tunes = frozenset({"steps", "guidance"})
    key_optional = True

    class Options(ProviderOptions):
        sampler: str | None = Field(None, description=f"one of {', '.join(SAMPLERS)}")
        karras: bool | None = Field(None, description="Karras noise schedule")
        nsfw: bool = Field(False, description="allow workers that may make NSFW images")
        trusted_workers: bool = Field(False, description="only trusted workers (slower)")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=frozenset({"generate", "variation", "inpaint"}),
            max_images_per_call=MAX_IMAGES,
            description=(
                f"AI Horde ({self.model}): volunteer GPUs; text to image, variation, inpaint"
            ),
        )

    def plan(self, request: ImageRequest) -> Plan:
        self.require_operation(request)
        options = parse_options(self, request, self.Options)
        if options.sampler is not None and options.sampler not in SAMPLERS:
            raise InvalidRequestError(
                f"{self.ref}: sampler {options.sampler!r} is not one of {', '.join(SAMPLERS)}"
            )
        op = request.operation
        warnings = ignored(request, ("scale",), "the Horde")
        params: dict[str, Any] = {}
        if request.steps is not None:
            params["steps"] = request.steps
        if request.guidance is not None:
            params["cfg_scale"] = request.guidance
        if options.sampler:
            params["sampler_name"] = options.sampler
        if options.karras is not None:
            params["karras"] = options.karras
        prompt = request.prompt
        if request.negative_prompt:
            prompt = f"{prompt} ### {request.negative_prompt}"
        body: dict[str, Any] = {"prompt": prompt, "params": params, "nsfw": options.nsfw,
                                "censor_nsfw": not options.nsfw, "r2": True, "shared": False,
                                "trusted_workers": options.trusted_workers}  # fmt: skip
        if self.model not in ("default", "any"):
            body["models"] = [self.model]
        image = request.image
        if image is None:
            warnings += ignored(request, ("strength",), "text to image")
            params["width"], params["height"] = _size(request)
        else:
            keep_input_size(request, f"the Horde's {op}")
            params["width"], params["height"] = _snap(image.width), _snap(image.height)
        check_output_size(self, (params["width"], params["height"]), "the Horde")
        if image is not None:
            body["source_image"] = encode_b64(image.data)
            body["source_processing"] = PROCESSING[op]
            if request.strength is not None:
                params["denoising_strength"] = max(0.01, request.strength)
            if op == "inpaint":
                assert request.mask is not None
                body["source_mask"] = encode_b64(normalize_mask(request.mask, image))
        return Plan(op, request.n, request, body, tuple(warnings))

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        body = {**plan.body, "params": {**plan.body["params"], "n": count}}
        seed = plan.seed_for(0)
        if seed is not None:
            body["params"]["seed"] = str(seed)  # a string in the API [stable_v2.py]
        url = f"{self.ctx.base_url}/api/v2/generate/async"
        response = await self._call("POST", url, deadline, json=body)
        request_id = parse_json(self.ctx, response, _Queued).id
        async with self.remote_job(request_id):
            status = await self._wait(request_id, deadline)
        kept = [g for g in status.generations if not g.censored]
        if status.generations and not kept:
            raise content_rejected(self.ctx, "the workers' safety filter censored every image")
        if not kept:
            raise no_image(self.ctx)
        return [await self._image(g, deadline) for g in kept[:count]]

    async def _wait(self, request_id: str, deadline: float) -> _Status:
        base = f"{self.ctx.base_url}/api/v2/generate"
        while True:
            check = parse_json(
                self.ctx, await self._call("GET", f"{base}/check/{request_id}", deadline), _Check
            )
            if check.faulted:
                raise ProviderUnavailableError(
                    f"{self.ctx.name} could not complete the request (faulted)",
                    provider=self.ctx.name,
                )
            if not check.is_possible:
                raise ProviderUnavailableError(
                    f"no {self.ctx.name} worker can serve {self.model} at this size now",
                    provider=self.ctx.name,
                )
            if check.done:
                response = await self._call("GET", f"{base}/status/{request_id}", deadline)
                return parse_json(self.ctx, response, _Status)
            await report(
                ProviderProgress(
                    provider=self.ctx.name,
                    queue_position=check.queue_position,
                    wait_s=check.wait_time,
                    step=check.finished if check.processing else None,
                    steps=check.finished + check.processing if check.processing else None,
                )
            )
            pause = min(self.ctx.settings.poll_interval_s, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def _image(self, generation: _Generation, deadline: float) -> GeneratedImage:
        if generation.img.startswith(("http://", "https://")):
            data = await download(self.ctx, generation.img, deadline=deadline)
        else:
            data = decode_b64(self.ctx, generation.img)
        seed = int(generation.seed) if generation.seed.isdigit() else None
        return GeneratedImage(data=data, seed=seed, provider_image_id=generation.id or None)

    async def cancel(self, ticket: str) -> None:
        """Delete the request: workers stop picking up its images."""
        url = f"{self.ctx.base_url}/api/v2/generate/status/{ticket}"
        await self._call("DELETE", url, time.monotonic() + CANCEL_TIMEOUT_S)

    async def balance(self) -> str | None:
        """The account's kudos, from ``GET /api/v2/find_user``."""
        if self._key() == ANONYMOUS_KEY:
            return "anonymous (no kudos)"
        url = f"{self.ctx.base_url}/api/v2/find_user"
        user = parse_json(self.ctx, await self._call("GET", url, time.monotonic() + 30), _User)
        return f"{user.kudos:g} kudos"

    async def available_models(self) -> list[str] | None:
        """Image models with at least one worker, from ``GET /api/v2/status/models``."""
        url = f"{self.ctx.base_url}/api/v2/status/models"
        response = await self._call("GET", url, time.monotonic() + 30, params={"type": "image"})
        try:
            models = [_Model.model_validate(item) for item in response.json()]
        except (ValueError, TypeError):
            raise ProviderResponseError(
                f"{self.ctx.name} sent a model list we could not read", provider=self.ctx.name
            ) from None
        return [m.name for m in models if m.count > 0]

    async def _call(self, method: str, url: str, deadline: float, **kwargs: Any) -> httpx.Response:
        headers = {"apikey": self._key(), "Client-Agent": CLIENT_AGENT}
        return await call_api(
            self.ctx, method, url, deadline=deadline, classify=self._classify,
            headers=headers, **kwargs,
        )  # fmt: skip

    def _key(self) -> str:
        return require_key(self.ctx) if self.ctx.settings.api_key_env else ANONYMOUS_KEY

    def _classify(self, response: httpx.Response) -> ImageGateError | None:
        """The Horde's return codes (``rc``) that the HTTP status alone would misfile."""
        try:
            body = response.json()
        except ValueError:
            return None
        rc = body.get("rc") if isinstance(body, dict) else None
        message = provider_message(response, self.ctx.api_key)
        if rc == "CorruptPrompt":
            return content_rejected(self.ctx, message)
        if rc == "KudosUpfront":
            return ProviderQuotaError(
                f"{self.ctx.name} wants kudos up front for this size or step count; {message}",
                provider=self.ctx.name,
                status=response.status_code,
            )
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, dict) and errors:
            field, text = next(iter(errors.items()))
            return ProviderRejectedError(
                f"{self.ctx.name} rejected the request ({field}: {str(text)[:160]})",
                provider=self.ctx.name,
                status=response.status_code,
            )
        return None


def _size(request: ImageRequest) -> tuple[int, int]:
    """Sides in multiples of 64 from 64 to 3072.

    Raises:
        InvalidRequestError: a size the Horde does not make.
    """
    if request.size is not None:
        low, high = SIDE
        if any(side % 64 or not low <= side <= high for side in request.size):
            raise InvalidRequestError(
                f"the Horde makes sides in multiples of 64 from {low} to {high};"
                f" {request.size[0]}x{request.size[1]} is not (try 512x512 or 768x512)"
            )
        return request.size
    ratio = request.ratio()
    if ratio is None:
        return DEFAULT_SIZE
    return size_for_aspect(ratio, area=DEFAULT_SIZE[0] * DEFAULT_SIZE[1], high=SIDE[1])


def _snap(side: int) -> int:
    """An input's side as the Horde takes it (it resizes the source to the request's size)."""
    return min(SIDE[1], max(SIDE[0], round(side / 64) * 64))
