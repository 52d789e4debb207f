"""ComfyUI emulator: the server's HTTP API and its ``/ws`` messages (`base_path` "").

Shapes from comfyanonymous/ComfyUI ``server.py`` (commit 005f3ba4aefab4; the ``/interrupt`` with
a ``prompt_id`` body and ``/prompt``'s ``prompt_id``/``no_prompt`` from later versions) and
``execution.py`` (``validate_prompt``, ``validate_inputs``, ``PromptQueue``):

  POST /prompt          {"prompt": {node_id: {"class_type", "inputs"}}, "client_id"?}
                        -> {"prompt_id", "number", "node_errors": {}}; invalid -> 400
                        {"error": {"type", "message", "details", "extra_info"}, "node_errors"}
  GET  /queue           {"queue_running": [[number, prompt_id, prompt, extra, outputs]],
                         "queue_pending": [...]}
  POST /queue           {"delete": [prompt_id, ...]} removes pending prompts; {"clear": true}
  GET  /history/{id}    {} until done, then {id: {"prompt": [...], "outputs": {node_id:
                        {"images": [{"filename", "subfolder", "type"}]}}, "status":
                        {"status_str": "success"|"error", "completed", "messages": [[event,
                        data], ...]}, "meta": {...}}}
  GET  /view            ?filename=&subfolder=&type=output -> the file (404 if none)
  POST /upload/image    multipart ``image`` (+ ``type``, ``subfolder``, ``overwrite``)
                        -> {"name", "subfolder", "type": "input"}; no file -> 400
  POST /interrupt       {"prompt_id"}: stops that prompt if it is the running one; no body:
                        stops whatever runs (a "global interrupt")
  GET  /ws?clientId=    JSON messages {"type", "data"}: status {status: {exec_info:
                        {queue_remaining}}, sid}, execution_start, execution_cached,
                        executing {node, prompt_id} (node null = done), progress {value, max,
                        prompt_id, node}, executed {node, output, prompt_id},
                        execution_success, execution_interrupted, execution_error.
Every route is also served under ``/api`` (``PromptServer.add_routes``).

Validation follows ``validate_inputs`` for the nodes below: a missing required input
(``required_input_missing``), a link of the wrong type (``return_type_mismatch``), a value
that is not an INT/FLOAT (``invalid_input_type``), out of min/max (``value_smaller_than_min``,
``value_bigger_than_max``), a choice not in the list (``value_not_in_list``; LoadImage's list
is the uploaded files), an unknown ``class_type`` (``invalid_prompt``), no output node
(``prompt_no_outputs``). Nodes: CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage,
KSampler, VAEDecode, VAEEncode, VAEEncodeForInpaint, SetLatentNoiseMask, LoadImage,
LoadImageMask, ImageScaleBy, UpscaleModelLoader, ImageUpscaleWithModel, SaveImage.

ComfyUI has no authentication. Emulator's choice: like a reverse proxy in front of it, every
route needs HTTP basic auth with `api_key` ("user:password"; None: no auth), 401 otherwise.
Prompts run one at a time; each KSampler step takes `step_delay_s` (default 0). Faults:
``slow_job`` keeps a prompt running until interrupted; ``truncated_b64`` serves that prompt's
images cut in half; `fail_next(message)` makes the next prompt end in ``execution_error``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .base import ApiError, Call, Emulator, render_image

INT_MAX = 0xFFFFFFFFFFFFFFFF
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "simple", "sgm_uniform"]
CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
UPSCALE_MODELS = ["RealESRGAN_x4plus.pth", "4x-UltraSharp.pth"]


def _node_types(ctx: ComfyUIEmulator) -> dict[str, dict[str, Any]]:
    """``INPUT_TYPES()['required']``, ``RETURN_TYPES`` and ``OUTPUT_NODE`` per class."""
    image_list = sorted(ctx.inputs)
    return {
        "CheckpointLoaderSimple": {
            "in": {"ckpt_name": (ctx.checkpoints,)},
            "out": ("MODEL", "CLIP", "VAE"),
        },
        "CLIPTextEncode": {
            "in": {"text": ("STRING",), "clip": ("CLIP",)},
            "out": ("CONDITIONING",),
        },
        "EmptyLatentImage": {
            "in": {
                "width": ("INT", {"min": 16, "max": 16384}),
                "height": ("INT", {"min": 16, "max": 16384}),
                "batch_size": ("INT", {"min": 1, "max": 4096}),
            },
            "out": ("LATENT",),
        },
        "KSampler": {
            "in": {
                "model": ("MODEL",),
                "seed": ("INT", {"min": 0, "max": INT_MAX}),
                "steps": ("INT", {"min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"min": 0.0, "max": 100.0}),
                "sampler_name": (SAMPLERS,),
                "scheduler": (SCHEDULERS,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"min": 0.0, "max": 1.0}),
            },
            "out": ("LATENT",),
        },
        "VAEDecode": {"in": {"samples": ("LATENT",), "vae": ("VAE",)}, "out": ("IMAGE",)},
        "VAEEncode": {"in": {"pixels": ("IMAGE",), "vae": ("VAE",)}, "out": ("LATENT",)},
        "VAEEncodeForInpaint": {
            "in": {
                "pixels": ("IMAGE",),
                "vae": ("VAE",),
                "mask": ("MASK",),
                "grow_mask_by": ("INT", {"min": 0, "max": 64}),
            },
            "out": ("LATENT",),
        },
        "SetLatentNoiseMask": {
            "in": {"samples": ("LATENT",), "mask": ("MASK",)},
            "out": ("LATENT",),
        },
        "LoadImage": {"in": {"image": (image_list,)}, "out": ("IMAGE", "MASK")},
        "LoadImageMask": {
            "in": {"image": (image_list,), "channel": (["alpha", "red", "green", "blue"],)},
            "out": ("MASK",),
        },
        "ImageScaleBy": {
            "in": {
                "image": ("IMAGE",),
                "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
                "scale_by": ("FLOAT", {"min": 0.01, "max": 8.0}),
            },
            "out": ("IMAGE",),
        },
        "UpscaleModelLoader": {"in": {"model_name": (UPSCALE_MODELS,)}, "out": ("UPSCALE_MODEL",)},
        "ImageUpscaleWithModel": {
            "in": {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)},
            "out": ("IMAGE",),
        },
        "SaveImage": {
            "in": {"images": ("IMAGE",), "filename_prefix": ("STRING",)},
            "out": (),
            "output_node": True,
        },
    }


@dataclass
class Queued:
    """One queued prompt: ``(number, prompt_id, prompt, extra_data, outputs)`` in the API."""

    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]
    truncated: bool = False
    slow: bool = False
    interrupted: bool = False
    messages: list[list[Any]] = field(default_factory=list)

    def row(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


class ComfyUIEmulator(Emulator):
    """ComfyUI with a prompt queue worker, uploads, history and websocket messages."""

    kind = "comfyui"
    base_path = ""

    def __init__(
        self,
        *,
        api_key: str | None = "imagegate:test-comfyui-key",
        step_delay_s: float = 0.0,
        checkpoints: list[str] | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        self.api_key = api_key  # type: ignore[assignment]  # None: no proxy auth
        self.step_delay_s = step_delay_s
        self.checkpoints = checkpoints or list(CHECKPOINTS)
        self.inputs: dict[str, bytes] = {}
        self.outputs: dict[str, bytes] = {}
        self.pending: list[Queued] = []
        self.running: Queued | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, WebSocket] = {}
        self.interrupts: list[str | None] = []
        self._number = itertools.count()
        self._counter = itertools.count(1)
        self._failures: list[str] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        routes = []
        for prefix in ("", "/api"):
            routes.append(WebSocketRoute(f"{prefix}/ws", self._ws))
        self.app.router.routes.extend(routes)

    def api_routes(self):
        routes = [
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("GET", "/history/{prompt_id}", self._get_history),
            ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload),
            ("POST", "/interrupt", self._interrupt),
            ("GET", "/system_stats", self._system_stats),
        ]
        return routes + [(method, "/api" + path, handler) for method, path, handler in routes]

    def authenticate(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            pair = ""
        if scheme.lower() != "basic" or pair != self.api_key:
            raise ApiError(401, "401 Authorization Required", headers={"WWW-Authenticate": "Basic"})

    def error_body(self, err: ApiError) -> Any:
        if err.status == 401:
            return "<html><head><title>401 Authorization Required</title></head></html>"
        return {
            "error": {
                "type": err.code or "error",
                "message": err.message,
                "details": "",
                "extra_info": {},
            },
            "node_errors": err.extra.get("node_errors", {}),
        }

    def moderation_error(self) -> ApiError:  # ComfyUI has no moderation
        return ApiError(500, "no moderation in this API")

    def fail_next(self, message: str = "CUDA out of memory", times: int = 1) -> None:
        """The next `times` prompts end in ``execution_error`` with `message`."""
        self._failures.extend([message] * times)

    # ----- endpoints ---------------------------------------------------------------------------

    async def _post_prompt(self, call: Call) -> Any:
        body = call.record.json
        if not isinstance(body, dict):
            return Response(b"500 Internal Server Error", 500)  # request.json() raises
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return JSONResponse({"error": error, "node_errors": {}}, 400)
        prompt = body["prompt"]
        failure = self._validate(prompt)
        if failure is not None:
            return JSONResponse(failure, 400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        job = Queued(
            next(self._number),
            str(body.get("prompt_id") or uuid.uuid4()),
            prompt,
            extra,
            [k for k, n in prompt.items() if n["class_type"] == "SaveImage"],
            truncated=call.flag("truncated_b64"),
            slow=call.flag("slow_job"),
        )
        self.pending.append(job)
        self._start_worker()
        await self._broadcast("status", {"status": self._queue_info()})
        return {"prompt_id": job.prompt_id, "number": job.number, "node_errors": {}}

    async def _get_prompt(self, call: Call) -> Any:
        return self._queue_info()

    async def _get_queue(self, call: Call) -> Any:
        running = [self.running.row()] if self.running else []
        return {"queue_running": running, "queue_pending": [j.row() for j in self.pending]}

    async def _post_queue(self, call: Call) -> Any:
        body = call.json_object()
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete") or []:
            self.pending = [j for j in self.pending if j.prompt_id != prompt_id]
        return Response(status_code=200)

    async def _get_history(self, call: Call) -> Any:
        prompt_id = call.request.path_params["prompt_id"]
        entry = self.history.get(prompt_id)
        return {prompt_id: entry} if entry is not None else {}

    async def _view(self, call: Call) -> Any:
        query = call.record.query
        name = query.get("filename")
        if name is None:
            return Response(status_code=404)
        if name.startswith("/") or ".." in name:
            return Response(status_code=400)
        store = self.inputs if query.get("type", "output") == "input" else self.outputs
        data = store.get(name)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    async def _upload(self, call: Call) -> Any:
        uploads = [u for u in call.record.uploads if u.name == "image"]
        if not uploads or not uploads[0].filename:
            return Response(status_code=400)
        upload = uploads[0]
        try:
            Image.open(io.BytesIO(upload.data)).load()
        except Exception:
            pass  # ComfyUI stores the bytes as they are; LoadImage fails on them later
        name = upload.filename
        form = call.record.form or {}
        if form.get("overwrite") not in ("true", "1"):
            stem, dot, ext = name.rpartition(".")
            for i in itertools.count(1):
                if name not in self.inputs or self.inputs[name] == upload.data:
                    break
                name = f"{stem} ({i}).{ext}" if dot else f"{name} ({i})"
        self.inputs[name] = upload.data
        return {"name": name, "subfolder": form.get("subfolder", ""), "type": "input"}

    async def _interrupt(self, call: Call) -> Any:
        body = call.record.json if isinstance(call.record.json, dict) else {}
        wanted = body.get("prompt_id")
        self.interrupts.append(wanted)
        if self.running is not None and wanted in (None, self.running.prompt_id):
            self.running.interrupted = True
        return Response(status_code=200)

    async def _system_stats(self, call: Call) -> Any:
        return {"system": {"os": "posix", "comfyui_version": "emulator"}, "devices": []}

    async def _ws(self, websocket: WebSocket) -> None:
        if self.api_key is not None:
            try:
                self.authenticate(websocket)  # type: ignore[arg-type]
            except ApiError:
                await websocket.close(code=1008)
                return
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = websocket
        try:
            await websocket.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            if self.sockets.get(sid) is websocket:
                del self.sockets[sid]

    # ----- validation (execution.validate_prompt) ----------------------------------------------

    def _validate(self, prompt: Any) -> dict[str, Any] | None:
        types = _node_types(self)
        if not isinstance(prompt, dict):
            return _prompt_error("invalid_prompt", "Prompt must be a dict", "")
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return _prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            if node["class_type"] not in types:
                return _prompt_error(
                    "invalid_prompt",
                    f"Cannot execute because node {node['class_type']} does not exist.",
                    f"Node ID '#{node_id}'",
                )
        outputs = [k for k, n in prompt.items() if types[n["class_type"]].get("output_node")]
        if not outputs:
            return _prompt_error("prompt_no_outputs", "Prompt has no outputs", "")
        node_errors: dict[str, Any] = {}
        for node_id, node in prompt.items():
            reasons = _check_inputs(prompt, node, types)
            if reasons:
                node_errors[node_id] = {
                    "errors": reasons,
                    "dependent_outputs": outputs,
                    "class_type": node["class_type"],
                }
        if not node_errors:
            return None
        details = "\n".join(
            f"{r['message']}: {r['details']}" for e in node_errors.values() for r in e["errors"]
        )
        failure = _prompt_error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        failure["node_errors"] = node_errors
        return failure

    # ----- execution ---------------------------------------------------------------------------

    def _start_worker(self) -> None:
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
            self._tasks.add(self._worker)
            self._worker.add_done_callback(self._tasks.discard)

    async def _work(self) -> None:
        while self.pending:
            job = self.pending.pop(0)
            self.running = job
            try:
                await self._execute(job)
            finally:
                self.running = None
            await self._broadcast("status", {"status": self._queue_info()})

    async def _execute(self, job: Queued) -> None:
        sid = job.extra.get("client_id")
        started = {"prompt_id": job.prompt_id, "timestamp": _now_ms()}
        await self._send(job, sid, "execution_start", started)
        await self._send(job, sid, "execution_cached", {"nodes": [], **started})
        values: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for node_id in _order(job.prompt):
            await self._send(
                job,
                sid,
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": job.prompt_id},
            )
            try:
                values[node_id] = await self._run_node(job, sid, node_id, values)
            except _Stopped as stop:
                await self._finish(job, sid, outputs, stop, node_id)
                return
            if job.prompt[node_id]["class_type"] == "SaveImage":
                outputs[node_id] = {"images": values[node_id]}
                await self._send(
                    job,
                    sid,
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": outputs[node_id],
                        "prompt_id": job.prompt_id,
                    },
                )
        await self._finish(job, sid, outputs, None, None)

    async def _finish(
        self, job: Queued, sid: str | None, outputs: dict[str, Any], stop: Any, node_id: Any
    ) -> None:
        base = {"prompt_id": job.prompt_id, "timestamp": _now_ms()}
        if stop is None:
            event, data, status = "execution_success", base, "success"
        else:
            node = {
                "node_id": node_id,
                "node_type": job.prompt[node_id]["class_type"],
                "executed": list(outputs),
            }
            event, status = stop.event, "error"
            data = {**base, **node, **stop.details}
            outputs = {}
        await self._send(job, sid, event, data)
        if stop is None:
            await self._send(job, sid, "executing", {"node": None, "prompt_id": job.prompt_id})
        self.history[job.prompt_id] = {
            "prompt": job.row(),
            "outputs": outputs,
            "status": {"status_str": status, "completed": stop is None, "messages": job.messages},
            "meta": {k: {"node_id": k, "display_node": k} for k in outputs},
        }

    async def _run_node(self, job: Queued, sid: str | None, node_id: str, values: dict) -> Any:
        node = job.prompt[node_id]
        kind, inputs = node["class_type"], node["inputs"]

        def arg(name: str) -> Any:
            value = inputs[name]
            return values[str(value[0])][value[1]] if isinstance(value, list) else value

        if kind == "CheckpointLoaderSimple":
            return (inputs["ckpt_name"], "clip", "vae")
        if kind == "CLIPTextEncode":
            return (str(arg("text")),)
        if kind == "EmptyLatentImage":
            return (
                {
                    "size": (int(arg("width")), int(arg("height"))),
                    "batch": int(arg("batch_size")),
                    "source": "",
                },
            )
        if kind in ("LoadImage", "LoadImageMask"):
            data = self.inputs[inputs["image"]]
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except Exception:
                raise _Stopped.error(
                    "UnidentifiedImageError", "cannot identify image file"
                ) from None
            latent = {"size": image.size, "batch": 1, "source": hashlib.sha256(data).hexdigest()}
            return (latent, latent) if kind == "LoadImage" else (latent,)
        if kind in ("VAEEncode", "VAEEncodeForInpaint"):
            return (dict(arg("pixels")),)
        if kind == "SetLatentNoiseMask":
            return (dict(arg("samples")),)
        if kind == "KSampler":
            return (await self._sample(job, sid, node_id, arg),)
        if kind == "VAEDecode":
            return (dict(arg("samples")),)
        if kind == "ImageScaleBy":
            image = dict(arg("image"))
            scale = float(arg("scale_by"))
            image["size"] = tuple(round(side * scale) for side in image["size"])
            return (image,)
        if kind == "UpscaleModelLoader":
            return (inputs["model_name"],)
        if kind == "ImageUpscaleWithModel":
            image = dict(arg("image"))
            image["size"] = tuple(side * 4 for side in image["size"])
            image["source"] += str(arg("upscale_model"))
            return (image,)
        if kind == "SaveImage":
            return self._save(job, arg("images"), str(arg("filename_prefix")))
        raise AssertionError(kind)

    async def _sample(self, job: Queued, sid: str | None, node_id: str, arg: Any) -> Any:
        if self._failures:
            raise _Stopped.error("torch.OutOfMemoryError", self._failures.pop(0))
        steps = int(arg("steps"))
        for step in range(1, steps + 1):
            if job.interrupted:
                raise _Stopped("execution_interrupted", {})
            if self.step_delay_s:
                await asyncio.sleep(self.step_delay_s)
            await self._send(
                job,
                sid,
                "progress",
                {"value": step, "max": steps, "prompt_id": job.prompt_id, "node": node_id},
            )
        while job.slow and not job.interrupted:
            await asyncio.sleep(0.01)
        if job.interrupted:
            raise _Stopped("execution_interrupted", {})
        latent = dict(arg("latent_image"))
        latent["source"] += json.dumps(
            [arg("seed"), arg("positive"), arg("negative"), arg("denoise"), arg("model")]
        )
        return latent

    def _save(self, job: Queued, image: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        saved = []
        for index in range(image["batch"]):
            data = render_image(f"{image['source']}/{index}", image["size"])
            if job.truncated:
                data = data[: len(data) // 2]
            name = f"{prefix}_{next(self._counter):05}_.png"
            self.outputs[name] = data
            saved.append({"filename": name, "subfolder": "", "type": "output"})
        return saved

    # ----- messages ----------------------------------------------------------------------------

    async def _send(self, job: Queued, sid: str | None, event: str, data: dict[str, Any]) -> None:
        if event.startswith("execution_"):
            job.messages.append([event, data])
        socket = self.sockets.get(sid or "")
        if socket is not None:
            try:
                await socket.send_json({"type": event, "data": data})
            except Exception:  # a client that went away; ComfyUI logs and carries on
                self.sockets.pop(sid or "", None)

    async def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        for sid, socket in list(self.sockets.items()):
            try:
                await socket.send_json({"type": event, "data": {**data, "sid": sid}})
            except Exception:
                self.sockets.pop(sid, None)

    def _queue_info(self) -> dict[str, Any]:
        remaining = len(self.pending) + (1 if self.running else 0)
        return {"exec_info": {"queue_remaining": remaining}}


class _Stopped(Exception):
    """Execution ended early: interrupted or a node failed."""

    def __init__(self, event: str, details: dict[str, Any]):
        super().__init__(event)
        self.event, self.details = event, details

    @classmethod
    def error(cls, exception_type: str, message: str) -> _Stopped:
        return cls(
            "execution_error",
            {
                "exception_message": message,
                "exception_type": exception_type,
                "traceback": [],
                "current_inputs": {},
                "current_outputs": {},
            },
        )


def _prompt_error(kind: str, message: str, details: str) -> dict[str, Any]:
    error = {"type": kind, "message": message, "details": details, "extra_info": {}}
    return {"error": error, "node_errors": {}}


def _check_inputs(prompt: dict, node: dict, types: dict) -> list[dict[str, Any]]:
    """``validate_inputs`` for one node: its required inputs, links and values."""
    spec = types[node["class_type"]]
    inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
    reasons = []
    for name, info in spec["in"].items():
        if name not in inputs:
            reasons.append(_reason("required_input_missing", "Required input is missing", name))
            continue
        value, kind = inputs[name], info[0]
        if isinstance(value, list):
            reasons += _check_link(prompt, types, name, value, kind)
            continue
        if kind in ("INT", "FLOAT"):
            try:
                value = int(value) if kind == "INT" else float(value)
                if isinstance(inputs[name], bool):
                    raise ValueError("a boolean")
            except (TypeError, ValueError) as exc:
                reasons.append(
                    _reason(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {kind} value",
                        f"{name}, {inputs[name]}, {exc}",
                    )
                )
                continue
            limits = info[1] if len(info) > 1 else {}
            if value < limits.get("min", value):
                reasons.append(
                    _reason(
                        "value_smaller_than_min",
                        f"Value {value} smaller than min of {limits['min']}",
                        name,
                    )
                )
            elif value > limits.get("max", value):
                reasons.append(
                    _reason(
                        "value_bigger_than_max",
                        f"Value {value} bigger than max of {limits['max']}",
                        name,
                    )
                )
        elif isinstance(kind, list) and value not in kind:
            reasons.append(
                _reason(
                    "value_not_in_list", "Value not in list", f"{name}: '{value}' not in {kind}"
                )
            )
        elif kind == "STRING" and not isinstance(value, str | int | float):
            reasons.append(
                _reason(
                    "invalid_input_type",
                    "Failed to convert an input value to a STRING value",
                    f"{name}, {value}",
                )
            )
    return reasons


def _check_link(prompt: dict, types: dict, name: str, value: list, kind: Any) -> list[dict]:
    if len(value) != 2 or str(value[0]) not in prompt:
        return [
            _reason(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                name,
            )
        ]
    source = types[prompt[str(value[0])]["class_type"]]["out"]
    received = source[value[1]] if isinstance(value[1], int) and value[1] < len(source) else None
    if received != kind:
        return [
            _reason(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}, {received} != {kind}",
            )
        ]
    return []


def _reason(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _order(prompt: dict[str, Any]) -> list[str]:
    """Node ids with every node after the nodes it reads from."""
    done: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list):
                visit(str(value[0]))
        done.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return done


def _now_ms() -> int:
    return int(time.time() * 1000)
