"""The adapter contract and the few HTTP helpers every adapter shares.

An adapter serves one provider model. ``plan(request)`` is pure: it validates, maps the
request to the provider's body, returns warnings for settings it ignores, and raises
``InvalidRequestError`` for anything that would change count, size or cost. ``do_generate``
makes one provider call (plus polling or waiting for a callback) for ``count`` images and never
retries: batching, retries, the deadline and fallback live in ``core.orchestrator``.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import email.utils
import functools
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
import pybase64
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import (
    ContentRejectedError,
    ImageGateError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    finite_seconds,
)
from ..settings import ProviderSettings
from ..types import GeneratedImage, ImageRequest, InputImage, Operation

if TYPE_CHECKING:
    from ..callbacks import CallbackHub

log = logging.getLogger("imagegate")

CANCEL_TIMEOUT_S = 10.0  # how long a cancelled job may spend telling its provider to stop

ResponseModel = TypeVar("ResponseModel", bound=BaseModel)
OptionsModel = TypeVar("OptionsModel", bound="ProviderOptions")


@dataclass(frozen=True)
class Capabilities:
    """What a model serves; the contract tests check adapters against it."""

    operations: frozenset[Operation]
    max_images_per_call: int = 1
    description: str = ""


@dataclass(frozen=True)
class ProviderCall:
    """One HTTP request an adapter planned: a path under the provider's base URL and either a
    JSON body or a multipart form (``form`` fields plus ``files``: name -> (file name, bytes,
    MIME type))."""

    path: str
    json: dict[str, Any] | None = None
    form: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None

    def send_args(self, **extra: Any) -> dict[str, Any]:
        """The ``call_api`` keyword arguments for the body: a fresh copy of the JSON with
        ``extra`` merged in, or the form (``extra`` too, every value as text) and its files."""
        if self.files is not None:
            form = {key: str(value) for key, value in {**(self.form or {}), **extra}.items()}
            return {"data": form, "files": self.files}
        return {"json": {**(self.json or {}), **extra}}


@dataclass(frozen=True)
class Plan:
    """A validated, mapped request for one model: no I/O was done to build it."""

    operation: Operation
    n: int
    request: ImageRequest
    body: dict[str, Any] = field(default_factory=dict)  # the adapter's own mapping
    warnings: tuple[str, ...] = ()
    call: ProviderCall | None = None  # for adapters whose plan is one HTTP request
    offset: int = 0  # index of this batch's first image in the job (set by the orchestrator)

    def seed_for(self, index: int = 0) -> int | None:
        """The seed of image ``offset + index`` of the job: the job's seed plus its position."""
        seed = self.request.seed
        return None if seed is None else (seed + self.offset + index) % 2**32


@dataclass
class ProviderContext:
    """What a configured provider gives its adapters: one shared HTTP client, the key, limits."""

    name: str
    settings: ProviderSettings
    http: httpx.AsyncClient
    api_key: str | None = None
    callbacks: CallbackHub | None = None
    max_download_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000  # [images] max_pixels: larger results are refused in plan()

    @property
    def base_url(self) -> str:
        """``base_url`` from the config, else the API root the provider documents."""
        return self.settings.resolved_base_url()


@dataclass
class RemoteJob:
    """The provider's id for a job it runs (see ``ImageModel.remote_job``); None once it is
    known that the provider is not running it."""

    ticket: str | None


