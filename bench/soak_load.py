"""The load soak: thousands of jobs from many users through one ``ImageService``, with faults.

Every provider kind is configured against the emulators (``bench.soak_emulators``, in their
own process): Deepmode, Deep-Image and Hive v2 both waiting synchronously and with the callback
receiver on, Hive v3, NebulaBlock (text to image and Fill inpainting), OpenAI, the placeholder,
and an alias that falls back across three of them. ``users`` users run a mix of operations
(generate, every edit mode, upscale, reroll, idempotent retries, quota, job and image reads,
grants); before ``fault_rate`` of the jobs a random fault that can happen to the chosen provider
is queued on its emulator (timeouts, resets, 429 with Retry-After, 5xx, malformed JSON, broken
base64, truncated or expired image links, moderation, lost or duplicated callbacks, jobs that
never finish).

Checks at the end, before any sweeper could tidy up: ``audit`` (no stuck hold, ledger sums,
one capture or refund per hold, charges equal deliveries, job records agree), every user's
balance equals their grants minus what their results said they were charged, and no error
that is not an ``ImageGateError`` reached a caller. Memory, file descriptors and tasks are
sampled during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.soak_support import audit, open_fds, serve_in_loop
from core import (
    Caller,
    ImageGateError,
    ImageRequest,
    ImageResult,
    ImageService,
    InputImage,
    parse_settings,
)

ROOT = Path(__file__).resolve().parents[1]
DM_MODEL = "668f1a2bdb4c27d16052c82b"
FLUX = "black-forest-labs/FLUX.1-schnell"
FILL = "black-forest-labs/FLUX.1-Fill-dev"
ENV = {
    "deepmode": "IMAGEGATE_SOAK_DEEPMODE_KEY",
    "deepimage": "IMAGEGATE_SOAK_DEEPIMAGE_KEY",
    "hive": "IMAGEGATE_SOAK_HIVE_KEY",
    "hive3": "IMAGEGATE_SOAK_HIVE3_KEY",
    "nebulablock": "IMAGEGATE_SOAK_NEBULA_KEY",
    "openai": "IMAGEGATE_SOAK_OPENAI_KEY",
}
# provider name -> (kind, emulator, key variable, models, callbacks)
PROVIDERS: dict[str, tuple[str, str, str, list[str], bool]] = {
    "deepmode": ("deepmode", "deepmode", "deepmode", [DM_MODEL], False),
    "deepmode_cb": ("deepmode", "deepmode", "deepmode", [DM_MODEL], True),
    "deepimage": ("deepimage", "deepimage", "deepimage", ["default"], False),
    "deepimage_cb": ("deepimage", "deepimage", "deepimage", ["default"], True),
    "hive": ("hive", "hive", "hive", ["hive-v2"], False),
    "hive_cb": ("hive", "hive", "hive", ["hive-v2"], True),
    "hive3": ("hive_v3", "hive", "hive3", ["black-forest-labs/flux-schnell"], False),
    "nebula": ("nebulablock", "nebulablock", "nebulablock", [FLUX, FILL], False),
    "openai": ("openai", "openai", "openai", ["dall-e-2"], False),
}
FALLBACK = "any"  # alias: openai, then NebulaBlock, then the placeholder


@dataclass
class LoadFigures:
    jobs: int = 0
    delivered: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # error code -> count
    untyped_errors: list[str] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    reads: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    replays_served: int = 0
    charged_reported: int = 0
    balance_mismatches: list[str] = field(default_factory=list)
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)  # t, rss, fds, tasks
    seconds: float = 0.0
    secrets: list[str] = field(default_factory=list, repr=False)


def _png(size: tuple[int, int], colour: Any, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _mask(size: tuple[int, int]) -> bytes:
    img = Image.new("L", size, 0)
    img.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@contextlib.asynccontextmanager
async def emulator_process() -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.soak_emulators",
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if not line.startswith("ready "):
            raise RuntimeError(f"emulator process did not start: {line!r}")
        yield json.loads(line[len("ready ") :])
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def _settings(tmp: Path, info: dict[str, Any], timing: Timing) -> Any:
    kinds = info["kinds"]
    providers: dict[str, Any] = {}
    for name, (kind, emulator, key, models, _) in PROVIDERS.items():
        providers[name] = {
            "kind": kind,
            "base_url": kinds[emulator]["url"],
            "api_key_env": ENV[key],
            "models": models,
            "timeout_s": timing.timeout_s,
            "poll_interval_s": 0.05,
            "max_concurrency": 16,
        }
    providers["placeholder"] = {"kind": "placeholder", "models": ["default"]}
    return parse_settings(
        {
            "database": {"path": str(tmp / "soak.db")},
            "images": {"dir": str(tmp / "images")},
            "providers": providers,
            "aliases": {FALLBACK: ["openai:dall-e-2", f"nebula:{FLUX}", "placeholder:default"]},
            "pricing": {"default": 1, "operations": {"upscale": 2}},
            "quota": {"allowance": 0, "sweep_interval_s": 3600},
            "defaults": {"job_deadline_s": timing.deadline_s, "max_retries": 2},
            "callbacks": {"public_url": "http://127.0.0.1:9"},  # replaced once it listens
        },
        source="soak",
    )


def _keys(info: dict[str, Any]) -> dict[str, str]:
    kinds = info["kinds"]
    return {
        ENV["deepmode"]: kinds["deepmode"]["key"],
        ENV["deepimage"]: kinds["deepimage"]["key"],
        ENV["hive"]: kinds["hive"]["key"],
        ENV["hive3"]: kinds["hive"]["v3_key"],
        ENV["nebulablock"]: kinds["nebulablock"]["key"],
        ENV["openai"]: kinds["openai"]["key"],
    }


# --- faults ---------------------------------------------------------------------------------

SUBMIT = {
    "deepmode": "/api/",
    "deepimage": "/rest_api/process",
    "hive": "/api/v2/task",
    "hive_v3": "/api/v3/",
    "nebulablock": "/images/generation",
    "openai": "/images/",
}


@dataclass(frozen=True)
class Timing:
    """Provider timeout, job deadline and the timeout fault's delay (shorter for --quick)."""

    timeout_s: float = 2.0
    deadline_s: float = 8.0
    delay_s: float = 3.0


