"""Stable Diffusion WebUI emulator: AUTOMATIC1111 and Forge's ``/sdapi/v1`` API (`base_path` "").

Shapes from AUTOMATIC1111/stable-diffusion-webui ``modules/api/api.py`` (the v1.10 line, with
``create_task_id``/``sd_schedulers``) and ``modules/api/models.py`` (commit 008a8e7576387b):

  POST /sdapi/v1/txt2img             {prompt, negative_prompt, seed (-1 = random), steps,
                                      cfg_scale, width, height, sampler_name, batch_size, n_iter,
                                      override_settings: {sd_model_checkpoint}, force_task_id, ...}
                                      -> {"images": [base64 PNG], "parameters": {...},
                                          "info": "<JSON: seed, all_seeds, width, height,
                                          sd_model_name, index_of_first_image, infotexts, ...>"}
  POST /sdapi/v1/img2img             as txt2img plus init_images [base64], denoising_strength,
                                      mask (base64; white = repaint unless inpainting_mask_invert)
  POST /sdapi/v1/extra-single-image  {image, resize_mode 0|1, upscaling_resize, upscaler_1, ...}
                                      -> {"html_info", "image"}
  GET  /sdapi/v1/sd-models           [{title, model_name, hash, sha256, filename, config}]
  GET  /sdapi/v1/samplers, /sdapi/v1/upscalers
  GET  /sdapi/v1/progress            {progress 0..1, eta_relative, state: {job, job_count, job_no,
                                      sampling_step, sampling_steps, interrupted, ...},
                                      current_image, textinfo}
  POST /sdapi/v1/interrupt           {} (stops the job running now, whoever sent it)

Every request model field is optional and typed (``PydanticModelGenerator`` wraps each in
``Optional``), so a wrong type is FastAPI's 422 ``{"detail": [{"type", "loc", "msg", ...}]}``;
unknown fields are ignored. Errors raised in handlers go through ``api_middleware``:
``{"error": "HTTPException", "detail": "...", "body": "", "errors": "..."}``. ``--api-auth
user:password`` puts HTTP basic auth on every route: no header -> 401 "Not authenticated",
wrong pair -> 401 "Incorrect username or password", both with ``WWW-Authenticate: Basic``.
An unknown ``sd_model_checkpoint`` falls back to the first model, as ``select_checkpoint``
does ("Checkpoint ... not found; loading fallback"); ``info.sd_model_name`` says which ran.
An unknown sampler is 400 "Sampler not found"; img2img without ``init_images`` is 404 "Init
image not found"; undecodable base64 is 500 "Invalid encoded image"; an unknown upscaler is a
500 AssertionError ("could not find upscaler named ...").

Jobs run one at a time (the WebUI's ``queue_lock``); each sampling step takes `step_delay_s`
(default 0), which is what ``/progress`` reports while a request waits. The API has no
moderation. Emulator's choices: images are PNG; a txt2img without width/height is 512x512.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .base import ApiError, Call, Emulator, render_image

SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "Euler a", "Euler", "LMS", "Heun", "DDIM", "UniPC"]
UPSCALERS = ["None", "Lanczos", "Nearest", "ESRGAN_4x", "R-ESRGAN 4x+", "SwinIR_4x"]
MODELS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]


class _Processing(BaseModel):
    """The fields the emulator reads; like the real models every one is optional and typed."""

    model_config = ConfigDict(extra="ignore")
    prompt: str | None = ""
    negative_prompt: str | None = ""
    seed: int | None = -1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    override_settings: dict[str, Any] | None = None
    force_task_id: str | None = None
    send_images: bool | None = True


class _Img2Img(_Processing):
    init_images: list[Any] | None = None
    denoising_strength: float | None = 0.75
    mask: str | None = None
    inpainting_mask_invert: int | None = 0
    resize_mode: int | None = 0


class _Extras(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str = ""
    resize_mode: int = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaler_1: str = "None"
    upscaler_2: str = "None"


@dataclass
class _State:
    """``shared.state``: what ``/progress`` reports."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    time_start: float = 0.0
    task_id: str | None = None

    def dict(self) -> dict[str, Any]:
        return {
            "skipped": False,
            "interrupted": self.interrupted,
            "stopping_generation": False,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": "0",
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }


