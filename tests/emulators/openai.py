"""OpenAI Images emulator (documented base URL https://api.openai.com/v1; `base_path` "/v1").

Routes (auth `Authorization: Bearer <key>`):
  POST /v1/images/generations  JSON prompt*, model (dall-e-2 default | dall-e-3 | gpt-image-*),
      n 1-10 (dall-e-3: 1), size per model, response_format url|b64_json, quality, style,
      user; gpt-image only: background, moderation, output_format, output_compression
  POST /v1/images/edits        multipart image* (gpt-image: also repeated `image[]`), mask,
      prompt*, model (dall-e-2 default | gpt-image-*), n, size, response_format, user
Answer: {"created": <unix>, "data": [{"url"} | {"b64_json"}]} (+ "revised_prompt" for
dall-e-3; gpt-image answers also carry usage, background, output_format, quality, size).
URLs are PNG files on this emulator, valid `url_ttl_s` (default 3600 s = OpenAI's 60 min).
Sizes: dall-e-2 256x256|512x512|1024x1024; dall-e-3 1024x1024|1792x1024|1024x1792; gpt-image
1024x1024|1536x1024|1024x1536|auto. No size (or auto) gives `image_size` (default 1024x1024).

Edits follow the documented rules: the mask must be the same size as the image and carry
alpha (RGBA/LA: transparent = edit); dall-e-2 wants one square PNG under 4 MB in RGBA, LA or
L mode; dall-e-3 cannot edit.

Errors use the OpenAI envelope {"error": {"message", "type", "param", "code"}}: 401
(missing key: code null; wrong key: code "invalid_api_key"), 400 invalid_request_error
(codes missing_required_parameter / invalid_value / integer_above_max_value ...), moderation
fault 400 type image_generation_user_error code content_policy_violation, fault 429 type
requests code rate_limit_exceeded, fault 5xx type server_error.

Emulator's choices: gpt-image ignores response_format (always b64_json); unknown models are
400 invalid_value (param "model"); style is checked only for dall-e-3.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from .base import ApiError, Call, Emulator, bearer_token, is_int, open_image, render_image

SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
QUALITIES = {
    "dall-e-2": ("standard",),
    "dall-e-3": ("standard", "hd"),
    "gpt-image": ("low", "medium", "high", "auto"),
}
PROMPT_LIMIT = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000}


@dataclass
class _Plan:
    model: str
    family: str
    prompt: str
    n: int
    size: tuple[int, int]
    b64: bool
    ext: str = "png"
    transparent: bool = False


class OpenAIEmulator(Emulator):
    """The OpenAI Images API (generations and edits)."""

    kind = "openai"
    base_path = "/v1"
    default_image_size = (1024, 1024)

    def api_routes(self):
        return [
            ("POST", "/v1/images/generations", self._generations),
            ("POST", "/v1/images/edits", self._edits),
        ]

    def authenticate(self, request):
        key = bearer_token(request)
        if key is None:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if key != self.api_key:
            raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")

    def error_body(self, err):
        kind = err.extra.get("type") or _TYPES.get(err.status, "invalid_request_error")
        error = {"message": err.message, "type": kind, "param": err.extra.get("param")}
        return {"error": {**error, "code": err.code}}

    def fault_error(self, status):
        if status == 429:
            return ApiError(429, "Rate limit reached for images per minute.", "rate_limit_exceeded")
        if status >= 500:
            return ApiError(status, "The server had an error processing your request.")
        return super().fault_error(status)

    def moderation_error(self):
        return ApiError(
            400,
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system.",
            "content_policy_violation",
            type="image_generation_user_error",
        )

    # ----- endpoints ---------------------------------------------------------------------------

    async def _generations(self, call: Call) -> Any:
        body = call.json_object()
        plan = self._plan(body, edit=False)
        return self._answer(call, plan, body, seed="")

    async def _edits(self, call: Call) -> Any:
        form, uploads = call.record.form, call.record.uploads
        if form is None:
            raise ApiError(400, "Expected multipart/form-data", "invalid_value")
        fields: dict[str, Any] = dict(form)
        if "n" in fields:
            fields["n"] = _int_field(fields["n"], "n")
        plan = self._plan(fields, edit=True)
        images = [u.data for u in uploads if u.name in ("image", "image[]")]
        mask = next((u.data for u in uploads if u.name == "mask"), None)
        _check_edit_inputs(plan.family, images, mask)
        seed = hashlib.sha256(b"".join(images)).hexdigest()[:16]
        return self._answer(call, plan, fields, seed=seed)

    # ----- helpers -----------------------------------------------------------------------------

    def _plan(self, body: dict[str, Any], edit: bool) -> _Plan:
        """Validate the common fields; raises ApiError the way OpenAI does."""
        model = body.get("model") or "dall-e-2"
        family = "gpt-image" if str(model).startswith("gpt-image") else str(model)
        if family not in SIZES:
            raise _invalid(f"Invalid value for 'model' = {model}.", "model")
        if edit and family == "dall-e-3":
            raise _invalid("dall-e-3 does not support image edits.", "model")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _missing("prompt")
        if len(prompt) > PROMPT_LIMIT[family]:
            raise _invalid(f"Prompt is too long; the maximum is {PROMPT_LIMIT[family]}.", "prompt")
        n = _check_n(body.get("n", 1), family)
        size = self._size(body.get("size"), family)
        response_format = body.get("response_format") or "url"
        if response_format not in ("url", "b64_json"):
            raise _invalid(
                f"'{response_format}' is not one of ['url', 'b64_json']", "response_format"
            )
        quality = body.get("quality")
        if quality is not None and quality not in QUALITIES[family]:
            raise _invalid(f"'{quality}' is not one of {list(QUALITIES[family])}", "quality")
        if family == "dall-e-3" and body.get("style") not in (None, "vivid", "natural"):
            raise _invalid(f"'{body['style']}' is not one of ['vivid', 'natural']", "style")
        plan = _Plan(model, family, prompt, n, size, b64=response_format == "b64_json")
        if family == "gpt-image":
            _gpt_image_options(body, plan)
        return plan

    def _size(self, value: Any, family: str) -> tuple[int, int]:
        if value is None or (value == "auto" and family == "gpt-image"):
            return self.image_size
        if value not in SIZES[family]:
            raise _invalid(f"'{value}' is not one of {list(SIZES[family])} - 'size'", "size")
        width, height = value.split("x")
        return int(width), int(height)

    def _answer(self, call: Call, plan: _Plan, body: dict[str, Any], seed: str) -> dict[str, Any]:
        data = []
        for index in range(plan.n):
            image = render_image(
                f"{plan.model}|{plan.prompt}|{seed}|{index}", plan.size, plan.ext, plan.transparent
            )
            if plan.b64:
                item = {"b64_json": self.b64(call, image)}
            else:
                item = {"url": self.publish(call, image, plan.ext)}
            if plan.family == "dall-e-3":
                item["revised_prompt"] = f"A detailed picture: {plan.prompt}"
            data.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if plan.family == "gpt-image":
            background = "transparent" if plan.transparent else "opaque"
            answer.update(
                background=background,
                output_format=plan.ext,
                quality=body.get("quality") or "auto",
                size="{}x{}".format(*plan.size),
                usage=_usage(plan),
            )
        return answer


_TYPES = {429: "requests", 500: "server_error", 502: "server_error", 503: "server_error"}


def _invalid(message: str, param: str) -> ApiError:
    return ApiError(400, message, "invalid_value", param=param)


def _missing(param: str) -> ApiError:
    message = f"Missing required parameter: '{param}'."
    return ApiError(400, message, "missing_required_parameter", param=param)


def _int_field(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise _invalid(f"Invalid '{name}': expected an integer.", name) from exc


def _check_n(n: Any, family: str) -> int:
    if not is_int(n):
        raise _invalid("Invalid 'n': expected an integer.", "n")
    if n < 1:
        message = f"Invalid 'n': integer below minimum value. Expected a value >= 1, got {n}."
        raise ApiError(400, message, "integer_below_min_value", param="n")
    if n > 10:
        message = f"Invalid 'n': integer above maximum value. Expected a value <= 10, got {n}."
        raise ApiError(400, message, "integer_above_max_value", param="n")
    if family == "dall-e-3" and n != 1:
        raise _invalid("You must provide n=1 for this model.", "n")
    return n


def _gpt_image_options(body: dict[str, Any], plan: _Plan) -> None:
    """Check the gpt-image-only fields and fill the plan's format and transparency."""
    plan.b64 = True  # gpt-image always answers with base64
    plan.ext = body.get("output_format") or "png"
    if plan.ext not in ("png", "jpeg", "webp"):
        raise _invalid(f"'{plan.ext}' is not one of ['png', 'jpeg', 'webp']", "output_format")
    background = body.get("background") or "auto"
    if background not in ("transparent", "opaque", "auto"):
        raise _invalid(
            f"'{background}' is not one of ['transparent', 'opaque', 'auto']", "background"
        )
    if background == "transparent" and plan.ext == "jpeg":
        raise _invalid("Transparent background requires output_format png or webp.", "background")
    plan.transparent = background == "transparent"
    if body.get("moderation") not in (None, "low", "auto"):
        raise _invalid("'moderation' must be 'low' or 'auto'", "moderation")
    compression = body.get("output_compression")
    if isinstance(compression, str):
        compression = _int_field(compression, "output_compression")
    if compression is not None and (not is_int(compression) or not 0 <= compression <= 100):
        raise _invalid("output_compression must be an integer from 0 to 100", "output_compression")