QUICK = Timing(timeout_s=1.0, deadline_s=3.0, delay_s=1.5)


def _fault_for(
    rng: random.Random, provider: str, timing: Timing
) -> tuple[str, str, dict[str, Any]] | None:
    """(name, emulator, Fault fields) for a fault that can happen to this provider."""
    if provider not in PROVIDERS:
        return None  # the placeholder makes no HTTP calls
    kind, emulator, _, _, callbacks = PROVIDERS[provider]
    path = SUBMIT[kind]
    options: list[tuple[str, dict[str, Any]]] = [
        ("timeout", {"delay_s": timing.delay_s}),
        ("reset", {"drop_connection": True}),
        ("429", {"retry_after": 0.1}),
        ("5xx", {"status": rng.choice((500, 502, 503))}),
        ("moderation", {"moderation": True}),
        ("truncated", {"truncated_b64": True}),
    ]
    if not callbacks or kind == "deepimage":
        options.append(("malformed_json", {"malformed_json": True}))
    if kind not in ("nebulablock", "openai"):
        options.append(("expired_url", {"expired_url": True}))
    if callbacks:
        options += [
            ("callback_missing", {"missing_callback": True}),
            ("callback_duplicate", {"duplicate_callback": True}),
        ]
    if kind == "deepimage":
        options.append(("slow_job", {"slow_job": True}))
    name, fields = rng.choice(options)
    return name, emulator, {**fields, "path": path}


# --- the users --------------------------------------------------------------------------------


@dataclass
class User:
    caller: Caller
    grant: int
    rng: random.Random
    images: list[tuple[str, str]] = field(default_factory=list)  # (image id, provider), small
    jobs: list[str] = field(default_factory=list)
    sent: list[tuple[str, ImageRequest, str]] = field(default_factory=list)  # key, request, op
    charged: int = 0


