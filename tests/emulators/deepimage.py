"""Deep-Image.ai emulator (documented base URL https://deep-image.ai; `base_path` "").

Routes (auth header `x-api-key: <key>`):
  POST /rest_api/process_result  schedule a job, wait up to `sync_wait_s` (default 25 s) for it
  POST /rest_api/process         schedule a job, answer {"job", "status": "received"} at once
  GET  /rest_api/result/{job}    {"status": "in_progress"|"complete", "job", "result_url"?}
  GET  /rest_api/me              account information (shape is the emulator's choice, below)
Both POSTs take JSON, or multipart with a file part `image` or `fileName` plus a `parameters`
part holding the JSON payload. `url` may be http(s) (fetched), `base64,<data>` (a `data:` URI is
accepted too) or `storage://...` (always "not found" here). With no image and a
`background.generate` block the job is text-to-image. `model_type`/`adapter_type` are not
validated (the docs disagree on the lists). `width`/`height` are pixels or "N%" of the input
(text-to-image: of `image_size`, default 256x256); one given alone keeps the aspect ratio.

Jobs take `job_duration_s` (default 0.2 s) and then are complete; a `slow_job` fault keeps one in
progress forever. `webhooks.complete` gets {job, data: <request>, result_url, results: null}
when the job completes (also for process_result, which still waits as usual).

Errors as documented: 403 {"message": "No x-api-key header is provided"}; 404 {"message":
"No user found for provided token"} for a wrong key; 400 {"message", "code": "BAD_REQUEST"};
400 NOT_ENOUGH_CREDITS; 429 TOO_MANY_REQUESTS when `max_concurrent_jobs` (default 5) jobs are
still running; 404 {"message": "Job not found"} or {"message": "Image deleted",
"status": "complete"}; 500 {"message": "We have encountered some technical issues ...",
"status": "failed", "job": ""} (fault status 500).

Emulator's choices: each job costs 1 of `credits` (default 100); results are JPEG unless
`output_format` says png/webp; sides above `max_side` (default 4096) are refused with the
documented "cannot be upscaled above" message; moderation fault: 400 {"message": "Image flagged
as NSFW by content moderation", "code": "NSFW_DETECTED"}; `GET /rest_api/me` answers
{"username", "email", "credits", "rate_limit"}; `DELETE /rest_api/result/{job}` (path unknown in
the docs) deletes a result, after which polling answers "Image deleted".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from .base import ApiError, Call, Emulator, is_int, open_image, render_image

FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp"}


@dataclass
class Job:
    """A scheduled job; its status follows from the time it has run."""

    id: str
    params: dict[str, Any]
    created: float
    duration: float
    result_url: str
    slow: bool = False
    deleted: bool = False
    polled: bool = False

    def complete(self) -> bool:
        return not self.slow and time.monotonic() - self.created >= self.duration

    def view(self) -> dict[str, Any]:
        if self.complete():
            return {"status": "complete", "job": self.id, "result_url": self.result_url}
        return {"status": "in_progress" if self.polled else "received", "job": self.id}


class DeepImageEmulator(Emulator):
    """Deep-Image with `credits`, a concurrent-job cap and a timed job state machine."""

    kind = "deepimage"
    base_path = ""

    def __init__(
        self,
        *,
        credits: int = 100,
        max_concurrent_jobs: int = 5,
        sync_wait_s: float = 25.0,
        job_duration_s: float = 0.2,
        max_side: int = 4096,
        **options: Any,
    ):
        super().__init__(**options)
        self.credits = credits
        self.max_concurrent_jobs = max_concurrent_jobs
        self.sync_wait_s = sync_wait_s
        self.job_duration_s = job_duration_s
        self.max_side = max_side
        self.jobs: dict[str, Job] = {}

    def api_routes(self):
        return [
            ("POST", "/rest_api/process_result", self._process_result),
            ("POST", "/rest_api/process", self._process),
            ("GET", "/rest_api/result/{job}", self._result),
            ("DELETE", "/rest_api/result/{job}", self._delete),
            ("GET", "/rest_api/me", self._me),
        ]

    def authenticate(self, request):
        key = request.headers.get("x-api-key")
        if not key:
            raise ApiError(403, "No x-api-key header is provided")
        if key != self.api_key:
            raise ApiError(404, "No user found for provided token")

    def error_body(self, err):
        body: dict[str, Any] = {"message": err.message}
        if err.code:
            body["code"] = err.code
        return {**body, **err.extra}

    def fault_error(self, status):
        if status == 429:
            return self._too_many()
        if status >= 500:
            return ApiError(
                status,
                "We have encountered some technical issues with processing your image. "
                "No credits were lost. Please try again.",
                status="failed",
                job="",
            )
        return super().fault_error(status)

    def moderation_error(self):
        return ApiError(400, "Image flagged as NSFW by content moderation", "NSFW_DETECTED")

    # ----- endpoints ---------------------------------------------------------------------------

    async def _process(self, call: Call) -> Any:
        return (await self._schedule(call)).view()

    async def _process_result(self, call: Call) -> Any:
        job = await self._schedule(call)
        deadline = time.monotonic() + self.sync_wait_s
        while not job.complete() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        job.polled = True
        return job.view()

    async def _result(self, call: Call) -> Any:
        job = self.jobs.get(call.request.path_params["job"])
        if job is None:
            raise ApiError(404, "Job not found")
        if job.deleted:
            raise ApiError(404, "Image deleted", status="complete")
        job.polled = True
        return job.view()

    async def _delete(self, call: Call) -> Any:
        job = self.jobs.get(call.request.path_params["job"])
        if job is None:
            raise ApiError(404, "Job not found")
        job.deleted = True
        return {"message": "Image deleted", "job": job.id}

    async def _me(self, call: Call) -> Any:
        return {
            "username": "emulator",
            "email": "emulator@example.com",
            "credits": self.credits,
            "rate_limit": self.max_concurrent_jobs,
        }

    # ----- job creation ------------------------------------------------------------------------

    async def _schedule(self, call: Call) -> Job:
        params, upload = _parse(call)
        source = upload if upload is not None else await self._load_url(call, params.get("url"))
        background = params.get("background")
        generate = background.get("generate") if isinstance(background, dict) else None
        if source is None and not isinstance(generate, dict):
            raise ApiError(400, "File or image url is required", "BAD_REQUEST")
        base = _image_size(source) if source is not None else self.image_size
        size = self._output_size(params, base)
        ext = FORMATS.get(str(params.get("output_format", "jpeg")).lower())
        if ext is None:
            raise ApiError(400, "output_format must be jpeg, jpg, png or webp", "BAD_REQUEST")
        if self.credits < 1:
            raise ApiError(
                400, "You dont have enough credits to perform those actions", "NOT_ENOUGH_CREDITS"
            )
        if sum(not j.complete() for j in self.jobs.values()) >= self.max_concurrent_jobs:
            raise self._too_many()
        self.credits -= 1
        seed = json.dumps([generate, params.get("width"), params.get("height")], sort_keys=True)
        seed += hashlib.sha256(source or b"").hexdigest()
        data = render_image(seed, size, ext)
        job = Job(
            id=str(uuid.uuid1()),
            params=params,
            created=time.monotonic(),
            duration=self.job_duration_s,
            result_url=self.publish(call, data, ext),
            slow=call.flag("slow_job"),
        )
        self.jobs[job.id] = job
        self._webhook(call, job)
        return job

    def _webhook(self, call: Call, job: Job) -> None:
        hooks = job.params.get("webhooks")
        url = hooks.get("complete") if isinstance(hooks, dict) else None
        if not url or job.slow:
            return
        body = {"job": job.id, "data": job.params, "result_url": job.result_url, "results": None}
        self.send_callback(call, url, body, delay_s=job.duration + self.callback_delay_s)

    async def _load_url(self, call: Call, url: Any) -> bytes | None:
        if url in (None, ""):
            return None
        if not isinstance(url, str):
            raise ApiError(400, "Unidentified image", "BAD_REQUEST")
        if url.startswith("storage://"):
            raise ApiError(400, f"Storage {url.split('/')[2]} not found", "BAD_REQUEST")
        if url.startswith(("http://", "https://")):
            return await self._fetch(call, url)
        if url.startswith("data:") and ";base64," in url:
            url = "base64," + url.split(";base64,", 1)[1]
        if url.startswith("base64,"):
            try:
                return base64.b64decode(url[len("base64,") :], validate=True)
            except binascii.Error as exc:
                raise ApiError(400, "Unidentified image", "BAD_REQUEST") from exc
        raise ApiError(400, "Unidentified image", "BAD_REQUEST")

    async def _fetch(self, call: Call, url: str) -> bytes:
        own = f"{call.base_url}/_files/"
        if url.startswith(own) and url[len(own) :].split("?")[0] in self.files:
            return self.files[url[len(own) :].split("?")[0]].data
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
                response.raise_for_status()
                return response.content
        except httpx.HTTPError as exc:
            raise ApiError(400, "Unidentified image", "BAD_REQUEST") from exc

    def _output_size(self, params: dict[str, Any], base: tuple[int, int]) -> tuple[int, int]:
        width = _dimension(params.get("width"), base[0], "width")
        height = _dimension(params.get("height"), base[1], "height")
        if width is None and height is None:
            width, height = base
        elif width is None:
            width = max(1, round(base[0] * (height or 0) / base[1]))
        elif height is None:
            height = max(1, round(base[1] * width / base[0]))
        assert width is not None and height is not None
        if max(width, height) > self.max_side:
            raise ApiError(
                400,
                f"Image cannot be upscaled above {self.max_side} x {self.max_side} pixels limit.",
                "BAD_REQUEST",
            )
        return width, height

    def _too_many(self) -> ApiError:
        active = sum(not j.complete() for j in self.jobs.values())
        return ApiError(
            429,
            f"Image cannot be processed right now. Your rate limit is {self.max_concurrent_jobs} "
            f"and you are currently processing {active} images.",
            "TOO_MANY_REQUESTS",
        )


def _parse(call: Call) -> tuple[dict[str, Any], bytes | None]:
    """The request parameters and the uploaded image (if any), from JSON or multipart."""
    form, files = call.record.form, call.record.files
    if form is None:
        if not isinstance(call.record.json, dict):
            raise ApiError(400, "Request body must be a JSON object", "BAD_REQUEST")
        return call.record.json, None
    try:
        params = json.loads(form.get("parameters") or "{}")
    except ValueError as exc:
        raise ApiError(400, "parameters must be a JSON string", "BAD_REQUEST") from exc
    if not isinstance(params, dict):
        raise ApiError(400, "parameters must be a JSON object", "BAD_REQUEST")
    files = files or {}
    return params, files.get("image") or files.get("fileName")


def _dimension(value: Any, base: int, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("%"):
        try:
            value = round(base * float(value[:-1]) / 100)
        except ValueError:
            value = None
    if not is_int(value) or value < 1:
        raise ApiError(400, f"{name} must be a positive number of pixels or 'N%'", "BAD_REQUEST")
    return value


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        return open_image(data, "url").size
    except ApiError as exc:
        raise ApiError(400, "Unidentified image", "BAD_REQUEST") from exc