def _check_edit_inputs(family: str, images: list[bytes], mask: bytes | None) -> None:
    if not images:
        raise _missing("image")
    if family == "dall-e-2" and len(images) > 1:
        raise _invalid("dall-e-2 accepts only one image.", "image")
    if len(images) > 16:
        raise _invalid("At most 16 images are accepted.", "image")
    first = open_image(images[0], "image")
    if family == "dall-e-2":
        if first.format != "PNG" or len(images[0]) >= 4 * 1024 * 1024:
            raise _invalid("Invalid input image - image must be a PNG file under 4 MB.", "image")
        if first.width != first.height:
            raise _invalid("Invalid input image - image must be square.", "image")
        if first.mode not in ("RGBA", "LA", "L"):
            raise _invalid(
                f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {first.mode}.",
                "image",
            )
    if mask is not None:
        mask_image = open_image(mask, "mask")
        if mask_image.size != first.size:
            raise _invalid(
                "Invalid mask image format - mask size does not match image size", "mask"
            )
        if mask_image.mode not in ("RGBA", "LA"):
            raise _invalid(
                f"Invalid mask image format - mask needs an alpha channel, got {mask_image.mode}.",
                "mask",
            )


def _usage(plan: _Plan) -> dict[str, Any]:
    text_tokens = max(1, len(plan.prompt) // 4)
    output_tokens = 272 * plan.n  # roughly what a low-quality square image costs
    return {
        "total_tokens": text_tokens + output_tokens,
        "input_tokens": text_tokens,
        "output_tokens": output_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
    }