class ProviderOptions(BaseModel):
    """Base of each adapter's nested ``Options``: unknown keys are errors, never dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The request settings an adapter may pass on (``ImageModel.tunes``), as ``options`` publish them.
TUNABLE: dict[str, dict[str, Any]] = {
    "steps": {"type": "integer", "minimum": 1, "maximum": 200, "description": "sampling steps"},
    "guidance": {
        "type": "number",
        "minimum": 0,
        "maximum": 50,
        "description": "how closely to follow the prompt (CFG scale)",
    },
}


class ImageModel(ABC):
    """One provider model. Subclasses set ``kind`` and ``default_base_url``, implement
    ``capabilities``, ``plan`` and ``do_generate``;
    ``Options`` lists the provider's own options (``parse_options`` checks a request's), and
    ``tunes`` the request settings among ``steps`` and ``guidance`` that reach the provider."""

    kind: ClassVar[str]  # the config's ``[providers.<name>] kind``
    default_base_url: ClassVar[str]  # the API root the provider documents
    key_optional: ClassVar[bool] = False  # True: works without ``api_key_env``
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    tunes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: ProviderContext, model: str) -> None:
        self.ctx = ctx
        self.model = model

    @property
    def ref(self) -> str:
        return f"{self.ctx.name}:{self.model}"

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def plan(self, request: ImageRequest) -> Plan:
        """Validate and map ``request``; pure.

        Raises:
            InvalidRequestError: the request cannot be served as asked (names what is allowed).
        """

    @abstractmethod
    async def do_generate(self, plan: Plan, count: int, deadline: float) -> list[GeneratedImage]:
        """One provider call for ``count`` images (``count`` <= max_images_per_call).

        ``deadline`` is a ``time.monotonic()`` value the call must not outlive.

        Raises:
            ProviderError: a subclass saying whether a retry or a fallback may help.
            ContentRejectedError: moderation refused the prompt or an image.
        """

    async def balance(self) -> str | None:
        """The provider account's balance where the API has one, as text."""
        return None

    async def available_models(self) -> list[str] | None:
        """The model names the provider serves now, where its API lists them."""
        return None

    async def cancel(self, ticket: str, deadline: float) -> None:  # noqa: B027 - optional
        """Ask the provider to stop work on ``ticket`` (its id for a job this adapter started),
        by ``deadline`` (``CANCEL_TIMEOUT_S`` from the call, as ``time.monotonic()``).

        Called by ``remote_job`` when the wait for that job ends without its result: the job
        was cancelled, hit its deadline or failed. Best effort; the default does nothing.
        """

    @contextlib.asynccontextmanager
    async def remote_job(self, ticket: str) -> AsyncIterator[RemoteJob]:
        """Wrap the wait for a job the provider runs on its side: if the block ends without
        finishing (cancellation included), ``cancel(job.ticket, …)`` runs, shielded from the
        cancellation and bounded by ``CANCEL_TIMEOUT_S``, so a scarce GPU or an account's
        credit stops being spent on images nobody will get. The block may change
        ``job.ticket`` (to the id the provider answered with)."""
        job = RemoteJob(ticket)
        try:
            yield job
        except BaseException:
            if job.ticket is not None:
                await _cancel_quietly(self, job.ticket)
            raise

    def auth(self) -> dict[str, Any]:
        """The ``call_api`` keyword arguments that authenticate (and identify) a request to the
        provider: ``Authorization: Bearer`` with the key, unless the adapter overrides this.

        Raises:
            ProviderAuthError: the key it needs is not set.
        """
        return {"headers": bearer(self.ctx)}

    def classify(self, response: httpx.Response) -> ImageGateError | None:
        """The adapter's reading of a failed reply in its provider's own error vocabulary (what
        the HTTP status alone would misfile), or None for the usual mapping."""
        return None

    async def api(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """``call_api`` on ``base_url + path`` with this adapter's ``auth`` and ``classify``.

        Raises:
            ContentRejectedError: the provider's moderation refused the prompt or an image.
            ProviderError: any other failure, classified.
        """
        return await call_api(
            self.ctx, method, self.ctx.base_url + path, deadline=deadline,
            classify=self.classify, **self.auth(), **kwargs,
        )  # fmt: skip

    def require_operation(self, request: ImageRequest) -> None:
        """Raise a clear error when this model does not serve ``request.operation``."""
        if request.operation not in self.capabilities.operations:
            served = ", ".join(sorted(self.capabilities.operations))
            raise InvalidRequestError(
                f"{self.ref} does not do {request.operation}; it serves: {served}"
            )

    def accept(self, request: ImageRequest, options: type[OptionsModel]) -> OptionsModel:
        """The first step of ``plan()``: check that this model serves ``request.operation``,
        then return the request's options for it, validated by ``options`` (the adapter's
        ``Options``; see ``parse_options``).

        Raises:
            InvalidRequestError: an operation it does not serve, an unknown option or a bad
                value; names what is allowed.
        """
        self.require_operation(request)
        return parse_options(self, request, options)


async def _cancel_quietly(model: ImageModel, ticket: str) -> None:
    deadline = time.monotonic() + CANCEL_TIMEOUT_S
    task = asyncio.ensure_future(asyncio.wait_for(model.cancel(ticket, deadline), CANCEL_TIMEOUT_S))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:  # cancelled again while waiting: the task still runs
        pass
    except Exception as exc:  # noqa: BLE001 - the original failure is what the caller sees
        log.info("%s: cancelling %s failed: %s", model.ref, ticket, type(exc).__name__)


# --- HTTP helpers -------------------------------------------------------------------------


def remaining(deadline: float, cap: float) -> float:
    """Seconds left before ``deadline``, at most ``cap``.

    Raises:
        ProviderTimeoutError: the deadline has passed.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProviderTimeoutError("the provider did not answer in time")
    return min(left, cap)


async def pause(ctx: ProviderContext, deadline: float) -> None:
    """Wait between two polls of a job: ``poll_interval_s``, but not past ``deadline``."""
    await asyncio.sleep(min(ctx.settings.poll_interval_s, max(0.0, deadline - time.monotonic())))


Classify = Callable[[httpx.Response], "ImageGateError | None"]


async def call_api(
    ctx: ProviderContext,
    method: str,
    url: str,
    *,
    deadline: float,
    classify: Classify | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Make one request, turning transport failures into provider errors; checks the status.

    A failed status goes first to ``classify`` (the adapter's reading of its provider's error
    body), then to ``moderation_refusal``, then to ``error_for_status``.

    Raises:
        ContentRejectedError: the provider's moderation refused the prompt or an image.
        ProviderError: any other failure, classified.
    """
    response = await _request(ctx, method, url, deadline=deadline, **kwargs)
    if response.status_code >= 400:
        error = classify(response) if classify else None
        raise error or moderation_refusal(ctx, response) or error_for_status(ctx, response)
    return response


async def _request(
    ctx: ProviderContext, method: str, url: str, *, deadline: float, **kwargs: Any
) -> httpx.Response:
    timeout = remaining(deadline, ctx.settings.timeout_s)
    try:
        response = await ctx.http.request(method, _parsed(url), timeout=timeout, **kwargs)
    except httpx.TimeoutException:
        raise ProviderTimeoutError(
            f"{ctx.name} did not answer within {timeout:.0f} s",
            provider=ctx.name,
            url=ctx.base_url,
        ) from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(
            f"{ctx.name} could not be reached",
            provider=ctx.name,
            detail=type(exc).__name__,
            url=ctx.base_url,
        ) from None
    except httpx.InvalidURL:  # built from an id in the provider's reply
        raise ProviderResponseError(
            f"{ctx.name} sent an id we cannot put in a URL", provider=ctx.name
        ) from None
    # An httpx response and its stream refer to each other, so a response (and its body: ~11 MB
    # for one 2048x2048 image in base64) would live on until the garbage collector's next full
    # pass, long after the adapter is done with it (make bench: large). The body is read and
    # the stream closed already: cut the loop.
    response.stream = httpx.ByteStream(response.content)
    return response


@functools.lru_cache(maxsize=512)
def _parsed(url: str) -> httpx.URL:
    """``url`` parsed once: an adapter calls the same few endpoints over and over, and parsing
    is a tenth of httpx's work per request (``make bench``: overhead). Raises as httpx does."""
    return httpx.URL(url)


def error_for_status(ctx: ProviderContext, response: httpx.Response) -> ProviderError:
    """The error class a failed HTTP status maps to (408/409/429/5xx are retryable)."""
    status = response.status_code
    detail = redact(response.text, ctx.api_key, 500)
    message = provider_message(response, ctx.api_key)
    kwargs: dict[str, Any] = {"provider": ctx.name, "status": status, "detail": detail}
    name = ctx.name
    if status == 429:
        return ProviderRateLimitedError(
            f"{name} is busy (rate limited); try again shortly",
            retry_after=retry_after(response),
            **kwargs,
        )
    if status in (401, 403):
        return ProviderAuthError(f"{name} refused our API key; tell the operator", **kwargs)
    if status == 402:
        return ProviderQuotaError(f"{name} account is out of credits; tell the operator", **kwargs)
    if status == 408:
        return ProviderTimeoutError(f"{name} timed out", **kwargs)
    if status == 409:
        return ProviderConflictError(f"{name} reported a conflict", **kwargs)
    if status >= 500:
        return ProviderUnavailableError(f"{name} had a server error ({status})", **kwargs)
    suffix = f": {message}" if message else ""
    return ProviderRejectedError(f"{name} rejected the request{suffix}", **kwargs)


def provider_message(response: httpx.Response, secret: str | None) -> str:
    """A short message from a provider's error JSON (``message``/``error.message``), redacted."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message: Any = ""
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or ""
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message") or message
        elif isinstance(error, str) and not message:  # {"error": "<code>", "message": ...}
            message = error
    return redact(str(message), secret, 200) if message else ""


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), within
    0..``MAX_WAIT_S`` (``inf`` or ``1e999`` is a day; NaN is no value)."""
    if value := response.headers.get("retry-after-ms"):
        try:
            return finite_seconds(float(value) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return finite_seconds(float(value))
    except ValueError:
        pass
    try:  # a provider's garbled header must not turn a 429 into a crash
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return finite_seconds(when.timestamp() - time.time()) if when else None


SECRET_PREFIX_CHARS = 8  # this much of a key's start, or more, is redacted wherever it shows


def redact(text: str, secret: str | None, limit: int | None = None) -> str:
    """``text`` with the secret replaced, and any piece of it of ``SECRET_PREFIX_CHARS`` or more
    characters from its start (a key the provider echoed cut short); then cut to ``limit``
    characters. Always redact before cutting: a cut through the key would leave a prefix
    that no longer matches the key."""
    if secret:
        text = _without_key_prefixes(text, secret)
    return text if limit is None else text[:limit]


def _without_key_prefixes(text: str, secret: str) -> str:
    head = secret[:SECRET_PREFIX_CHARS]
    parts: list[str] = []
    start = 0
    while (found := text.find(head, start)) >= 0:
        end = found + len(head)
        while end - found < len(secret) and end < len(text) and text[end] == secret[end - found]:
            end += 1
        parts += [text[start:found], "[redacted]"]
        start = end
    return "".join(parts) + text[start:]


def parse_json(
    ctx: ProviderContext, response: httpx.Response, model: type[ResponseModel]
) -> ResponseModel:
    """Validate a provider reply against a response model that declares only what we read.

    Raises:
        ProviderResponseError: the body is not JSON or lacks what we need.
    """
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise _unreadable(ctx, exc, "a reply") from None


def decode_b64(ctx: ProviderContext, data: str) -> bytes:
    """Decode base64 image data (a ``data:`` prefix is allowed).

    Raises:
        ProviderResponseError: the data is not valid base64.
    """
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        # pybase64 (SIMD) decodes a 2048x2048 image's 11 MB in ~1 ms; the standard library
        # takes ~30 ms, all of it with the event loop stopped (make bench: large).
        return pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderResponseError(
            f"{ctx.name} sent image data that is not valid base64", provider=ctx.name
        ) from None


def encode_b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


async def download(ctx: ProviderContext, url: str, *, deadline: float) -> bytes:
    """Fetch a result image at once (provider URLs expire), capped while streaming.

    The API key is never sent along: result URLs are signed links or public CDN paths.

    Raises:
        ProviderResponseError: expired or missing (403/404), or too large.
        ProviderError: other failures, classified as for API calls.
    """
    timeout = remaining(deadline, ctx.settings.timeout_s)
    cap = ctx.max_download_bytes
    try:
        async with ctx.http.stream("GET", url, timeout=timeout) as response:
            if response.status_code in (403, 404, 410):
                raise ProviderResponseError(
                    f"{ctx.name}'s image link had expired or was missing",
                    provider=ctx.name,
                    status=response.status_code,
                )
            if response.status_code >= 400:
                await response.aread()  # error bodies are small; error_for_status reads it
                raise error_for_status(ctx, response)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise ProviderResponseError(
                        f"{ctx.name} sent an image over {cap // 1_000_000} MB", provider=ctx.name
                    )
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise ProviderTimeoutError(
            f"downloading from {ctx.name} timed out", provider=ctx.name
        ) from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(
            f"downloading from {ctx.name} failed", provider=ctx.name, detail=type(exc).__name__
        ) from None
    except httpx.InvalidURL:  # not an httpx.HTTPError
        raise ProviderResponseError(
            f"{ctx.name} sent an image link that is not a valid URL", provider=ctx.name
        ) from None
    return b"".join(chunks)


def bearer(ctx: ProviderContext) -> dict[str, str]:
    """``Authorization: Bearer`` headers.

    Raises:
        ProviderAuthError: no key is set in the environment variable named by ``api_key_env``.
    """
    return {"Authorization": f"Bearer {require_key(ctx)}"}


def basic_auth(ctx: ProviderContext) -> httpx.BasicAuth | None:
    """HTTP basic auth from a ``user:password`` key, for self-hosted servers (a WebUI with
    ``--api-auth``, a ComfyUI behind a proxy); None when no ``api_key_env`` is configured.

    Raises:
        ProviderAuthError: ``api_key_env`` names a variable that is unset or has no ``:``.
    """
    if not ctx.settings.api_key_env:
        return None
    user, sep, password = require_key(ctx).partition(":")
    if not sep:
        raise ProviderAuthError(
            f"{ctx.name}: the variable {ctx.settings.api_key_env} must hold user:password",
            provider=ctx.name,
        )
    return httpx.BasicAuth(user, password)


def require_key(ctx: ProviderContext) -> str:
    if not ctx.api_key:
        env = ctx.settings.api_key_env or "api_key_env"
        raise ProviderAuthError(
            f"{ctx.name} has no API key: set the environment variable {env}", provider=ctx.name
        )
    return ctx.api_key


# --- request helpers (pure) ---------------------------------------------------------------


def option_schema(model: ImageModel) -> dict[str, dict[str, Any]]:
    """Every option ``model`` takes, as a small JSON schema each (type or allowed values,
    range, meaning): the ``tunes`` settings, then the provider's own ``Options``."""
    out = {name: TUNABLE[name] for name in sorted(model.tunes)}
    properties = model.Options.model_json_schema().get("properties", {})
    for name, schema in properties.items():
        out[name] = _compact(schema)
    return out


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic field schema without titles, null branches and null defaults."""
    variants = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    out = dict(variants[0]) if len(variants) == 1 else dict(schema)
    if len(variants) > 1:
        out["anyOf"] = variants
    for key in ("description", "default"):
        if schema.get(key) is not None:
            out[key] = schema[key]
    out.pop("title", None)
    if out.get("default", "") is None:
        out.pop("default")
    return out


def parse_options(
    model: ImageModel, request: ImageRequest, cls: type[OptionsModel]
) -> OptionsModel:
    """The request's options for this provider: ``request.options`` (for the chosen model)
    overlaid by ``provider_options[<kind>]``, then ``provider_options[<configured name>]``,
    validated by the adapter's ``Options``.

    Raises:
        InvalidRequestError: an unknown option or a bad value; names what is allowed.
    """
    names = dict.fromkeys((model.kind, model.ctx.name))
    merged: dict[str, Any] = dict(request.options)
    for name in names:
        merged.update(request.provider_options.get(name) or {})
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "?"
        allowed = ", ".join(
            [
                *sorted(model.tunes),
                *(
                    f"{field} ({info.description})" if info.description else field
                    for field, info in cls.model_fields.items()
                ),
            ]
        )
        problem = "unknown option" if error["type"] == "extra_forbidden" else error["msg"]
        raise InvalidRequestError(
            f"{model.ref}: option {key!r}: {problem}; allowed: {allowed or 'none'}"
        ) from None


def ignored(request: ImageRequest, names: tuple[str, ...], who: str) -> list[str]:
    """One warning per request field in ``names`` that is set but that ``who`` does not use."""
    return [f"{name} is ignored by {who}" for name in names if getattr(request, name) is not None]


def size_for_aspect(
    ratio: float, *, area: int = 1024 * 1024, multiple: int = 64, low: int = 64, high: int = 4096
) -> tuple[int, int]:
    """A ``(width, height)`` of about ``area`` pixels with the given width/height ratio, each
    side a multiple of ``multiple`` within ``[low, high]``."""
    width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
    return snap(width, multiple, low, high), snap(height, multiple, low, high)


def snap(side: float, multiple: int, low: int, high: int | None = None) -> int:
    """``side`` rounded to the nearest multiple of ``multiple``, within ``[low, high]``."""
    snapped = max(low, round(side / multiple) * multiple)
    return snapped if high is None else min(high, snapped)


def moderation_refusal(
    ctx: ProviderContext, response: httpx.Response
) -> ContentRejectedError | None:
    """A ``ContentRejectedError`` when a failed reply reads like a moderation refusal (HTTP 451,
    or a code or message about moderation, NSFW, a content policy or safety)."""
    message = provider_message(response, ctx.api_key)
    try:
        body = response.json()
    except ValueError:
        body = None
    codes: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        codes = [str(body.get("code") or ""), str(error if isinstance(error, str) else "")]
        if isinstance(error, dict):
            codes.append(str(error.get("code") or ""))
    text = " ".join([*codes, message]).lower()
    if response.status_code == 451 or any(mark in text for mark in _MODERATION_MARKS):
        return content_rejected(ctx, message)
    return None


_MODERATION_MARKS = ("moderation", "nsfw", "content_policy", "content policy", "safety system")


def content_rejected(ctx: ProviderContext, reason: str = "") -> ContentRejectedError:
    """The user-facing moderation refusal of ``ctx``'s provider, with its reason if it gave one."""
    why = f" ({reason.rstrip('.')})" if reason else ""
    return ContentRejectedError(
        f"{ctx.name} refused this request on content grounds{why}; nothing was charged."
        " Change the prompt or the image and try again.",
        provider=ctx.name,
    )


Reply = TypeVar("Reply")


async def callback_or_reply(
    ctx: ProviderContext,
    post: Callable[[str | None], Awaitable[Reply]],
    deadline: float,
    *,
    grace_s: float | None = None,
    use: bool = True,
) -> tuple[Reply, Any | None]:
    """The one "callback or wait" step of adapters whose provider can call back.

    When this process receives callbacks (``[callbacks] public_url``, served here) and ``use``:
    ``post(url)`` with a fresh per-job callback URL, then the JSON the provider posts there,
    waiting until ``deadline``, or at most ``grace_s`` (then None: the adapter polls). Else
    ``post(None)``, and None: the reply itself holds the result, or the adapter polls. The
    callback path is closed however this ends, so a late callback is ignored.

    Raises:
        ProviderTimeoutError: no callback came before ``deadline`` (without ``grace_s``).
    """
    hub = ctx.callbacks
    if hub is None or not use:
        return await post(None), None
    waiter = hub.expect()
    try:
        reply = await post(waiter.url)
        if grace_s is None:
            return reply, await wait_for_callback(ctx, waiter, deadline)
        try:
            return reply, await waiter.wait(max(0.0, min(grace_s, deadline - time.monotonic())))
        except TimeoutError:
            return reply, None
    finally:
        waiter.close()


async def wait_for_callback(ctx: ProviderContext, waiter: Any, deadline: float) -> Any:
    """The JSON a provider posted to ``waiter.url``, waiting at most until ``deadline``.

    Raises:
        ProviderTimeoutError: no callback came in time (the waiter is closed, so a late one is
            ignored).
    """
    try:
        return await waiter.wait(max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise ProviderTimeoutError(
            f"{ctx.name} never called back with the result", provider=ctx.name
        ) from None


async def read_callback_or_reply(
    ctx: ProviderContext,
    post: Callable[[str | None], Awaitable[httpx.Response]],
    deadline: float,
    model: type[ResponseModel],
    *,
    use: bool = True,
) -> ResponseModel:
    """``callback_or_reply`` for a provider whose callback posts what its reply would hold: the
    callback's JSON when one came, else the reply's, read as ``model``.

    Raises:
        ProviderTimeoutError: no callback came before ``deadline``.
        ProviderResponseError: what came lacks what we need.
    """
    response, called_back = await callback_or_reply(ctx, post, deadline, use=use)
    if called_back is not None:
        return parse_data(ctx, called_back, model)
    return parse_json(ctx, response, model)


def parse_data(ctx: ProviderContext, data: Any, model: type[ResponseModel]) -> ResponseModel:
    """``parse_json`` for a body that is already decoded (a callback's JSON).

    Raises:
        ProviderResponseError: it lacks what we need.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _unreadable(ctx, exc, "a result") from None


def no_image(ctx: ProviderContext) -> ProviderResponseError:
    """The error for a reply that finished without any image."""
    return ProviderResponseError(f"{ctx.name} returned no image", provider=ctx.name)


def failed_job(
    ctx: ProviderContext, message: str, status: object, marks: tuple[str, ...] = ("moderation",)
) -> ImageGateError:
    """The error for a job that a successful reply reports as failed: a moderation refusal when
    its ``message`` contains one of ``marks``, else a bad reply naming the message (or the
    ``status`` when there is none)."""
    text = redact(message, ctx.api_key, 200)
    if any(mark in text.lower() for mark in marks):
        return content_rejected(ctx, text)
    return ProviderResponseError(
        f"{ctx.name} could not make the images ({text or status})", provider=ctx.name
    )


def _unreadable(ctx: ProviderContext, exc: ValidationError, what: str) -> ProviderResponseError:
    return ProviderResponseError(
        f"{ctx.name} sent {what} we could not read",
        provider=ctx.name,
        detail=redact(str(exc), ctx.api_key, 300),
    )


def check_output_size(model: ImageModel, size: tuple[int, int], doing: str = "this job") -> None:
    """Refuse, in ``plan()``, a result over ``[images] max_pixels``: imagegate would reject the
    image only after the provider had billed the work, so the user would burn provider credit
    for free. Every adapter calls this with the size its result will have (or, where the
    provider picks it, the largest it documents).

    Raises:
        InvalidRequestError: naming the size, the limit and what to change.
    """
    width, height = size
    limit = model.ctx.max_pixels
    if width * height > limit:
        raise InvalidRequestError(
            f"{doing} would make a {width}x{height} image ({width * height / 1e6:.1f} MP) and the"
            f" limit is {limit:,} pixels; use a smaller image, scale or size"
        )


def upscaled_size(model: ImageModel, image: InputImage, scale: int) -> tuple[int, int]:
    """The size of ``image`` upscaled ``scale`` times, refused when over the pixel limit.

    Raises:
        InvalidRequestError: the result would be over ``[images] max_pixels``.
    """
    size = (image.width * scale, image.height * scale)
    check_output_size(model, size, f"upscaling {image.width}x{image.height} x{scale}")
    return size


def keep_input_size(request: ImageRequest, who: str) -> None:
    """For edits whose result has the input's size: refuse a different size or aspect ratio.

    Raises:
        InvalidRequestError: a size or aspect ratio that differs from the input image's.
    """
    image = request.image
    if image is None or (request.size is None and request.aspect_ratio is None):
        return
    ratio = request.ratio() or 0.0
    same = request.size == (image.width, image.height) if request.size else False
    if request.aspect_ratio and abs(ratio - image.width / image.height) < 0.01:
        same = True
    if not same:
        raise InvalidRequestError(
            f"{who} keeps the input image's size ({image.width}x{image.height});"
            " leave out the size and aspect ratio"
        )
