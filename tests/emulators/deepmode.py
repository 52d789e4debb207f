"""Deepmode emulator (documented base URL https://api.deepmode.ai; `base_path` "").

Routes (auth `Authorization: Bearer <key>` on all):
  POST /api/images/generate   JSON model_id*, prompt*, negative_prompt, num_images 1-8, upscale,
                              ratio portrait|square, callback
  POST /api/images/upscale    JSON image_id* (an id this emulator issued), callback
  GET  /api/images/{id}       the image object with a fresh image_url
  POST /api/remix/generate    multipart model_id*, artwork_image*, mask_image*, prompt,
                              negative_prompt, mode sync|async
  POST /api/face-id-remix     multipart identity_image*, artwork_image*, mask_image*, prompt,
                              negative_prompt, mode sync|async
  POST /api/models            multipart `images` (1-30 files) or JSON image_urls (1-30);
                              gender woman|man*, model_type professional|amateur*, name, callback
  GET  /api/check-balance     {"remaining_balance": credits}

Image object: {id, file_name, model_id, image_url, prompt, negative_prompt, upscaled, ratio};
image_url is a signed-looking link to this emulator that answers 403 after `url_ttl_s`
(default 3600 s) or when made under an `expired_url` fault; GET /api/images/{id} gives a new one.

Emulator's choices (the docs are silent):
- Errors: {"error": "<code>", "message": "<text>"} with 401 unauthorized (missing/wrong key),
  400 invalid_request (bad or missing fields, bad files), 402 insufficient_credits,
  404 not_found (unknown model_id or image id), 429 rate_limited, 500 internal_error.
- Moderation fault: 400 {"error": "content_moderation", "message": "...moderation..."}.
- Generate answers (sync, and the callback body) are always a JSON list of image objects, even
  for num_images=1. Upscale answers one image object (and posts the same to its callback).
- Credits: generate 1 per image, upscale 3, remix 1, face-id remix 1, create model 50; charged
  when the request is accepted. Constructor option `credits` (default 1000).
- Sizes: square = `image_size` (default 256x256), portrait = 3:4 of it; upscale is x4 (only
  the size and `upscaled` change). Remix outputs are the size of `artwork_image`. All JPEG.
- Remix with mode=async answers {id, file_name, status: "processing", created_at,
  image_url: null}; the image is ready at once via GET /api/images/{id}.
- Model training finishes at once: {id, name, gender, model_type, status: "completed"} (also
  posted to `callback`); the new id is usable as model_id. `models` lists the trained ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from .base import (
    ApiError,
    Call,
    Emulator,
    bearer_token,
    is_int,
    new_id,
    open_image,
    render_image,
)

DEFAULT_MODEL = "668f1a2bdb4c27d16052c82b"
COSTS = {"generate": 1, "upscale": 3, "remix": 1, "face_id": 1, "model": 50}


class DeepmodeEmulator(Emulator):
    """Deepmode with a configurable list of trained `models` and a `credits` balance."""

    kind = "deepmode"
    base_path = ""

    def __init__(self, *, models: list[str] | None = None, credits: int = 1000, **options: Any):
        super().__init__(**options)
        self.models = list(models or [DEFAULT_MODEL])
        self.credits = credits
        self.images: dict[str, dict[str, Any]] = {}  # id -> fields + "data" (JPEG bytes)

    def api_routes(self):
        return [
            ("POST", "/api/images/generate", self._generate),
            ("POST", "/api/images/upscale", self._upscale),
            ("GET", "/api/images/{image_id}", self._get_image),
            ("POST", "/api/remix/generate", self._remix),
            ("POST", "/api/face-id-remix", self._face_id_remix),
            ("POST", "/api/models", self._create_model),
            ("GET", "/api/check-balance", self._balance),
        ]

    def authenticate(self, request):
        if bearer_token(request) != self.api_key:
            raise ApiError(401, "Invalid or missing API key", "unauthorized")

    def error_body(self, err):
        return {"error": err.code or _CODES.get(err.status, "error"), "message": err.message}

    def moderation_error(self):
        return ApiError(400, "Prompt rejected by content moderation", "content_moderation")

    # ----- endpoints ---------------------------------------------------------------------------

    async def _generate(self, call: Call) -> Any:
        body = call.json_object()
        model_id, prompt = _text(body, "model_id"), _text(body, "prompt")
        negative = body.get("negative_prompt") or ""
        num, ratio = body.get("num_images", 1), body.get("ratio", "portrait")
        if not is_int(num) or not 1 <= num <= 8:
            raise ApiError(400, "num_images must be an integer from 1 to 8")
        if ratio not in ("portrait", "square"):
            raise ApiError(400, "ratio must be 'portrait' or 'square'")
        if not isinstance(body.get("upscale", False), bool):
            raise ApiError(400, "upscale must be a boolean")
        callback = _callback(body)
        self._check_model(model_id)
        self._charge(COSTS["generate"] * num)
        scale = 4 if body.get("upscale") else 1
        fields = dict(model_id=model_id, prompt=prompt, negative_prompt=negative, ratio=ratio)
        objects = [self._image_object(call, self._new_image(fields, i, scale)) for i in range(num)]
        if callback:
            self.send_callback(call, callback, objects)
            return {"message": "Generating images..."}
        return objects

    async def _upscale(self, call: Call) -> Any:
        body = call.json_object()
        source = self.images.get(_text(body, "image_id"))
        if source is None:
            raise ApiError(404, "Image not found")
        callback = _callback(body)
        self._charge(COSTS["upscale"])
        fields = {k: source[k] for k in ("model_id", "prompt", "negative_prompt", "ratio")}
        obj = self._image_object(call, self._new_image(fields, 0, 4 * source["scale"]))
        if callback:
            self.send_callback(call, callback, obj)
            return {"message": "Upscaling images..."}
        return obj

    async def _get_image(self, call: Call) -> Any:
        image = self.images.get(call.request.path_params["image_id"])
        if image is None:
            raise ApiError(404, "Image not found")
        return self._image_object(call, image)

    async def _remix(self, call: Call) -> Any:
        form, files = _multipart(call, ("artwork_image", "mask_image"))
        model_id = (form.get("model_id") or "").strip()
        if not model_id:
            raise ApiError(400, "model_id is required")
        self._check_model(model_id)
        return self._remix_result(call, form, files, "remix", model_id)

    async def _face_id_remix(self, call: Call) -> Any:
        form, files = _multipart(call, ("identity_image", "artwork_image", "mask_image"))
        return self._remix_result(call, form, files, "face_id", None)

    async def _create_model(self, call: Call) -> Any:
        fields, images = self._model_input(call)
        if not 1 <= images <= 30:
            raise ApiError(400, "Provide 1 to 30 images")
        if fields.get("gender") not in ("woman", "man"):
            raise ApiError(400, "gender must be 'woman' or 'man'")
        if fields.get("model_type") not in ("professional", "amateur"):
            raise ApiError(400, "model_type must be 'professional' or 'amateur'")
        callback = _callback(fields)
        self._charge(COSTS["model"])
        model_id = new_id()
        self.models.append(model_id)
        result = {
            "id": model_id,
            "name": fields.get("name") or model_id,
            "gender": fields["gender"],
            "model_type": fields["model_type"],
            "status": "completed",
        }
        if callback:
            self.send_callback(call, callback, result)
        return result

    async def _balance(self, call: Call) -> Any:
        return {"remaining_balance": self.credits}

    # ----- helpers -----------------------------------------------------------------------------

    def _check_model(self, model_id: str) -> None:
        if model_id not in self.models:
            raise ApiError(404, f"Model {model_id} not found")

    def _charge(self, cost: int) -> None:
        if self.credits < cost:
            raise ApiError(402, f"Not enough credits: {cost} needed, {self.credits} left")
        self.credits -= cost

    def _new_image(self, fields: dict[str, Any], index: int, scale: int) -> dict[str, Any]:
        width, height = self.image_size
        if fields["ratio"] == "portrait":
            width = width * 3 // 4
        seed = f"{fields['model_id']}|{fields['prompt']}|{fields['negative_prompt']}|{index}"
        image_id = new_id()
        image = {
            **fields,
            "id": image_id,
            "file_name": f"{image_id}.jpeg",
            "upscaled": scale > 1,
            "scale": scale,
            "data": render_image(seed, (width * scale, height * scale), "jpeg"),
        }
        self.images[image_id] = image
        return image

    def _image_object(self, call: Call, image: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "file_name", "model_id", "prompt", "negative_prompt", "upscaled", "ratio")
        return {**{k: image[k] for k in keys}, "image_url": self._signed_url(call, image)}

    def _signed_url(self, call: Call, image: dict[str, Any]) -> str:
        # Mimic an Azure SAS link: st/se one hour apart, a signature that changes per URL.
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        end = now + dt.timedelta(seconds=self.url_ttl_s)
        sig = hashlib.sha256(f"{image['id']}{now}{len(self.files)}".encode()).hexdigest()[:32]
        query = f"st={now:%Y-%m-%dT%H:%M:%SZ}&se={end:%Y-%m-%dT%H:%M:%SZ}&sp=r&sv=2023-11-03"
        return self.publish(call, image["data"], "jpeg", f"{query}&sr=b&sig={sig}")

    def _remix_result(self, call, form, files, kind: str, model_id: str | None) -> Any:
        mode = form.get("mode") or "sync"
        if mode not in ("sync", "async"):
            raise ApiError(400, "mode must be 'sync' or 'async'")
        for name, data in files.items():
            open_image(data, name)
        self._charge(COSTS[kind])
        size = open_image(files["artwork_image"], "artwork_image").size
        prompt, negative = form.get("prompt", ""), form.get("negative_prompt", "")
        image_id = new_id()
        seed = f"{kind}|{model_id}|{prompt}|{negative}|{_digest(files)}"
        self.images[image_id] = {
            "id": image_id,
            "file_name": f"{image_id}.jpeg",
            "model_id": model_id,
            "prompt": prompt,
            "negative_prompt": negative,
            "upscaled": False,
            "scale": 1,
            "ratio": "square" if size[0] == size[1] else "portrait",
            "data": render_image(seed, size, "jpeg"),
        }
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        result = {"id": image_id, "file_name": f"{image_id}.jpeg", "created_at": created}
        if mode == "async":
            return {**result, "status": "processing", "image_url": None}
        url = self._signed_url(call, self.images[image_id])
        return {**result, "status": "completed", "image_url": url}

    def _model_input(self, call: Call) -> tuple[dict[str, Any], int]:
        """Fields and image count from a multipart or JSON model-creation request."""
        if call.record.form is not None:
            uploads = [u for u in call.record.uploads if u.name == "images"]
            for upload in uploads:
                open_image(upload.data, f"images ({upload.filename})")
            return dict(call.record.form), len(uploads)
        body = call.json_object()
        urls = body.get("image_urls")
        if not isinstance(urls, list) or not all(_is_http(u) for u in urls):
            raise ApiError(400, "image_urls must be a list of http(s) URLs")
        return body, len(urls)


_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_credits",
    404: "not_found",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} is required")
    return value


def _callback(body: dict[str, Any]) -> str | None:
    callback = body.get("callback")
    if callback in (None, ""):
        return None
    if not _is_http(callback):
        raise ApiError(400, "callback must be an http(s) URL")
    return callback


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _multipart(call: Call, required: tuple[str, ...]) -> tuple[dict[str, str], dict[str, bytes]]:
    form, files = call.record.form, call.record.files
    if form is None or files is None:
        raise ApiError(400, "Expected multipart/form-data")
    missing = [name for name in required if not files.get(name)]
    if missing:
        raise ApiError(400, f"Missing file(s): {', '.join(missing)}")
    return form, {name: files[name] for name in required}


def _digest(files: dict[str, bytes]) -> str:
    return hashlib.sha256(b"".join(files.values())).hexdigest()[:16]
