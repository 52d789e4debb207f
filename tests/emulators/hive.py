"""Hive emulator: the v2 task API and the v3 model API (base URL https://api.thehive.ai;
`base_path` "").

v2 (auth `Authorization: Token <api_key>`):
  POST /api/v2/task/sync   JSON text_data*, options {neg_text, num_images 1-6}; answers the task
  POST /api/v2/task/async  same plus callback_url*; answers an ack, then POSTs the task object
Task object: {id, project_id, user_id, callback, metadata, created_on, status: [{status:
{code: "0", message: "SUCCESS"}, response: {input, output: [{watermarked_images: [], images:
[{index, width, height, path, message: "200", url}], s3_bucket, s3_domain}]}}]}. Images are PNG,
`image_size` (default 1024x1024, the documented v2 size).

v3 (auth `Authorization: Bearer <v3_api_key>`; a v2 key is refused):
  POST /api/v3/{vendor}/{model}  for black-forest-labs/flux-schnell, hive/flux-schnell-enhanced,
  stabilityai/sdxl, hive/sdxl-enhanced, hive/flux-schnell-emoji. Body {"input": {prompt*,
  negative_prompt, image_size {width, height}, num_inference_steps, guidance_scale, num_images,
  seed, output_format jpeg|png, output_quality}}; answers {id, model, version, input, output:
  [{url}]}. Default size `image_size` (emoji: at most 512x512); emoji images are transparent PNG.

Emulator's choices (undocumented or unverified):
- Errors (v2 and v3): {"status_code": <http>, "message": "<text>"}. Missing or malformed
  Authorization (wrong scheme) -> 401; wrong key -> 403; bad fields -> 400; unknown v3 model ->
  404; fault statuses carry the HTTP reason phrase as message.
- Moderation fault (prompt or image flagged; the whole call fails): HTTP `moderation_status`
  (default 400) with {"status_code", "message": "Content moderation: ... flagged ...",
  "code": "content_moderation"}. For v2 async it is the answer to the submit request.
- v2 async ack: {"task_id": id, "id": id, "project_id", "callback_url"}; callback_url is
  required there. The sync endpoint ignores callback_url.
- v3 limits: num_images 1-`v3_max_images` (default 4), sides 256-2048, seed -1..2147483647,
  num_inference_steps 1-50, guidance_scale 0-20, output_quality 1-100; negative_prompt and
  guidance_scale are accepted for every model (flux ignores them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from .base import ApiError, Call, Emulator, bearer_token, is_int, is_number, render_image

V3_MODELS = (
    "black-forest-labs/flux-schnell",
    "hive/flux-schnell-enhanced",
    "stabilityai/sdxl",
    "hive/sdxl-enhanced",
    "hive/flux-schnell-emoji",
)


class HiveEmulator(Emulator):
    """Hive v2 (`api_key`, Token scheme) and v3 (`v3_api_key`, Bearer scheme) in one app."""

    kind = "hive"
    base_path = ""
    default_image_size = (1024, 1024)

    def __init__(
        self,
        *,
        v3_api_key: str = "test-hive-v3-key",
        project_id: int = 18416,
        v3_max_images: int = 4,
        moderation_status: int = 400,
        **options: Any,
    ):
        super().__init__(**options)
        self.v3_api_key = v3_api_key
        self.project_id = project_id
        self.v3_max_images = v3_max_images
        self.moderation_status = moderation_status

    def api_routes(self):
        return [
            ("POST", "/api/v2/task/sync", self._v2_sync),
            ("POST", "/api/v2/task/async", self._v2_async),
            ("POST", "/api/v3/{vendor}/{model}", self._v3),
        ]

    def authenticate(self, request):
        v3 = request.url.path.startswith("/api/v3/")
        key = bearer_token(request, "Bearer" if v3 else "Token")
        if key is None:
            scheme = "Bearer <V3 secret key>" if v3 else "Token <API_KEY>"
            raise ApiError(401, f"Missing or malformed authorization header (expected {scheme})")
        if key != (self.v3_api_key if v3 else self.api_key):
            raise ApiError(403, "Forbidden: invalid API key")

    def error_body(self, err):
        return {"status_code": err.status, "message": err.message, **_code(err)}

    def moderation_error(self):
        message = "Content moderation: the request was flagged (NSFW); no images were generated"
        return ApiError(self.moderation_status, message, "content_moderation")

    # ----- v2 ----------------------------------------------------------------------------------

    async def _v2_sync(self, call: Call) -> Any:
        body = call.json_object()
        return self._v2_task(call, body, _v2_request(body), callback=None)

    async def _v2_async(self, call: Call) -> Any:
        body = call.json_object()
        request = _v2_request(body)
        callback = body.get("callback_url")
        if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
            raise ApiError(400, "callback_url (an http(s) URL) is required for async tasks")
        task = self._v2_task(call, body, request, callback)
        self.send_callback(call, callback, task)
        ack = {"task_id": task["id"], "id": task["id"], "project_id": self.project_id}
        return {**ack, "callback_url": callback}

    def _v2_task(self, call: Call, body: dict, request: tuple, callback: str | None) -> dict:
        prompt, negative, num = request
        width, height = self.image_size
        images = []
        for index in range(num):
            data = render_image(f"v2|{prompt}|{negative}|{index}", (width, height), "png")
            path = f"image_generation/{self.project_id}/image{index}_{width}_{height}.png"
            url = self.publish(call, data, "png")
            images.append(
                {
                    "index": index,
                    "width": width,
                    "height": height,
                    "path": path,
                    "message": "200",
                    "url": url,
                }
            )
        output = {"watermarked_images": [], "images": images, "s3_bucket": None, "s3_domain": None}
        status = {"status": {"code": "0", "message": "SUCCESS"}}
        return {
            "id": str(uuid.uuid4()),
            "project_id": self.project_id,
            "user_id": 1,
            "callback": callback,
            "metadata": body.get("metadata"),
            "created_on": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "status": [{**status, "response": {"input": body, "output": [output]}}],
        }

    # ----- v3 ----------------------------------------------------------------------------------

    async def _v3(self, call: Call) -> Any:
        model = "{vendor}/{model}".format(**call.request.path_params)
        if model not in V3_MODELS:
            raise ApiError(404, f"Model {model} not found")
        body = call.json_object()
        params = body.get("input")
        if not isinstance(params, dict):
            raise ApiError(400, "Body must be {'input': {...}}")
        num, size, ext = self._v3_check(model, params)
        emoji = model.endswith("emoji")
        seed = f"{model}|{params['prompt']}|{params.get('negative_prompt')}|{params.get('seed')}"
        output = []
        for index in range(num):
            data = render_image(f"{seed}|{index}", size, "png" if emoji else ext, alpha=emoji)
            output.append({"url": self.publish(call, data, "png" if emoji else ext)})
        return {
            "id": str(uuid.uuid4()),
            "model": model,
            "version": "1",
            "input": params,
            "output": output,
        }

    def _v3_check(self, model: str, params: dict) -> tuple[int, tuple[int, int], str]:
        """Validate v3 input; returns (num_images, (width, height), extension)."""
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "input.prompt is required")
        num = params.get("num_images", 1)
        if not is_int(num) or not 1 <= num <= self.v3_max_images:
            raise ApiError(400, f"input.num_images must be 1-{self.v3_max_images}")
        _range(params, "seed", -1, 2147483647, integer=True)
        _range(params, "num_inference_steps", 1, 50, integer=True)
        _range(params, "guidance_scale", 0, 20)
        _range(params, "output_quality", 1, 100, integer=True)
        ext = params.get("output_format", "jpeg")
        if ext not in ("jpeg", "png"):
            raise ApiError(400, "input.output_format must be 'jpeg' or 'png'")
        default = self.image_size
        if model.endswith("emoji"):
            default = (min(default[0], 512), min(default[1], 512))
        return num, _v3_size(params.get("image_size"), default), ext


def _v2_request(body: dict[str, Any]) -> tuple[str, str | None, int]:
    """(prompt, negative prompt, num_images) from a v2 body, or a 400 ApiError."""
    prompt = body.get("text_data")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "text_data is required")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "options must be an object")
    num = options.get("num_images", 1)
    if not is_int(num) or not 1 <= num <= 6:
        raise ApiError(400, "options.num_images must be an integer from 1 to 6")
    negative = options.get("neg_text")
    if negative is not None and not isinstance(negative, str):
        raise ApiError(400, "options.neg_text must be a string")
    return prompt, negative, num


def _v3_size(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    if value is None:
        return default
    if not isinstance(value, dict):
        raise ApiError(400, "input.image_size must be {'width': int, 'height': int}")
    width, height = value.get("width", default[0]), value.get("height", default[1])
    for side in (width, height):
        if not is_int(side) or not 256 <= side <= 2048:
            raise ApiError(400, "input.image_size sides must be integers from 256 to 2048")
    return width, height


def _range(params: dict, name: str, low: float, high: float, integer: bool = False) -> None:
    value = params.get(name)
    if value is None:
        return
    if not (is_int(value) if integer else is_number(value)) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"input.{name} must be {kind} from {low} to {high}")


def _code(err: ApiError) -> dict[str, str]:
    return {"code": err.code} if err.code else {}
