"""The fault matrix: every provider variant x every fault, through ``ImageService``.

A *variant* is an adapter kind in one mode (``deepmode+cb`` = Deepmode with the callback
receiver on). A *cell* is (variant, fault, persistence): a transient fault hits one provider
call, a persistent one every call. ``run_cell`` runs one cell against the emulators of
``EmulatorRig`` (real HTTP, one uvicorn thread per emulator) and returns what happened; ``check``
compares it with ``expect``: the error class (or a delivered, charged image), the number of
provider calls (retries), the waits between them (Retry-After honoured), exactly one capture
or one refund in the ledger, and every ``audit`` count at zero. Late and duplicate callbacks
are waited for, and the ledger is checked again after they arrive.

Used by ``tests/reliability/test_fault_matrix.py`` (one test per cell) and ``python -m
bench.soak`` (figures ``matrix_cells``, ``matrix_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.soak_support import Relay, audit, serve_in_loop
from core import Caller, ImageRequest, ImageService, parse_settings
from core.errors import (
    ContentRejectedError,
    ImageGateError,
    InvalidRequestError,
    ProviderRateLimitedError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from core.http import make_http_client
from tests.emulators import Emulator, Fault, create_emulator, running

DEEPMODE_MODEL = "668f1a2bdb4c27d16052c82b"
TIMEOUT_S = 0.3  # provider timeout of the timeout cells; the fault answers after DELAY_S
DELAY_S = 0.8
CALM_TIMEOUT_S = 5.0  # every other cell: a slow machine must not look like a fault
RETRY_AFTER_S = 0.05
BASE_DELAY_S = 0.01  # the orchestrator's first backoff (production: 2 s)
SHORT_DEADLINE_S = 0.5  # job deadline of the callback cells that must time out
LATE_CALLBACK_S = 0.9  # a callback this late arrives after the job was refunded
# oversized_pixels: the limit is the size every variant plans for when it sends none (1024x1024),
# and the emulators answer larger (Deepmode portrait, 3:4 of it, too).
OVERSIZED_LIMIT = 1024 * 1024
OVERSIZED_SIZE = (1200, 1200)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str
    emulator: str
    model: str
    submit: str  # path of the call that asks for images (one per attempt)
    callbacks: bool = False
    key_attr: str = "api_key"
    urls: bool = True  # images come as URLs (else base64 in the reply)
    request: tuple[tuple[str, Any], ...] = ()


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("deepmode", "deepmode", "deepmode", DEEPMODE_MODEL, "/api/images/generate"),
        Variant(
            "deepimage", "deepimage", "deepimage", "default", "/rest_api/process_result",
            request=(("size", (64, 64)),),
        ),
        Variant("hive", "hive", "hive", "hive-v2", "/api/v2/task/sync"),
        Variant(
            "hive_v3", "hive_v3", "hive", "black-forest-labs/flux-schnell",
            "/api/v3/black-forest-labs/flux-schnell", key_attr="v3_api_key",
        ),
        Variant(
            "nebulablock", "nebulablock", "nebulablock", "black-forest-labs/FLUX.1-schnell",
            "/api/v1/images/generation", urls=False,
        ),
        Variant("openai", "openai", "openai", "dall-e-2", "/v1/images/generations", urls=False),
        Variant(
            "deepmode+cb", "deepmode", "deepmode", DEEPMODE_MODEL, "/api/images/generate",
            callbacks=True,
        ),
        Variant(
            "deepimage+cb", "deepimage", "deepimage", "default", "/rest_api/process",
            callbacks=True, request=(("size", (64, 64)),),
        ),
        Variant("hive+cb", "hive", "hive", "hive-v2", "/api/v2/task/async", callbacks=True),
    )
}  # fmt: skip

RETRYABLE = ("timeout", "reset", "429", "5xx")
FAULTS = (
    *RETRYABLE,
    "malformed_json",
    "truncated_b64",
    "expired_url",
    "oversized_bytes",
    "oversized_pixels",
    "moderation",
    "callback_missing",
    "callback_duplicate",
    "callback_after_refund",
)
_RETRY_ERRORS: dict[str, type[ImageGateError]] = {
    "timeout": ProviderTimeoutError,
    "reset": ProviderUnavailableError,
    "429": ProviderRateLimitedError,
    "5xx": ProviderUnavailableError,
}


@dataclass(frozen=True)
class Cell:
    variant: str
    fault: str
    persistent: bool = False

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.fault}" + ("-persistent" if self.persistent else "")


@dataclass(frozen=True)
class Expect:
    charged: bool
    error: type[ImageGateError] | None = None
    code: str | None = None  # when several classes are right (both timeouts: code "timeout")
    attempts: int = 1
    waits: str = "none"  # "retry_after" | "backoff" | "none"
    reserved: bool = True  # False: refused by plan(), before any hold
    late_callbacks: bool = False  # callbacks arrive after the job ended and must be ignored


def applies(variant: Variant, fault: str) -> bool:
    """Whether the fault can happen to this variant at all."""
    if fault.startswith("callback_"):
        return variant.callbacks
    if fault in ("expired_url", "oversized_bytes"):
        return variant.urls
    if fault == "malformed_json":
        # Deepmode and Hive v2 acknowledge an async job with a body they never read; the
        # result comes only by callback, so a garbled acknowledgement is not a reply fault.
        return not variant.callbacks or variant.kind == "deepimage"
    return True


def cells() -> list[Cell]:
    out = []
    for name, variant in VARIANTS.items():
        for fault in FAULTS:
            if not applies(variant, fault):
                continue
            out.append(Cell(name, fault))
            if fault in RETRYABLE:
                out.append(Cell(name, fault, persistent=True))
    return out


def expect(cell: Cell) -> Expect:
    """What must happen in ``cell`` (the design's rules, per provider where they differ)."""
    variant = VARIANTS[cell.variant]
    fault = cell.fault
    if fault in RETRYABLE:
        waits = "retry_after" if fault == "429" else "backoff"
        if cell.persistent:
            return Expect(False, _RETRY_ERRORS[fault], attempts=3, waits=waits)
        return Expect(True, attempts=2, waits=waits)
    if fault == "moderation":
        return Expect(False, ContentRejectedError)
    if fault == "expired_url" and variant.kind == "deepmode":
        return Expect(True)  # Deepmode issues a fresh link through GET /api/images/{id}
    if fault in ("malformed_json", "truncated_b64", "expired_url"):
        return Expect(False, ProviderResponseError)
    if fault == "oversized_pixels" and dict(variant.request).get("size"):
        # Asking for a size over the limit: plan() refuses it, nothing is held or sent.
        return Expect(False, InvalidRequestError, attempts=0, reserved=False)
    if fault in ("oversized_bytes", "oversized_pixels"):
        return Expect(False, ProviderResponseError)
    if fault == "callback_missing":
        if variant.kind == "deepimage":
            return Expect(True)  # the webhook is late: the adapter polls result/{job}
        return Expect(False, code="timeout")
    if fault == "callback_duplicate":
        return Expect(True, late_callbacks=True)
    if fault == "callback_after_refund":
        return Expect(False, code="timeout", late_callbacks=True)
    raise ValueError(f"no expectation for {cell.id}")


@dataclass
class CellResult:
    cell: Cell
    error: BaseException | None = None
    attempts: int = 0
    waits: list[float] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)  # ledger kinds of the job's hold
    entries_later: list[str] = field(default_factory=list)  # after late callbacks arrived
    remaining_before: int = 0
    remaining_after: int = 0
    remaining_later: int = 0
    ignored_callbacks: int = 0
    callbacks_sent: int = 0
    audit_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class EmulatorRig:
    """One running emulator per emulator kind, shared by every cell (``with EmulatorRig():``)."""

    def __init__(self) -> None:
        self.emulators: dict[str, Emulator] = {}
        self.urls: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> EmulatorRig:
        options: dict[str, dict[str, Any]] = {
            "deepimage": {"job_duration_s": 0.02, "max_concurrent_jobs": 1000, "credits": 10**9},
            "deepmode": {"credits": 10**9},
            "nebulablock": {"credits": 1e9},
        }
        for kind in ("deepmode", "deepimage", "hive", "nebulablock", "openai"):
            key = f"sk-matrix-{kind}-{secrets.token_hex(8)}"
            extra = (
                {"v3_api_key": f"sk-matrix-hive3-{secrets.token_hex(8)}"} if kind == "hive" else {}
            )
            emu = create_emulator(
                kind, api_key=key, image_size=(64, 64), **options.get(kind, {}), **extra
            )
            self.emulators[kind] = emu
            self.urls[kind] = self._stack.enter_context(running(emu)) + emu.base_path
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def secrets(self) -> list[str]:
        """Every API key the rig's emulators accept (for the secrets guard)."""
        keys = [emu.api_key for emu in self.emulators.values()]
        return [*keys, self.emulators["hive"].v3_api_key]  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def tuned(self, emu: Emulator, **attrs: Any) -> Iterator[None]:
        """Change emulator attributes for one cell."""
        saved = {name: getattr(emu, name) for name in attrs}
        for name, value in attrs.items():
            setattr(emu, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(emu, name, value)


def _fault(cell: Cell, variant: Variant) -> Fault | None:
    path = variant.submit
    return {
        "timeout": Fault(delay_s=DELAY_S, path=path),
        "reset": Fault(drop_connection=True, path=path),
        "429": Fault(retry_after=RETRY_AFTER_S, path=path),
        "5xx": Fault(status=503, path=path),
        "malformed_json": Fault(malformed_json=True, path=path),
        "truncated_b64": Fault(truncated_b64=True, path=path),
        "expired_url": Fault(expired_url=True, path=path),
        "moderation": Fault(moderation=True, path=path),
        "callback_missing": Fault(missing_callback=True, path=path),
        "callback_duplicate": Fault(duplicate_callback=True, path=path),
    }.get(cell.fault)


async def run_cell(
    rig: EmulatorRig,
    cell: Cell,
    tmp: Path,
    http: httpx.AsyncClient | None = None,
    relay: tuple[Relay, str] | None = None,
) -> CellResult:
    """Run one job under ``cell``'s fault, on a fresh database under ``tmp``.

    The keys must be in the environment (``prepare_env``). ``http``: a client to share
    between cells (from ``core.http.make_http_client``); by default the service makes its own.
    ``relay``: a ``Relay`` served at a URL on this loop, for the callback receiver (by
    default each callback cell starts a server of its own).
    """
    variant = VARIANTS[cell.variant]
    emu = rig.emulators[variant.emulator]
    emu.clear()
    result = CellResult(cell)
    settings: dict[str, Any] = {
        "database": {"path": str(tmp / "matrix.db"), "synchronous": "NORMAL"},
        "images": {"dir": str(tmp / "images")},
        "providers": {
            "p": {
                "kind": variant.kind,
                "base_url": rig.urls[variant.emulator],
                "api_key_env": env_name(variant),
                "models": [variant.model],
                "timeout_s": TIMEOUT_S if cell.fault == "timeout" else CALM_TIMEOUT_S,
                "poll_interval_s": 0.02,
            }
        },
        "pricing": {"default": 1},
        "quota": {"allowance": 100},
        "defaults": {"job_deadline_s": 10},
    }
    tune: dict[str, Any] = {}
    request: dict[str, Any] = dict(variant.request)
    if cell.fault == "oversized_bytes":
        settings["images"]["max_download_bytes"] = 1024
        tune["image_size"] = (256, 256)
        if "size" in request:
            request["size"] = (256, 256)
    elif cell.fault == "oversized_pixels":
        settings["images"]["max_pixels"] = OVERSIZED_LIMIT
        tune["image_size"] = OVERSIZED_SIZE
        if "size" in request:
            request["size"] = OVERSIZED_SIZE
    elif cell.fault in ("callback_missing", "callback_after_refund"):
        if not (cell.fault == "callback_missing" and variant.kind == "deepimage"):
            settings["defaults"]["job_deadline_s"] = SHORT_DEADLINE_S  # (Deep-Image polls)
    if cell.fault == "callback_after_refund":
        # Deep-Image sends its webhook when the job is done: a slow job makes it late.
        tune["job_duration_s" if variant.kind == "deepimage" else "callback_delay_s"] = (
            LATE_CALLBACK_S
        )
    if variant.callbacks:
        settings["callbacks"] = {"public_url": "http://127.0.0.1:9"}  # the real one is set below
    fault = _fault(cell, variant)
    if fault is not None:
        emu.inject(fault, times=3 if cell.persistent else 1)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(rig.tuned(emu, **tune))
        service = await ImageService.open(
            parse_settings(settings), http=http, sweeper=False, receive_callbacks=variant.callbacks
        )
        stack.push_async_callback(service.aclose)
        service.orchestrator.base_delay_s = BASE_DELAY_S
        real_sleep = service.orchestrator.sleep

        async def recording_sleep(seconds: float) -> None:
            result.waits.append(seconds)
            await real_sleep(seconds)

        service.orchestrator.sleep = recording_sleep
        hub = service.callbacks
        if variant.callbacks:
            assert hub is not None
            if relay is None:
                hub.public_url = await stack.enter_async_context(serve_in_loop(hub.app))
            else:
                relay[0].target, hub.public_url = hub.app, relay[1]
                stack.callback(setattr, relay[0], "target", None)
        caller = Caller(frontend="cli", user_id="matrix")
        result.remaining_before = (await service.quota(caller)).remaining
        try:
            await service.generate(caller, ImageRequest(prompt="a lighthouse", **request))
        except ImageGateError as exc:
            result.error = exc
        except Exception as exc:  # untyped: always a failure of the cell
            result.error = exc
        result.seconds = time.monotonic() - started
        result.attempts = sum(r.path == variant.submit for r in emu.requests)
        result.entries = await _hold_entries(service, caller)
        result.remaining_after = (await service.quota(caller)).remaining
        if expect(cell).late_callbacks:
            expected = 2 if cell.fault == "callback_duplicate" else result.attempts
            await _wait_for(lambda: len(emu.callbacks_sent) >= expected, LATE_CALLBACK_S + 3)
            await asyncio.sleep(0.1)  # let the receiver answer the last one
        result.callbacks_sent = len(emu.callbacks_sent)
        result.ignored_callbacks = hub.ignored if hub is not None else 0
        result.entries_later = await _hold_entries(service, caller)
        result.remaining_later = (await service.quota(caller)).remaining
        report = await audit(service)
        result.audit_problems = report.problems
    return result


def env_name(variant: Variant) -> str:
    return f"IMAGEGATE_MATRIX_{variant.emulator.upper()}_{variant.key_attr.upper()}"


def prepare_env(rig: EmulatorRig) -> dict[str, str]:
    """The environment variables holding each variant's key."""
    return {env_name(v): getattr(rig.emulators[v.emulator], v.key_attr) for v in VARIANTS.values()}


async def _hold_entries(service: ImageService, caller: Caller) -> list[str]:
    history = await service.quotas.history(caller.key, limit=50)
    return [e.kind for e in reversed(history) if e.hold_id is not None]


async def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def check(result: CellResult) -> list[str]:
    """Everything that differs from ``expect(result.cell)``; empty when the cell passed."""
    want = expect(result.cell)
    problems: list[str] = []
    error = result.error
    if error is not None and not isinstance(error, ImageGateError):
        problems.append(f"untyped error {type(error).__name__}: {error}")
    if want.charged:
        if error is not None:
            problems.append(f"expected a delivered image, got {type(error).__name__}: {error}")
        if result.entries != ["hold", "capture"]:
            problems.append(f"ledger of the hold: {result.entries}, expected hold, capture")
        if result.remaining_after != result.remaining_before - 1:
            problems.append(
                f"credits {result.remaining_before} -> {result.remaining_after}, expected -1"
            )
    else:
        if error is None:
            problems.append("expected an error, the job succeeded")
        elif want.error is not None and not isinstance(error, want.error):
            problems.append(f"expected {want.error.__name__}, got {type(error).__name__}")
        elif want.code is not None and getattr(error, "code", None) != want.code:
            problems.append(f"expected code {want.code}, got {getattr(error, 'code', None)}")
        entries = ["hold", "release"] if want.reserved else []
        if result.entries != entries:
            problems.append(f"ledger of the hold: {result.entries}, expected {entries}")
        if result.remaining_after != result.remaining_before:
            problems.append(
                f"credits {result.remaining_before} -> {result.remaining_after}, expected no change"
            )
    if result.attempts != want.attempts:
        problems.append(f"{result.attempts} provider call(s), expected {want.attempts}")
    problems += _check_waits(result.waits, want.waits, want.attempts - 1)
    if result.entries_later != result.entries or result.remaining_later != result.remaining_after:
        problems.append(
            f"the ledger changed after the job ended: {result.entries} -> {result.entries_later},"
            f" credits {result.remaining_after} -> {result.remaining_later}"
        )
    if want.late_callbacks:
        late = result.callbacks_sent - (1 if want.charged else 0)
        if late < 1 or result.ignored_callbacks < late:
            problems.append(
                f"{result.callbacks_sent} callback(s) sent, {result.ignored_callbacks} ignored;"
                " every callback after the first (or after the refund) must be ignored"
            )
    problems += [f"audit: {p}" for p in result.audit_problems]
    return problems


def _check_waits(waits: list[float], kind: str, count: int) -> list[str]:
    if kind == "none":
        return [f"waited {waits} between calls, expected no retry"] if waits else []
    if len(waits) != count:
        return [f"waited {len(waits)} time(s) ({waits}), expected {count}"]
    for attempt, wait in enumerate(waits):
        if kind == "retry_after" and abs(wait - RETRY_AFTER_S) > 1e-9:
            return [f"waited {wait} s, expected Retry-After {RETRY_AFTER_S} s"]
        low = BASE_DELAY_S * 2**attempt
        if kind == "backoff" and not low <= wait <= low * 1.25:
            return [f"backoff {wait:.4f} s before retry {attempt + 1}, expected {low}-{low * 1.25}"]
    return []


async def run_matrix(tmp: Path) -> tuple[int, list[tuple[str, list[str]]]]:
    """Every cell, in order (for the soak): (cells run, [(cell id, problems)] of failures)."""
    import os

    failed: list[tuple[str, list[str]]] = []
    all_cells = cells()
    with EmulatorRig() as rig:
        env = prepare_env(rig)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            relay = Relay()
            async with make_http_client() as http, serve_in_loop(relay) as url:
                for index, cell in enumerate(all_cells):
                    folder = tmp / f"cell{index}"
                    folder.mkdir(parents=True)
                    problems = check(await run_cell(rig, cell, folder, http, (relay, url)))
                    if problems:
                        failed.append((cell.id, problems))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return len(all_cells), failed
