"""NebulaBlock emulator (documented base URL https://api.nebulablock.com/api/v1; `base_path`
"/api/v1").

Routes (auth `Authorization: Bearer <key>`):
  POST /api/v1/images/generation  JSON prompt*, model (or legacy model_name), negative_prompt,
      width, height, num_steps, guidance_scale, seed, image + mask (raw base64, FLUX.1-Fill-dev)
      -> {"model", "object": "list", "data": [{"timings": {"inference": s}, "index": 0,
          "b64_json": "<PNG>"}], "message": "Image generated successfully", "status": "success"}
  GET  /api/v1/users/credits       {"data": {"available_balance": "123.45600"}, "message",
                                    "status": "success"}
  GET  /api/v1/serverless/models   {"data": {"models": [{model_name, model_alias, model_type,
                                    context_length, max_completion_tokens, description, price,
                                    huggingface_url}]}, "message", "status": "success"}
Failures are {"status": "failed", "message": "...", "data": null}.

Emulator's choices (the docs give no codes or limits):
- Status codes: 401 missing/wrong key, 400 validation or unknown model, 402 balance below
  $0.01 or below the model price, 429 rate limit (with Retry-After), 500 for fault 5xx.
- Moderation fault: 400 {"status": "failed", "message": "Prompt rejected by content
  moderation"}.
- Default model black-forest-labs/FLUX.1-schnell; one image per request; output PNG of
  width x height (default `image_size`, 256x256). Limits per model live in `ModelSpec`
  (default sides 64-2048, num_steps 1-100, guidance_scale 0-30) and can be replaced with the
  `models` option. FLUX.1-Fill-dev needs `image` and `mask` (raw base64, no `data:` prefix) and
  rounds width/height to the nearest multiple of 16 (default: the input image's size).
- Each image costs the model's price from `credits` (default 100.0). `rpm`/`rpd` options
  (default None = unlimited) enforce requests per minute / per UTC day on generation.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass
from typing import Any

from .base import ApiError, Call, Emulator, bearer_token, is_int, is_number, open_image
from .base import render_image as _render


@dataclass
class ModelSpec:
    """One image model the emulator serves, with its (configurable) limits."""

    alias: str
    price: float
    description: str = ""
    fill: bool = False  # needs image + mask; sizes are multiples of 16
    min_side: int = 64
    max_side: int = 2048
    max_steps: int = 100
    max_guidance: float = 30.0


DEFAULT_MODEL = "black-forest-labs/FLUX.1-schnell"
MODELS = {
    "stabilityai/stable-diffusion-xl-base-1.0": ModelSpec("SDXL", 0.009, "Stable Diffusion XL"),
    "black-forest-labs/FLUX.1-schnell": ModelSpec("FLUX.1-schnell", 0.003, "Fast FLUX"),
    "black-forest-labs/FLUX.1-Fill-dev": ModelSpec("FLUX.1-Fill-dev", 0.02, "Inpainting", True),
}


class NebulaBlockEmulator(Emulator):
    """NebulaBlock with a `credits` balance (dollars) and optional `rpm`/`rpd` limits."""

    kind = "nebulablock"
    base_path = "/api/v1"

    def __init__(
        self,
        *,
        credits: float = 100.0,
        models: dict[str, ModelSpec] | None = None,
        rpm: int | None = None,
        rpd: int | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        self.credits = credits
        self.models = dict(models or MODELS)
        self.rpm, self.rpd = rpm, rpd
        self._stamps: list[float] = []  # wall-clock times of accepted generation requests

    def api_routes(self):
        return [
            ("POST", "/api/v1/images/generation", self._generate),
            ("GET", "/api/v1/users/credits", self._credits),
            ("GET", "/api/v1/serverless/models", self._models),
        ]

    def authenticate(self, request):
        if bearer_token(request) != self.api_key:
            raise ApiError(401, "Invalid or missing API key")

    def error_body(self, err):
        return {"status": "failed", "message": err.message, "data": None}

    def moderation_error(self):
        return ApiError(400, "Prompt rejected by content moderation")

    # ----- endpoints ---------------------------------------------------------------------------

    async def _generate(self, call: Call) -> Any:
        body = call.json_object()
        name = body.get("model") or body.get("model_name") or DEFAULT_MODEL
        spec = self.models.get(name)
        if spec is None:
            raise ApiError(400, f"Model {name} not found")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "prompt is required")
        _check_numbers(body, spec)
        size = self._size(body, spec)
        if self.credits < max(0.01, spec.price):
            raise ApiError(402, "Insufficient balance: at least $0.01 and the model price needed")
        self._rate_limit()
        self.credits = round(self.credits - spec.price, 5)
        started = time.perf_counter()
        data = _render(f"{name}|{prompt}|{body.get('negative_prompt')}|{body.get('seed')}", size)
        item = {"timings": {"inference": time.perf_counter() - started}, "index": 0}
        return {
            "model": name,
            "object": "list",
            "data": [{**item, "b64_json": self.b64(call, data)}],
            "message": "Image generated successfully",
            "status": "success",
        }

    async def _credits(self, call: Call) -> Any:
        data = {"available_balance": f"{self.credits:.5f}"}
        return {"data": data, "message": "Credit balance retrieved", "status": "success"}

    async def _models(self, call: Call) -> Any:
        models = [
            {
                "model_name": name,
                "model_alias": spec.alias,
                "model_type": "Image",
                "context_length": None,
                "max_completion_tokens": None,
                "description": spec.description,
                "price": spec.price,
                "huggingface_url": f"https://huggingface.co/{name}",
            }
            for name, spec in self.models.items()
        ]
        return {"data": {"models": models}, "message": "Models retrieved", "status": "success"}

    # ----- helpers -----------------------------------------------------------------------------

    def _size(self, body: dict[str, Any], spec: ModelSpec) -> tuple[int, int]:
        default = self.image_size
        if spec.fill:
            image = open_image(_b64(body, "image"), "image")
            open_image(_b64(body, "mask"), "mask")
            default = image.size
        width, height = body.get("width", default[0]), body.get("height", default[1])
        for side in (width, height):
            if not is_int(side) or not spec.min_side <= side <= spec.max_side:
                raise ApiError(400, f"width/height must be {spec.min_side}-{spec.max_side}")
        if spec.fill:  # the docs: Fill-dev auto-resizes to multiples of 16
            width, height = (max(16, round(side / 16) * 16) for side in (width, height))
        return width, height

    def _rate_limit(self) -> None:
        now = time.time()
        day_start = now - now % 86400
        self._stamps = [t for t in self._stamps if t >= day_start]
        last_minute = [t for t in self._stamps if t > now - 60]
        if self.rpm is not None and len(last_minute) >= self.rpm:
            wait = {"retry-after": str(math.ceil(60 - (now - last_minute[0])))}
            raise ApiError(
                429, f"Rate limit exceeded: {self.rpm} requests per minute", headers=wait
            )
        if self.rpd is not None and len(self._stamps) >= self.rpd:
            wait = {"retry-after": str(math.ceil(day_start + 86400 - now))}
            raise ApiError(429, f"Rate limit exceeded: {self.rpd} requests per day", headers=wait)
        self._stamps.append(now)


def _check_numbers(body: dict[str, Any], spec: ModelSpec) -> None:
    steps, guidance, seed = body.get("num_steps"), body.get("guidance_scale"), body.get("seed")
    if steps is not None and (not is_int(steps) or not 1 <= steps <= spec.max_steps):
        raise ApiError(400, f"num_steps must be an integer from 1 to {spec.max_steps}")
    if guidance is not None and (not is_number(guidance) or not 0 <= guidance <= spec.max_guidance):
        raise ApiError(400, f"guidance_scale must be a number from 0 to {spec.max_guidance}")
    if seed is not None and not is_int(seed):
        raise ApiError(400, "seed must be an integer")


def _b64(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name} (base64) is required for this model")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ApiError(400, f"{name} is not valid base64") from exc