GENERATORS = [
    ("deepmode", f"deepmode:{DM_MODEL}", {}),
    ("deepmode_cb", f"deepmode_cb:{DM_MODEL}", {}),
    ("deepimage", "deepimage:default", {"size": (64, 64)}),
    ("deepimage_cb", "deepimage_cb:default", {"size": (64, 64)}),
    ("hive", "hive:hive-v2", {}),
    ("hive_cb", "hive_cb:hive-v2", {}),
    ("hive3", "hive3:black-forest-labs/flux-schnell", {}),
    ("nebula", f"nebula:{FLUX}", {}),
    ("openai", "openai:dall-e-2", {}),
    ("placeholder", "placeholder:default", {"size": (64, 64)}),
    ("openai", FALLBACK, {}),
]
EDITORS = {
    "variation": ["deepimage", "deepimage_cb", "placeholder"],
    "sketch": ["deepimage", "placeholder"],
    "background": ["deepimage_cb", "placeholder"],
    "avatar": ["deepimage", "deepmode", "placeholder"],
    "inpaint": ["deepimage", "deepmode", "nebula", "openai", "placeholder"],
}
MODEL_OF = {
    "deepmode": f"deepmode:{DM_MODEL}",
    "deepimage": "deepimage:default",
    "deepimage_cb": "deepimage_cb:default",
    "placeholder": "placeholder:default",
    "openai": "openai:dall-e-2",
}