@dataclass
class _Checkpoint:
    filename: str
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.hash = hashlib.sha256(self.filename.encode()).hexdigest()

    @property
    def model_name(self) -> str:
        return self.filename.rsplit(".", 1)[0]

    @property
    def title(self) -> str:
        return f"{self.filename} [{self.hash[:10]}]"

    def names(self) -> set[str]:
        return {self.title, self.filename, self.model_name, self.hash[:10]}

    def item(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "model_name": self.model_name,
            "hash": self.hash[:10],
            "sha256": self.hash,
            "filename": f"/models/Stable-diffusion/{self.filename}",
            "config": None,
        }


class SDWebUIEmulator(Emulator):
    """AUTOMATIC1111/Forge; `api_key` is the ``--api-auth`` pair ``user:password`` (None: no
    auth, as a WebUI started without ``--api-auth``)."""

    kind = "sdwebui"
    base_path = ""

    def __init__(
        self,
        *,
        api_key: str | None = "imagegate:test-sdwebui-key",
        models: list[str] | None = None,
        step_delay_s: float = 0.0,
        **options: Any,
    ):
        super().__init__(**options)
        self.api_key = api_key  # type: ignore[assignment]  # None: no --api-auth
        self.checkpoints = [_Checkpoint(name) for name in models or MODELS]
        self.step_delay_s = step_delay_s
        self.state = _State()
        self.lock = asyncio.Lock()  # queue_lock: one job at a time
        self.interrupts = 0

    def api_routes(self):
        return [
            ("POST", "/sdapi/v1/txt2img", self._txt2img),
            ("POST", "/sdapi/v1/img2img", self._img2img),
            ("POST", "/sdapi/v1/extra-single-image", self._extras),
            ("GET", "/sdapi/v1/sd-models", self._sd_models),
            ("GET", "/sdapi/v1/samplers", self._samplers),
            ("GET", "/sdapi/v1/upscalers", self._upscalers),
            ("GET", "/sdapi/v1/progress", self._progress),
            ("POST", "/sdapi/v1/interrupt", self._interrupt),
        ]

    def authenticate(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise ApiError(401, "Not authenticated", headers={"WWW-Authenticate": "Basic"})
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(
                401, "Invalid authentication credentials", headers={"WWW-Authenticate": "Basic"}
            ) from None
        if pair != self.api_key:
            raise ApiError(
                401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
            )

    def error_body(self, err: ApiError) -> Any:
        return {
            "error": err.code or "HTTPException",
            "detail": err.message,
            "body": "",
            "errors": f"{err.status}: {err.message}",
        }

    def moderation_error(self) -> ApiError:  # the API has none; a Fault asking for it is a 500
        return ApiError(500, "no moderation in this API", "RuntimeError")

    # ----- endpoints ---------------------------------------------------------------------------

    async def _txt2img(self, call: Call) -> Any:
        req = _parse(call, _Processing)
        if isinstance(req, Response):
            return req
        return await self._run(call, req, "txt2img", source=b"")

    async def _img2img(self, call: Call) -> Any:
        req = _parse(call, _Img2Img)
        if isinstance(req, Response):
            return req
        assert isinstance(req, _Img2Img)
        if req.init_images is None:
            raise ApiError(404, "Init image not found")
        sources = [_decode_image(item) for item in req.init_images]
        if req.mask:
            _decode_image(req.mask)
        source = b"".join(sources) + (req.mask or "").encode()
        return await self._run(call, req, "img2img", source=source)

    async def _extras(self, call: Call) -> Any:
        req = _parse(call, _Extras)
        if isinstance(req, Response):
            return req
        assert isinstance(req, _Extras)
        data = _decode_image(req.image)
        if req.upscaler_1 not in UPSCALERS:
            raise ApiError(500, f"could not find upscaler named {req.upscaler_1}", "AssertionError")
        width, height = Image.open(io.BytesIO(data)).size
        if req.resize_mode == 1:
            size = (req.upscaling_resize_w, req.upscaling_resize_h)
        else:
            size = (round(width * req.upscaling_resize), round(height * req.upscaling_resize))
        async with self.lock:
            image = render_image(hashlib.sha256(data).hexdigest() + req.upscaler_1, size)
        return {"html_info": "<p>Upscale: ok</p>", "image": self.b64(call, image)}

    async def _sd_models(self, call: Call) -> Any:
        return [checkpoint.item() for checkpoint in self.checkpoints]

    async def _samplers(self, call: Call) -> Any:
        return [{"name": name, "aliases": [], "options": {}} for name in SAMPLERS]

    async def _upscalers(self, call: Call) -> Any:
        return [
            {"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for n in UPSCALERS
        ]

    async def _progress(self, call: Call) -> Any:
        state = self.state
        if state.job_count == 0:
            return {
                "progress": 0,
                "eta_relative": 0,
                "state": state.dict(),
                "current_image": None,
                "textinfo": None,
            }
        progress = 0.01 + state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += state.sampling_step / state.sampling_steps / state.job_count
        elapsed = time.monotonic() - state.time_start
        return {
            "progress": min(progress, 1),
            "eta_relative": elapsed / progress - elapsed,
            "state": state.dict(),
            "current_image": None,
            "textinfo": None,
        }

    async def _interrupt(self, call: Call) -> Any:
        self.interrupts += 1
        if self.state.job_count:
            self.state.interrupted = True
        return {}

    # ----- one job -----------------------------------------------------------------------------

    async def _run(self, call: Call, req: _Processing, job: str, *, source: bytes) -> Any:
        sampler = req.sampler_name or req.sampler_index
        if sampler not in SAMPLERS:
            raise ApiError(400, "Sampler not found")
        checkpoint = self._checkpoint(req.override_settings or {})
        count = max(1, req.batch_size or 1) * max(1, req.n_iter or 1)
        seed = req.seed if req.seed is not None and req.seed >= 0 else random.randrange(2**32)
        size = (req.width or 512, req.height or 512)
        steps = req.steps or 50
        async with self.lock:
            images = await self._sample(call, req, job, steps, count, checkpoint, seed, source)
        info = {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "seed": seed,
            "all_seeds": [seed + i for i in range(count)],
            "width": size[0],
            "height": size[1],
            "sampler_name": sampler,
            "cfg_scale": req.cfg_scale,
            "steps": steps,
            "batch_size": req.batch_size,
            "sd_model_name": checkpoint.model_name,
            "sd_model_hash": checkpoint.hash[:10],
            "index_of_first_image": 0,
            "infotexts": [f"{req.prompt}\nSteps: {steps}, Seed: {seed + i}" for i in range(count)],
        }
        parameters = req.model_dump()
        parameters.pop("init_images", None)
        return {
            "images": [self.b64(call, image) for image in images] if req.send_images else [],
            "parameters": parameters,
            "info": json.dumps(info),
        }

    async def _sample(
        self,
        call: Call,
        req: _Processing,
        job: str,
        steps: int,
        count: int,
        checkpoint: _Checkpoint,
        seed: int,
        source: bytes,
    ) -> list[bytes]:
        self.state = _State(
            job=f"scripts_{job}",
            job_count=count,
            sampling_steps=steps,
            time_start=time.monotonic(),
            task_id=req.force_task_id,
        )
        images = []
        try:
            for index in range(count):
                self.state.job_no = index
                for step in range(steps):
                    if self.state.interrupted or call.flag("slow_job"):
                        break
                    self.state.sampling_step = step + 1
                    if self.step_delay_s:
                        await asyncio.sleep(self.step_delay_s)
                if call.flag("slow_job"):
                    await asyncio.Event().wait()  # a job that never ends (until cancelled)
                key = json.dumps([req.prompt, req.negative_prompt, seed + index, checkpoint.title])
                key += hashlib.sha256(source).hexdigest()
                images.append(render_image(key, (req.width or 512, req.height or 512)))
                if self.state.interrupted:
                    break
        finally:
            self.state = _State()
        return images

    def _checkpoint(self, overrides: dict[str, Any]) -> _Checkpoint:
        wanted = overrides.get("sd_model_checkpoint")
        for checkpoint in self.checkpoints:
            if wanted in checkpoint.names():
                return checkpoint
        return self.checkpoints[0]  # select_checkpoint's fallback


def _parse(call: Call, model: type[BaseModel]) -> BaseModel | Response:
    """The request body validated as FastAPI would: a 422 with ``detail`` when it is not."""
    try:
        return model.model_validate_json(call.record.body or b"{}")
    except ValidationError as exc:
        detail = [
            {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        return JSONResponse({"detail": detail}, 422)


def _decode_image(encoding: Any) -> bytes:
    """``decode_base64_to_image``: a ``data:image/...`` prefix is allowed."""
    if not isinstance(encoding, str):
        raise ApiError(500, "Invalid encoded image")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        data = base64.b64decode(encoding)
        Image.open(io.BytesIO(data)).load()
    except Exception:
        raise ApiError(500, "Invalid encoded image") from None
    return data
