"""ComfyUI (kind ``comfyui``): the operator's own workflows, one per operation.

Source: comfyanonymous/ComfyUI ``server.py`` and ``execution.py`` (see docs/providers.md).
``[providers.<name>] workflows`` maps each operation the operator enables to a workflow file
in ComfyUI's API format ("Export (API)"). In it, a string input that is exactly a placeholder
is replaced by a value of the right type: ``{{prompt}}``, ``{{negative_prompt}}``,
``{{seed}}``, ``{{width}}``, ``{{height}}``, ``{{steps}}``, ``{{guidance}}``,
``{{strength}}``, ``{{scale}}``, ``{{model}}`` (the configured model name), ``{{image}}`` and
``{{mask}}`` (the names of the uploaded input image and mask, for ``LoadImage`` or
``LoadImageMask``). ``{{prompt}}`` and ``{{negative_prompt}}`` may also sit inside a longer
text. A request setting that its workflow has no placeholder for is reported as ignored; a
placeholder whose setting the request leaves out gets ``DEFAULTS`` (steps 20, guidance 7,
strength 0.75, scale 2), a random seed or the 512x512 default size.

A run: ``POST /upload/image`` for the inputs, ``POST /prompt``, then ``GET /history/{id}``
until it is there (``GET /queue`` gives the queue position meanwhile), then ``GET /view``
for each output image. Cancelled or timed out: ``POST /queue {"delete"}`` if it still waits,
``POST /interrupt {"prompt_id"}`` if it runs (never a global interrupt: the GPU may be
working for someone else). ComfyUI has no authentication; behind a reverse proxy with basic
auth, ``api_key_env`` names a variable holding ``user:password``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from pydantic import BaseModel, ValidationError

from ..errors import (
    ConfigError,
    ImageGateError,
    InvalidRequestError,
    ProviderError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from ..images import normalize_mask
from ..progress import ProviderProgress, report
from ..types import OPERATIONS, GeneratedImage, ImageRequest
from .base import (
    Capabilities,
    Plan,
    ProviderContext,
    ProviderOptions,
    RemoteJob,
    check_output_size,
    keep_input_size,
    no_image,
    parse_json,
    pause,
    redact,
    upscaled_size,
)
from .selfhosted import DEFAULT_SIZE, SelfHostedImageModel, sd_size

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
TYPED = {"seed": int, "width": int, "height": int, "steps": int, "scale": int,
         "guidance": float, "strength": float}  # fmt: skip
TEXT = ("prompt", "negative_prompt", "model", "image", "mask")
FIELDS = {"seed": "seed", "steps": "steps", "guidance": "guidance", "strength": "strength",
          "scale": "scale", "negative_prompt": "negative_prompt"}  # fmt: skip
ASSUMED_UPSCALE = 4  # an upscale workflow without {{scale}} (see _check_output)
# What a typed placeholder gets when the request leaves its setting out.
DEFAULTS = {"steps": 20, "guidance": 7.0, "strength": 0.75, "scale": 2}


class _Output(BaseModel):
    images: list[dict[str, Any]] = []


class _Status(BaseModel):
    status_str: str = ""
    completed: bool = False
    messages: list[list[Any]] = []


class _Entry(BaseModel):
    outputs: dict[str, _Output] = {}
    status: _Status | None = None


class _Uploaded(BaseModel):
    name: str


class _Queued(BaseModel):
    prompt_id: str


class Workflow:
    """One workflow file and the placeholders found in it."""

    def __init__(self, graph: dict[str, Any], where: str) -> None:
        self.graph = graph
        self.names: set[str] = set()
        for node in graph.values():
            for value in node.get("inputs", {}).values():
                if isinstance(value, str):
                    self.names.update(PLACEHOLDER.findall(value))
        unknown = self.names - set(TYPED) - set(TEXT)
        if unknown:
            known = ", ".join(f"{{{{{n}}}}}" for n in [*TEXT, *TYPED])
            raise ConfigError(
                f"{where}: unknown placeholder {{{{{sorted(unknown)[0]}}}}}; known: {known}"
            )

    @classmethod
    def load(cls, path: Path, where: str) -> Workflow:
        """Read an API-format workflow file.

        Raises:
            ConfigError: unreadable, not JSON, the UI format, or an unknown placeholder.
        """
        try:
            graph = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path} ({type(exc).__name__})") from None
        except ValueError:
            raise ConfigError(f"{where}: {path} is not JSON") from None
        if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
            raise ConfigError(
                f"{where}: {path} is in ComfyUI's UI format; save it with 'Export (API)'"
            )
        if not isinstance(graph, dict) or not all(
            isinstance(node, dict) and "class_type" in node for node in graph.values()
        ):
            raise ConfigError(f"{where}: {path} is not an API-format workflow")
        return cls(graph, where)

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of the graph with the placeholders replaced (uploads stay placeholders)."""
        graph = copy.deepcopy(self.graph)
        for node in graph.values():
            inputs = node.get("inputs", {})
            for key, value in inputs.items():
                if isinstance(value, str) and PLACEHOLDER.search(value):
                    inputs[key] = _substitute(value, values)
        return graph