class Load:
    def __init__(
        self, service: ImageService, control: str, figures: LoadFigures, timing: Timing
    ) -> None:
        self.service = service
        self.timing = timing
        self.control = httpx.AsyncClient(base_url=control, timeout=10)
        self.figures = figures
        self.inputs: dict[str, InputImage] = {}

    async def prepare(self) -> None:
        for name, data in {
            "square": _png((64, 64), (30, 120, 200)),
            "mask": _mask((64, 64)),
        }.items():
            self.inputs[name] = await self.service.load_input(data, what=name)

    async def inject(self, rng: random.Random, provider: str, fault_rate: float) -> None:
        if rng.random() >= fault_rate:
            return
        fault = _fault_for(rng, provider, self.timing)
        if fault is None:
            return
        name, emulator, fields = fault
        times = 3 if rng.random() < 0.2 else 1
        await self.control.post("/inject", json={"kind": emulator, "fault": fields, "times": times})
        self.figures.faults_injected[name] += 1

    async def job(self, user: User, fault_rate: float) -> None:
        rng = user.rng
        roll = rng.random()
        key = f"soak:{uuid.uuid4().hex}"
        try:
            if roll < 0.05 and user.sent:
                await self._replay(user)
                return
            if roll < 0.12 and user.jobs:
                op = "reroll"
                job_id = rng.choice(user.jobs)
                record = await self.service.job(user.caller, job_id)
                provider = record.model.partition(":")[0]
                await self.inject(rng, provider, fault_rate)
                result = await self.service.rerun(user.caller, job_id, idempotency_key=key)
            elif roll < 0.20:
                op, provider, request = await self._upscale(user)
                await self.inject(rng, provider, fault_rate)
                result = await self.service.upscale(user.caller, request, idempotency_key=key)
            elif roll < 0.40:
                op, provider, request = await self._edit(user)
                await self.inject(rng, provider, fault_rate)
                result = await self.service.edit(user.caller, request, idempotency_key=key)
            else:
                op = "generate"
                provider, model, extra = rng.choice(GENERATORS)
                request = ImageRequest(
                    prompt=f"soak {rng.randrange(10**6)}", n=rng.choice((1, 1, 1, 2, 3)),
                    model=model, **extra,
                )  # fmt: skip
                await self.inject(rng, provider, fault_rate)
                result = await self.service.generate(user.caller, request, idempotency_key=key)
            if op != "reroll":
                user.sent = [*user.sent[-9:], (key, request, op)]
            self._delivered(user, op, result)
        except ImageGateError as exc:
            self.figures.jobs += 1
            self.figures.refused[exc.code] += 1
        except Exception as exc:  # a crash: no caller may ever see one
            self.figures.jobs += 1
            self.figures.untyped_errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def _delivered(self, user: User, op: str, result: ImageResult) -> None:
        self.figures.jobs += 1
        self.figures.delivered += 1
        self.figures.operations[op] += 1
        user.charged += result.credits_charged
        self.figures.charged_reported += result.credits_charged
        user.jobs = [*user.jobs[-9:], result.job_id]
        for image in result.images:
            if image.width * image.height <= 256 * 256:  # sources stay small: no upscale chains
                user.images = [*user.images[-9:], (image.id, image.model.partition(":")[0])]

    async def _replay(self, user: User) -> None:
        key, request, op = user.rng.choice(user.sent)
        method = {"generate": self.service.generate, "upscale": self.service.upscale}.get(
            op, self.service.edit
        )
        self.figures.replays += 1
        try:
            result = await method(user.caller, request, idempotency_key=key)
        except ImageGateError as exc:  # "already ran and failed" / "still running"
            self.figures.jobs += 1
            self.figures.refused[f"replay {exc.code}"] += 1
            return
        self.figures.jobs += 1
        self.figures.replays_served += result.replayed
        if not result.replayed:
            raise AssertionError("an idempotent retry ran a second job")

    async def _source(self, user: User, provider: str | None = None) -> InputImage:
        mine = [i for i, p in user.images if provider is None or p == provider]
        if mine and user.rng.random() < 0.7:
            with contextlib.suppress(ImageGateError):
                return await self.service.input_from_image(user.caller, user.rng.choice(mine))
        return self.inputs["square"]

    async def _edit(self, user: User) -> tuple[str, str, ImageRequest]:
        mode = user.rng.choice(list(EDITORS))
        provider = user.rng.choice(EDITORS[mode])
        model = MODEL_OF.get(provider, f"nebula:{FILL}")
        square = provider in ("openai", "nebula")  # dall-e-2 and Fill want the upload
        image = self.inputs["square"] if square else await self._source(user)
        fields: dict[str, Any] = {"operation": mode, "prompt": "soak edit", "model": model}
        if mode == "inpaint":
            image = self.inputs["square"]
            fields["mask"] = self.inputs["mask"]
        return mode, provider, ImageRequest(image=image, **fields)

    async def _upscale(self, user: User) -> tuple[str, str, ImageRequest]:
        provider = user.rng.choice(["deepmode", "deepimage", "placeholder"])
        if provider == "deepmode":
            image = await self._source(user, "deepmode")
            if image.provider != "deepmode":
                provider = "placeholder"
        else:
            image = await self._source(user)
        model = MODEL_OF[provider]
        return "upscale", provider, ImageRequest(operation="upscale", image=image, model=model)

    async def reads(self, user: User) -> None:
        self.figures.reads += 1
        await self.service.quota(user.caller)
        if user.jobs:
            await self.service.job(user.caller, user.rng.choice(user.jobs))
        if user.images:
            with contextlib.suppress(ImageGateError):
                await self.service.image(user.caller, user.rng.choice(user.images)[0])
        if user.rng.random() < 0.1:
            await self.service.history(user.caller, user.caller, limit=20)


async def _sampler(figures: LoadFigures, started: float) -> None:
    while True:
        figures.samples.append(
            (time.monotonic() - started, rss_mb(), open_fds(), len(asyncio.all_tasks()))
        )
        await asyncio.sleep(0.5)


async def run_load(
    tmp: Path, *, jobs: int, users: int, fault_rate: float, seed: int = 8, quick: bool = False
) -> dict[str, Any]:
    """Run the load and return its figures (see ``bench.soak`` for their meaning)."""
    figures = LoadFigures()
    rng = random.Random(seed)
    async with emulator_process() as info:
        keys = _keys(info)
        figures.secrets = list(keys.values())
        saved = {name: os.environ.get(name) for name in keys}
        os.environ.update(keys)
        try:
            timing = QUICK if quick else Timing()
            return await _run(tmp, info, figures, rng, jobs, users, fault_rate, timing)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


