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
    Capabilities,
    Plan,
    ProviderOptions,
    check_output_size,
    content_rejected,
    decode_b64,
    download,
    encode_b64,
    ignored,
    keep_input_size,
    no_image,
    parse_json,
    pause,
    provider_message,
    require_key,
    snap,
)
from .selfhosted import SelfHostedImageModel, sampling_params, sd_size

ANONYMOUS_KEY = "0000000000"
CLIENT_AGENT = "imagegate:0.1.0:self-hosted"  # the Horde asks every client to name itself
MAX_IMAGES = 4
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


class HordeImageModel(SelfHostedImageModel):
    kind = "horde"
    default_base_url = "https://aihorde.net"

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
        options = self.accept(request, self.Options)
        if options.sampler is not None and options.sampler not in SAMPLERS:
            raise InvalidRequestError(
                f"{self.ref}: sampler {options.sampler!r} is not one of {', '.join(SAMPLERS)}"
            )
        op = request.operation
        warnings = ignored(request, ("scale",), "the Horde")
        params = sampling_params(request, options.sampler)
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
            params["width"], params["height"] = sd_size(
                request, "the Horde", multiple=64, high=SIDE[1], hint=" (try 512x512 or 768x512)"
            )
        else:
            keep_input_size(request, f"the Horde's {op}")
            # The Horde resizes the source to the request's size: the nearest it makes.
            params.update(width=snap(image.width, 64, *SIDE), height=snap(image.height, 64, *SIDE))
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
        response = await self.api("POST", "/api/v2/generate/async", deadline, json=body)
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
        base = "/api/v2/generate"
        while True:
            check = parse_json(
                self.ctx, await self.api("GET", f"{base}/check/{request_id}", deadline), _Check
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
                response = await self.api("GET", f"{base}/status/{request_id}", deadline)
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
            await pause(self.ctx, deadline)

    async def _image(self, generation: _Generation, deadline: float) -> GeneratedImage:
        if generation.img.startswith(("http://", "https://")):
            data = await download(self.ctx, generation.img, deadline=deadline)
        else:
            data = decode_b64(self.ctx, generation.img)
        seed = int(generation.seed) if generation.seed.isdigit() else None
        return GeneratedImage(data=data, seed=seed, provider_image_id=generation.id or None)

    async def cancel(self, ticket: str, deadline: float) -> None:
        """Delete the request: workers stop picking up its images."""
        await self.api("DELETE", f"/api/v2/generate/status/{ticket}", deadline)

    async def balance(self) -> str | None:
        """The account's kudos, from ``GET /api/v2/find_user``."""
        if self._key() == ANONYMOUS_KEY:
            return "anonymous (no kudos)"
        response = await self.api("GET", "/api/v2/find_user", time.monotonic() + 30)
        user = parse_json(self.ctx, response, _User)
        return f"{user.kudos:g} kudos"

    async def available_models(self) -> list[str] | None:
        """Image models with at least one worker, from ``GET /api/v2/status/models``."""
        path = "/api/v2/status/models"
        response = await self.api("GET", path, time.monotonic() + 30, params={"type": "image"})
        try:
            models = [_Model.model_validate(item) for item in response.json()]
        except (ValueError, TypeError):
            raise ProviderResponseError(
                f"{self.ctx.name} sent a model list we could not read", provider=self.ctx.name
            ) from None
        return [m.name for m in models if m.count > 0]

    def auth(self) -> dict[str, Any]:
        """The key in ``apikey``, and the client named in ``Client-Agent`` as the Horde asks."""
        return {"headers": {"apikey": self._key(), "Client-Agent": CLIENT_AGENT}}

    def _key(self) -> str:
        return require_key(self.ctx) if self.ctx.settings.api_key_env else ANONYMOUS_KEY

    def classify(self, response: httpx.Response) -> ImageGateError | None:
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
