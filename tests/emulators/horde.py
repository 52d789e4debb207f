"""AI Horde emulator: the image part of REST API v2 (`base_path` "", paths under ``/api/v2``).

Shapes from Haidra-Org/AI-Horde at commit fbd5ed46 (``horde/apis/v2/stable.py``,
``horde/apis/v2/base.py``, ``horde/apis/models/stable_v2.py``, ``horde/apis/models/v2.py``,
``horde/exceptions.py``):

  POST   /api/v2/generate/async         header ``apikey`` (anonymous: ``0000000000``);
                                        {prompt, params: {width, height, steps, n, cfg_scale,
                                        sampler_name, seed (a string), denoising_strength, ...},
                                        models, nsfw, censor_nsfw, r2, source_image,
                                        source_processing, source_mask, dry_run, ...}
                                        -> 202 {"id", "kudos", "message"?, "warnings"?}
  GET    /api/v2/generate/check/{id}    {finished, processing, restarted, waiting, done,
                                        faulted, wait_time, queue_position, kudos,
                                        is_possible} (10/second)
  GET    /api/v2/generate/status/{id}   the same plus generations [{img, seed, id, censored,
                                        gen_metadata, worker_id, worker_name, model, state}]
                                        (``img`` a download URL when r2, else base64 webp);
                                        limited to 10 requests a minute per request id
  DELETE /api/v2/generate/status/{id}   cancels; answers the full status with what finished
  GET    /api/v2/status/models          [{name, count, performance, queued, jobs, eta, type}]
  GET    /api/v2/find_user              header ``apikey`` -> UserDetails {username, id, kudos,
                                        concurrency, ...}

Validation: the JSON body is checked against ``GenerationInputStable`` (flask-restx
``validate=True``): a missing prompt, a wrong type (``seed`` must be a string), a value out of
range (width/height 64..3072 and a multiple of 64, steps 1..500, n 1..20, cfg_scale 0..100,
denoising_strength 0.01..1) or outside an enum (sampler_name, source_processing) is 400
{"message": "Input payload validation failed", "errors": {field: text}}; no ``apikey``
header is 400 the same way (reqparse). Horde errors are {"message", "rc"}: an unknown key is
401 InvalidAPIKey, an empty prompt 400 MissingPrompt, ``source_mask`` without
``source_image`` 400 SourceMaskUnnecessary, too many requests at once 429 TooManyPrompts, an
unknown request id 404 RequestNotFound, a prompt refused by the filter 400 CorruptPrompt
(the ``moderation`` fault).

Emulator's choices: requests wait `queue_s` (default 0) in a queue whose position counts down
from `queue_ahead`, then each image takes `job_duration_s` (default 0.05); a request for a
model no worker serves is accepted with a NoAvailableWorker warning and stays
``is_possible: false``; an image costs ceil(steps * pixels / 512² / 10) kudos, charged when it
finishes; `censor_next` images come back censored (black, ``gen_metadata`` censorship/nsfw);
the anonymous user may have 2 images in flight, others 30. Images are webp.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.responses import JSONResponse

from .base import ApiError, Call, Emulator, render_image

ANONYMOUS = "0000000000"
SAMPLERS = {
    "k_lms",
    "k_heun",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
    "k_dpm_fast",
    "k_dpm_adaptive",
    "k_dpmpp_2s_a",
    "k_dpmpp_2m",
    "dpmsolver",
    "k_dpmpp_sde",
    "DDIM",
    "lcm",
}
PROCESSING = ("img2img", "inpainting", "outpainting", "remix")
MODELS = {"stable_diffusion": 12, "AlbedoBase XL (SDXL)": 20, "Deliberate": 8}
# (json type, range) per params field of ModelGenerationInputStable
PARAMS: dict[str, tuple[type | tuple[type, ...], float | None, float | None]] = {
    "width": (int, 64, 3072),
    "height": (int, 64, 3072),
    "steps": (int, 1, 500),
    "n": (int, 1, 20),
    "cfg_scale": ((int, float), 0, 100),
    "denoising_strength": ((int, float), 0.01, 1.0),
    "seed": (str, None, None),
    "sampler_name": (str, None, None),
    "karras": (bool, None, None),
    "post_processing": (list, None, None),
    "clip_skip": (int, 1, 12),
    "hires_fix": (bool, None, None),
    "tiling": (bool, None, None),
}
TOP: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "params": dict,
    "nsfw": bool,
    "trusted_workers": bool,
    "censor_nsfw": bool,
    "models": list,
    "source_image": str,
    "source_processing": str,
    "source_mask": str,
    "r2": bool,
    "shared": bool,
    "slow_workers": bool,
    "replacement_filter": bool,
    "dry_run": bool,
    "workers": list,
    "validated_backends": bool,
}


@dataclass
class User:
    username: str
    id: int
    kudos: float
    concurrency: int


@dataclass
class WaitingPrompt:
    """One request: its images finish one by one after the queue wait."""

    id: str
    user: User
    body: dict[str, Any]
    n: int
    kudos_each: int
    created: float
    queue_s: float
    duration_s: float
    possible: bool = True
    slow: bool = False
    truncated: bool = False  # a truncated_b64 fault on the request: its images come cut
    cancelled_at: float | None = None
    charged: int = 0  # images whose kudos were taken
    images: list[dict[str, Any]] = field(default_factory=list)
    status_calls: list[float] = field(default_factory=list)

    def finished(self, now: float) -> int:
        if not self.possible:
            return 0
        now = min(now, self.cancelled_at or now)
        ran = now - self.created - self.queue_s
        if self.slow or ran < 0:
            return 0
        return min(self.n, int(ran / self.duration_s) if self.duration_s else self.n)


class HordeEmulator(Emulator):
    """The AI Horde with users, kudos, a timed queue and generations."""

    kind = "horde"
    base_path = ""

    def __init__(
        self,
        *,
        kudos: float = 1000.0,
        queue_s: float = 0.0,
        queue_ahead: int = 0,
        job_duration_s: float = 0.05,
        models: dict[str, int] | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        self.user = User("imagegate#4242", 4242, kudos, 30)  # the owner of `api_key`
        self.anonymous = User("Anonymous#0", 0, 0.0, 2)
        self.queue_s = queue_s
        self.queue_ahead = queue_ahead
        self.job_duration_s = job_duration_s
        self.models = dict(MODELS if models is None else models)
        self.prompts: dict[str, WaitingPrompt] = {}
        self.censor_next = 0
        self.deleted: list[str] = []

    def api_routes(self):
        return [
            ("POST", "/api/v2/generate/async", self._async),
            ("GET", "/api/v2/generate/check/{id}", self._check),
            ("GET", "/api/v2/generate/status/{id}", self._status),
            ("DELETE", "/api/v2/generate/status/{id}", self._delete),
            ("GET", "/api/v2/status/models", self._models),
            ("GET", "/api/v2/find_user", self._find_user),
        ]

    def authenticate(self, request):
        """Checked per endpoint: generate and find_user need a key, check/status do not."""

    def error_body(self, err: ApiError) -> Any:
        if err.code == "validation":
            return {"message": err.message, "errors": err.extra["errors"]}
        return {"message": err.message, "rc": err.code or "BadRequest"}

    def fault_error(self, status: int) -> ApiError:
        if status == 429:
            return ApiError(429, "Parallel requests exceeded user limit.", "TooManyPrompts")
        if status >= 500:
            return ApiError(status, "Internal Server Error", "InternalServerError")
        return ApiError(status, "Something went wrong", "BadRequest")

    def moderation_error(self) -> ApiError:
        return ApiError(
            400,
            "This prompt appears to violate our terms of service and will be reported. "
            "Please contact us if you think this is an error.",
            "CorruptPrompt",
        )

    def user_of(self, apikey: str | None) -> User:
        if apikey is None:
            raise _invalid(
                {
                    "apikey": "The API Key corresponding to a registered user. "
                    "Missing required parameter in the HTTP headers"
                }
            )
        user = self._user(apikey)
        if user is None:
            raise ApiError(
                401,
                "No user matching sent API Key. Have you remembered to register at "
                "https://stablehorde.net/register ?",
                "InvalidAPIKey",
            )
        return user

    # ----- endpoints ---------------------------------------------------------------------------

    async def _async(self, call: Call) -> Any:
        user = self.user_of(call.request.headers.get("apikey"))
        body = call.json_object()
        _validate(body)
        if call.flag("moderation"):
            raise self.moderation_error()
        if body["prompt"].strip() == "":
            raise ApiError(400, "You cannot specify an empty prompt.", "MissingPrompt")
        if body.get("source_mask") and not body.get("source_image"):
            raise ApiError(
                400,
                "Please do not pass a source_mask unless you are sending a source_image as well",
                "SourceMaskUnnecessary",
            )
        for key in ("source_image", "source_mask"):
            if body.get(key):
                _decode(body[key], key)
        params = body.get("params") or {}
        n = params.get("n", 1)
        active = sum(p.n - p.finished(time.monotonic()) for p in self._active(user))
        if active + n > user.concurrency:
            raise ApiError(
                429,
                f"Parallel requests ({active + n}) exceeded user limit ({user.concurrency}). "
                "Please try again later or request to increase your concurrency.",
                "TooManyPrompts",
            )
        pixels = params.get("width", 512) * params.get("height", 512)
        each = math.ceil(params.get("steps", 30) * pixels / 512**2 / 10)
        if body.get("dry_run"):
            return {"kudos": each * n}
        models = body.get("models") or ["stable_diffusion"]
        possible = any(self.models.get(m, 0) > 0 for m in models)
        wp = WaitingPrompt(
            str(uuid.uuid4()),
            user,
            body,
            n,
            each,
            time.monotonic(),
            self.queue_s,
            self.job_duration_s,
            possible=possible,
            slow=call.flag("slow_job"),
            truncated=call.flag("truncated_b64"),
        )
        self.prompts[wp.id] = wp
        answer: dict[str, Any] = {"id": wp.id, "kudos": each * n}
        if not possible:
            answer["message"] = (
                "Warning: No available workers can fulfill this request. It will expire in 20 "
                "minutes unless a worker appears. Please confider reducing its size of the request "
                "or choosing a different model."
            )
            answer["warnings"] = [{"code": "NoAvailableWorker", "message": answer["message"]}]
        return JSONResponse(answer, 202)

    async def _check(self, call: Call) -> Any:
        wp = self._find(call, "Check")
        return self._lite(wp, time.monotonic())

    async def _status(self, call: Call) -> Any:
        wp = self._find(call, "Status")
        now = time.monotonic()
        wp.status_calls = [t for t in wp.status_calls if now - t < 60] + [now]
        if len(wp.status_calls) > 10:
            raise ApiError(429, "10 per 1 minute", "TooManyRequests")
        return self._full(call, wp, now)

    async def _delete(self, call: Call) -> Any:
        wp = self._find(call, "Delete")
        now = time.monotonic()
        status = self._full(call, wp, now)
        if wp.cancelled_at is None:
            wp.cancelled_at = now
            self.deleted.append(wp.id)
        return status

    async def _models(self, call: Call) -> Any:
        kind = call.record.query.get("type", "image")
        if kind != "image":
            return []
        return [
            {
                "name": name,
                "count": count,
                "performance": 1.5e6,
                "queued": 0.0,
                "jobs": 0.0,
                "eta": 0,
                "type": "image",
            }
            for name, count in self.models.items()
        ]

    async def _find_user(self, call: Call) -> Any:
        apikey = call.request.headers.get("apikey")
        if not apikey:
            raise self.user_of("")  # type: ignore[misc]  # raises InvalidAPIKey
        user = self._user(apikey)
        if user is None:
            raise ApiError(404, f"User with api_key '{apikey[:4]}…' not found.", "UserNotFound")
        return {
            "username": user.username,
            "id": user.id,
            "kudos": user.kudos,
            "concurrency": user.concurrency,
            "worker_count": 0,
            "trusted": False,
        }

    # ----- state -------------------------------------------------------------------------------

    def _user(self, apikey: str) -> User | None:
        return {self.api_key: self.user, ANONYMOUS: self.anonymous}.get(apikey)

    def _find(self, call: Call, what: str) -> WaitingPrompt:
        wp_id = call.request.path_params["id"]
        wp = self.prompts.get(wp_id)
        if wp is None:
            raise ApiError(
                404,
                f"Image Waiting Prompt ({what}) with ID '{wp_id}' not found.",
                "RequestNotFound",
            )
        return wp

    def _active(self, user: User) -> list[WaitingPrompt]:
        now = time.monotonic()
        return [
            p
            for p in self.prompts.values()
            if p.user is user and p.cancelled_at is None and p.finished(now) < p.n
        ]

    def _lite(self, wp: WaitingPrompt, now: float) -> dict[str, Any]:
        finished = wp.finished(now)
        queued = wp.possible and now - wp.created < wp.queue_s
        done = finished >= wp.n or wp.cancelled_at is not None
        left_queue = max(0.0, wp.created + wp.queue_s - now)
        position = math.ceil(self.queue_ahead * left_queue / wp.queue_s) if wp.queue_s else 0
        waiting = wp.n - finished if (queued or not wp.possible) and not done else 0
        self._charge(wp, finished)
        return {
            "finished": finished,
            "processing": 0 if done or queued or not wp.possible else wp.n - finished,
            "restarted": 0,
            "waiting": waiting,
            "done": done,
            "faulted": False,
            "wait_time": round(left_queue + (wp.n - finished) * wp.duration_s),
            "queue_position": position if queued else 0,
            "kudos": float(wp.kudos_each * finished),
            "is_possible": wp.possible,
        }

    def _full(self, call: Call, wp: WaitingPrompt, now: float) -> dict[str, Any]:
        status = self._lite(wp, now)
        while len(wp.images) < status["finished"]:
            wp.images.append(self._generation(call, wp, len(wp.images)))
        return {**status, "generations": wp.images, "shared": False}

    def _generation(self, call: Call, wp: WaitingPrompt, index: int) -> dict[str, Any]:
        params = wp.body.get("params") or {}
        seed = params.get("seed") or str(uuid.uuid4().int % 2**32)
        seed = str(int(seed) + index) if seed.isdigit() else seed
        size = (params.get("width", 512), params.get("height", 512))
        censored = self.censor_next > 0
        self.censor_next -= 1 if censored else 0
        key = f"{wp.body['prompt']}|{params.get('negative_prompt')}|{seed}|{wp.body.get('models')}"
        key += wp.body.get("source_image", "")[:64]
        data = _black(size) if censored else render_image(key, size, "webp")
        if wp.truncated:
            data = data[: len(data) // 2]
        if wp.body.get("r2", True):
            img = self.publish(call, data, "webp")
        else:
            img = self.b64(call, data)
        model = (wp.body.get("models") or ["stable_diffusion"])[0]
        return {
            "img": img,
            "seed": seed,
            "id": str(uuid.uuid4()),
            "censored": censored,
            "gen_metadata": [{"type": "censorship", "value": "nsfw"}] if censored else [],
            "worker_id": "00000000-0000-0000-0000-000000000001",
            "worker_name": "emulated worker",
            "model": model,
            "state": "censored" if censored else "ok",
        }

    def _charge(self, wp: WaitingPrompt, finished: int) -> None:
        if finished > wp.charged and wp.user.id != 0:
            wp.user.kudos -= wp.kudos_each * (finished - wp.charged)
        wp.charged = max(wp.charged, finished)


def _invalid(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Input payload validation failed", "validation", errors=errors)


def _validate(body: dict[str, Any]) -> None:
    """``GenerationInputStable`` as flask-restx's JSON-schema check sees it."""
    errors: dict[str, str] = {}
    if "prompt" not in body:
        errors["prompt"] = "'prompt' is a required property"
    for key, kind in TOP.items():
        if key in body and not _is(body[key], kind):
            errors[key] = f"{body[key]!r} is not of type '{_name(kind)}'"
    params = body.get("params")
    for key, (kind, low, high) in PARAMS.items() if isinstance(params, dict) else ():
        if key not in params:
            continue
        value = params[key]
        if not _is(value, kind):
            errors[f"params.{key}"] = f"{value!r} is not of type '{_name(kind)}'"
        elif low is not None and value < low:
            errors[f"params.{key}"] = f"{value!r} is less than the minimum of {low}"
        elif high is not None and value > high:
            errors[f"params.{key}"] = f"{value!r} is greater than the maximum of {high}"
        elif key in ("width", "height") and value % 64:
            errors[f"params.{key}"] = f"{value!r} is not a multiple of 64"
    if isinstance(params, dict) and params.get("sampler_name", "k_euler") not in SAMPLERS:
        errors["params.sampler_name"] = (
            f"{params['sampler_name']!r} is not one of {sorted(SAMPLERS)}"
        )
    if body.get("source_processing", "img2img") not in PROCESSING:
        errors["source_processing"] = (
            f"{body['source_processing']!r} is not one of {list(PROCESSING)}"
        )
    if errors:
        raise _invalid(errors)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, kind)


def _name(kind: type | tuple[type, ...]) -> str:
    names = {
        int: "integer",
        float: "number",
        str: "string",
        bool: "boolean",
        list: "array",
        dict: "object",
    }
    return "number" if isinstance(kind, tuple) else names[kind]


def _decode(data: str, key: str) -> None:
    if data.startswith("http"):
        return
    try:
        Image.open(io.BytesIO(base64.b64decode(data, validate=True))).load()
    except (binascii.Error, ValueError, OSError):
        raise ApiError(400, f"Unable to read the {key}", "ImageValidationFailed") from None


def _black(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (0, 0, 0)).save(buf, "WEBP")
    return buf.getvalue()