async def _run(
    tmp: Path,
    info: dict[str, Any],
    figures: LoadFigures,
    rng: random.Random,
    jobs: int,
    users: int,
    fault_rate: float,
    timing: Timing,
) -> dict[str, Any]:
    settings = _settings(tmp, info, timing)
    service = await ImageService.open(settings, sweeper=False, receive_callbacks=True)
    load = Load(service, info["control"], figures, timing)
    try:
        hub = service.callbacks
        assert hub is not None
        async with serve_in_loop(hub.app) as url:
            hub.public_url = url
            for name, (*_, callbacks) in PROVIDERS.items():
                if not callbacks:
                    service.registry.contexts[name].callbacks = None
            for ctx in service.registry.contexts.values():
                if ctx.name == "placeholder":
                    ctx.callbacks = None
            service.orchestrator.base_delay_s = 0.05
            await load.prepare()
            admin = Caller(frontend="cli", user_id="soak-admin", is_admin=True)
            people = []
            for index in range(users):
                caller = Caller(frontend="mcp", user_id=f"user{index}")
                grant = 40 if index % 10 == 9 else 10**6  # some users run out of credits
                await service.grant(admin, caller, grant, reason="soak")
                people.append(User(caller, grant, random.Random(rng.randrange(2**32))))
            result = await _drive(service, load, people, jobs, fault_rate, figures)
            await asyncio.sleep(1.0)  # duplicate and late callbacks arrive and are ignored
            report = await audit(service)
            for user in people:
                status = await service.quota(user.caller)
                if status.remaining + status.held != user.grant - user.charged:
                    figures.balance_mismatches.append(
                        f"{user.caller.key}: {status.remaining} + {status.held} held, expected"
                        f" {user.grant} - {user.charged}"
                    )
            result["audit"] = report
            result["ignored_callbacks"] = hub.ignored
            stats = (await load.control.get("/stats")).json()
            result["faults_seen"] = sum(figures.faults_injected.values()) - sum(
                s["faults_queued"] for s in stats.values()
            )
            result["provider_requests"] = sum(s["requests"] for s in stats.values())
            result["figures"] = figures
            return result
    finally:
        await load.control.aclose()
        await service.aclose()


async def _drive(
    service: ImageService,
    load: Load,
    people: list[User],
    jobs: int,
    fault_rate: float,
    figures: LoadFigures,
) -> dict[str, Any]:
    started = time.monotonic()
    tasks_before = len(asyncio.all_tasks())
    sampler = asyncio.create_task(_sampler(figures, started))
    done = 0
    warm: dict[str, float] = {}
    warm_after = max(len(people), jobs // 20)
    admin = Caller(frontend="cli", user_id="soak-admin", is_admin=True)

    async def run_user(user: User, share: int) -> None:
        nonlocal done
        for number in range(share):
            await load.job(user, fault_rate)
            done += 1
            if not warm and done >= warm_after:
                warm.update(rss=rss_mb(), fds=open_fds(), tasks=tasks_before)
            if user.rng.random() < 0.3:
                await load.reads(user)
            if user.grant < 1000 and number % 20 == 19:  # the small accounts get topped up
                await service.grant(admin, user.caller, 20, reason="soak top-up")
                user.grant += 20

    try:
        shares = [jobs // len(people) + (i < jobs % len(people)) for i in range(len(people))]
        await asyncio.gather(*(run_user(u, n) for u, n in zip(people, shares, strict=True)))
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    figures.seconds = time.monotonic() - started
    await asyncio.sleep(0.2)  # the users' finished requests close
    end = {"rss": rss_mb(), "fds": open_fds(), "tasks": len(asyncio.all_tasks())}
    return {"warm": warm, "end": end}