def _substitute(text: str, values: dict[str, Any]) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole and whole.group(1) in values:
        return values[whole.group(1)]
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


class ComfyUIImageModel(SelfHostedImageModel):
    kind = "comfyui"
    default_base_url = "http://127.0.0.1:8188"

    class Options(ProviderOptions):
        """Settings reach ComfyUI through the workflows' placeholders, not through options."""

    def __init__(self, ctx: ProviderContext, model: str) -> None:
        super().__init__(ctx, model)
        self.workflows = _load_workflows(ctx)

    @property
    def capabilities(self) -> Capabilities:
        ops = ", ".join(op for op in OPERATIONS if op in self.workflows)
        return Capabilities(
            operations=frozenset(self.workflows),  # type: ignore[arg-type]
            max_images_per_call=1,
            description=f"ComfyUI workflows ({self.model}): {ops}",
        )

    def plan(self, request: ImageRequest) -> Plan:
        self.accept(request, self.Options)
        op = request.operation
        workflow = self.workflows[op]
        values: dict[str, Any] = {
            **DEFAULTS,
            "prompt": request.prompt,
            "negative_prompt": "",
            "model": self.model,
        }
        warnings = [f"prompt is ignored by this ComfyUI {op} workflow"] if (
            request.prompt and "prompt" not in workflow.names
        ) else []  # fmt: skip
        for field, name in FIELDS.items():
            value = getattr(request, field)
            if value is None or field == "seed":
                continue
            if name in workflow.names:
                values[name] = value
            else:
                warnings.append(f"{field} is ignored by this ComfyUI {op} workflow")
        if request.seed is not None and "seed" not in workflow.names:
            warnings.append(f"seed is ignored by this ComfyUI {op} workflow")
        values["width"], values["height"] = self._size(request, workflow)
        self._check_output(request, workflow, values)
        uploads: dict[str, bytes] = {}
        if request.image is not None:
            uploads["image"] = request.image.data
        if request.mask is not None and request.image is not None:
            uploads["mask"] = _mask_upload(normalize_mask(request.mask, request.image))
        body = {
            "workflow": workflow.fill(values),
            "uploads": uploads,
            "seeded": "seed" in workflow.names,
        }
        return Plan(op, request.n, request, body, tuple(warnings))

    def _check_output(self, request: ImageRequest, workflow: Workflow, values: dict) -> None:
        """Refuse a result over the pixel limit. An upscale workflow enlarges by ``{{scale}}``,
        or, without one, by a factor only its nodes know: taken as 4, the usual model
        upscalers' (4x-UltraSharp, RealESRGAN x4)."""
        if request.operation != "upscale":
            size = (values["width"], values["height"])
            check_output_size(self, size, f"this ComfyUI {request.operation} workflow")
            return
        assert request.image is not None
        scale = int(values["scale"]) if "scale" in workflow.names else ASSUMED_UPSCALE
        upscaled_size(self, request.image, scale)

    def _size(self, request: ImageRequest, workflow: Workflow) -> tuple[int, int]:
        sized = {"width", "height"} <= workflow.names
        if request.image is not None:
            keep_input_size(request, f"this ComfyUI {request.operation} workflow")
            return request.image.width, request.image.height
        if not sized:
            if request.size or request.aspect_ratio:
                raise InvalidRequestError(
                    "this ComfyUI workflow has a fixed size (no {{width}}/{{height}});"
                    " leave out the size and aspect ratio"
                )
            return DEFAULT_SIZE
        return sd_size(request, "ComfyUI")

    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        seed = plan.seed_for(0)
        if seed is None:
            seed = random.randrange(2**32)  # API-format workflows carry a fixed seed
        values: dict[str, Any] = {"seed": seed}
        for name, data in plan.body["uploads"].items():
            values[name] = await self._upload(data, deadline)
        graph = Workflow(plan.body["workflow"], self.ref).fill(values)
        # Our own prompt id, so a job cancelled while /prompt is in flight is still found.
        async with self.remote_job(str(uuid.uuid4())) as job:
            job.ticket = prompt_id = await self._queue(graph, job, deadline)
            entry = await self._wait(prompt_id, deadline)
        images = [await self._view(ref, deadline) for ref in _output_images(entry)][:count]
        if not images:
            raise no_image(self.ctx)
        kept_seed = seed if plan.body["seeded"] else None
        return [
            GeneratedImage(data=data, seed=kept_seed, provider_image_id=prompt_id)
            for data in images
        ]

    async def _upload(self, data: bytes, deadline: float) -> str:
        name = f"imagegate-{hashlib.sha256(data).hexdigest()[:24]}.png"
        response = await self.api(
            "POST", "/upload/image", deadline,
            files={"image": (name, data, "image/png")}, data={"type": "input", "overwrite": "true"},
        )  # fmt: skip
        return parse_json(self.ctx, response, _Uploaded).name

    async def _queue(self, graph: dict[str, Any], job: RemoteJob, deadline: float) -> str:
        """Queue the prompt; the id ComfyUI runs it under (older versions choose their own)."""
        body = {"prompt": graph, "prompt_id": job.ticket}
        try:
            response = await self.api("POST", "/prompt", deadline, json=body)
        except ProviderError as exc:
            if exc.status is not None:  # ComfyUI answered with an error: nothing was queued
                job.ticket = None
            raise
        return parse_json(self.ctx, response, _Queued).prompt_id

    async def _wait(self, prompt_id: str, deadline: float) -> _Entry:
        """Poll the history until the prompt is there, reporting the queue meanwhile."""
        while True:
            response = await self.api("GET", f"/history/{prompt_id}", deadline)
            try:
                history = json.loads(response.content)
                entry = _Entry.model_validate(history[prompt_id]) if prompt_id in history else None
            except (ValueError, ValidationError, TypeError):
                raise ProviderResponseError(
                    f"{self.ctx.name} sent a history we could not read", provider=self.ctx.name
                ) from None
            if entry is not None:
                return self._checked(entry)
            await self._report_queue(prompt_id, deadline)
            await pause(self.ctx, deadline)

    async def _report_queue(self, prompt_id: str, deadline: float) -> None:
        try:
            queue = (await self.api("GET", "/queue", deadline)).json()
            running = [row[1] for row in queue.get("queue_running", [])]
            pending = sorted(queue.get("queue_pending", []), key=lambda row: row[0])
        except (ImageGateError, ValueError, AttributeError, IndexError, TypeError, KeyError):
            return  # progress is advisory
        ids = [row[1] for row in pending]
        position = len(running) + ids.index(prompt_id) + 1 if prompt_id in ids else 0
        await report(ProviderProgress(provider=self.ctx.name, queue_position=position))

    def _checked(self, entry: _Entry) -> _Entry:
        status = entry.status
        if status is None or status.status_str == "success":
            return entry
        event, data = "", {}
        for message in status.messages:
            if len(message) == 2 and message[0] in ("execution_error", "execution_interrupted"):
                event, data = message[0], message[1] if isinstance(message[1], dict) else {}
        if event == "execution_interrupted":
            why = "it was interrupted on the server"
        else:
            why = redact(str(data.get("exception_message", "an error")), self.ctx.api_key, 200)
        raise ProviderUnavailableError(
            f"{self.ctx.name} could not run the workflow ({why.strip()})", provider=self.ctx.name
        )

    async def _view(self, ref: dict[str, Any], deadline: float) -> bytes:
        params = {k: str(ref.get(k, "")) for k in ("filename", "subfolder", "type")}
        return (await self.api("GET", "/view", deadline, params=params)).content

    async def cancel(self, ticket: str, deadline: float) -> None:
        """Drop the prompt from the queue, or interrupt it if it is the one running."""
        await self.api("POST", "/queue", deadline, json={"delete": [ticket]})
        await self.api("POST", "/interrupt", deadline, json={"prompt_id": ticket})

    def classify(self, response: httpx.Response) -> ImageGateError | None:
        """``/prompt``'s validation errors: the workflow does not fit this ComfyUI."""
        if response.status_code != 400:
            return None
        try:
            body = response.json()
            error = body["error"]
            details = [r for node in body.get("node_errors", {}).values() for r in node["errors"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        first = details[0] if details else error
        text = f"{first.get('message', '')}: {first.get('details', '')}".strip(": ")
        return ProviderRejectedError(
            f"{self.ctx.name} rejected the workflow ({redact(text, self.ctx.api_key, 200)});"
            " tell the operator",
            provider=self.ctx.name,
            status=400,
        )


def _load_workflows(ctx: ProviderContext) -> dict[str, Workflow]:
    """The configured workflows, checked against what each operation needs.

    Raises:
        ConfigError: none configured, an unknown operation, a missing file or placeholder.
    """
    where = f"[providers.{ctx.name}] workflows"
    if not ctx.settings.workflows:
        raise ConfigError(f"{where}: a comfyui provider needs at least one workflow file")
    workflows: dict[str, Workflow] = {}
    for op, path in ctx.settings.workflows.items():
        if op not in OPERATIONS:
            raise ConfigError(
                f"{where}: unknown operation {op!r}; use one of {', '.join(OPERATIONS)}"
            )
        workflow = Workflow.load(path, f"{where}.{op}")
        needed = {"prompt"} if op == "generate" else {"image"}
        needed |= {"mask"} if op == "inpaint" else set()
        missing = needed - workflow.names
        if missing:
            raise ConfigError(
                f"{where}.{op}: {path} needs a {{{{{sorted(missing)[0]}}}}} placeholder"
            )
        workflows[op] = workflow
    return workflows


def _output_images(entry: _Entry) -> list[dict[str, Any]]:
    """The saved images (not previews) of every output node, in node order."""
    return [
        ref
        for _, output in sorted(entry.outputs.items(), key=lambda kv: _node_order(kv[0]))
        for ref in output.images
        if ref.get("type", "output") == "output"
    ]


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _mask_upload(gray_png: bytes) -> bytes:
    """The mask as an RGBA PNG that every usual mask input reads as white = repaint:
    ``LoadImageMask`` red/green/blue (the grey value) or alpha, and ``LoadImage``'s MASK
    output (both take 1 - alpha)."""
    with Image.open(io.BytesIO(gray_png)) as img:
        gray = img.convert("L")
    rgba = Image.merge("RGBA", (gray, gray, gray, gray.point(lambda v: 255 - v)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    return buf.getvalue()
