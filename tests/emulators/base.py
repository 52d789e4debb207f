"""Shared machinery for the provider emulators.

Every emulator is an `Emulator` subclass that lists its API routes; this module wraps each route
so that it is recorded, can be hit by injected faults, is authenticated and turns `ApiError` into
the provider's error body. It also stores the images the emulator serves at `/_files/{name}`.

Fault semantics (see `Fault`): faults are queued with `Emulator.inject` and each one is used up by
the next request whose path contains `Fault.path` (any API request when `path` is None; file
downloads under `/_files/` only when `path` names them). Order of effects for a request:
`delay_s`, then `drop_connection`, then `status`/`retry_after` (error body, or `body` if given),
then `malformed_json`, then authentication, then `moderation`; the remaining flags
(`truncated_b64`, `expired_url`, `slow_job`, `duplicate_callback`, `missing_callback`) change how
the endpoint itself answers, and `body` without `status` replaces the body of the normal answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


@dataclass
class Fault:
    """One scripted misbehaviour; queue it with `Emulator.inject(fault, times)`."""

    status: int | None = None  # answer with this status and the provider's error body
    body: Any = None  # replaces the body (of the error, or of the normal answer)
    retry_after: float | None = None  # Retry-After header; implies status 429 if status is None
    delay_s: float = 0  # sleep before answering
    malformed_json: bool = False  # 200 with a body that is not valid JSON
    truncated_b64: bool = False  # base64 images cut in half; URL images served truncated
    expired_url: bool = False  # image URLs made by this request answer 403
    moderation: bool = False  # the provider's moderation refusal (shape per module)
    slow_job: bool = False  # Deep-Image: the job never leaves in_progress
    duplicate_callback: bool = False  # POST the callback twice
    missing_callback: bool = False  # never POST the callback
    drop_connection: bool = False  # close the connection mid-response
    path: str | None = None  # only requests whose path contains this; None = any API request

    def matches(self, path: str, is_file: bool) -> bool:
        if self.path is None:
            return not is_file
        return self.path in path


@dataclass
class Upload:
    """One file part of a multipart request."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Recorded:
    """One request as the emulator received it."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    form: dict[str, str] | None
    files: dict[str, bytes] | None  # first file per field name; every part is in `uploads`
    query: dict[str, str]
    body: bytes = b""
    uploads: list[Upload] = field(default_factory=list)


class ApiError(Exception):
    """Raised by handlers; the emulator renders it with the provider's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        /,
        headers: dict[str, str] | None = None,
        **extra: Any,  # more body fields, e.g. status="failed" (hence the positional-only args)
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra
        self.headers = headers or {}


class ConnectionDropped(httpx.RemoteProtocolError):
    """Drops a connection; under httpx.ASGITransport the client sees this transport error."""


@dataclass
class Call:
    """What a route handler gets: the request, its record and the fault it drew (if any)."""

    request: Request
    record: Recorded
    fault: Fault | None

    def flag(self, name: str) -> bool:
        return bool(self.fault and getattr(self.fault, name))

    def json_object(self) -> dict[str, Any]:
        """The JSON body as a dict, or a 400 ApiError."""
        if not isinstance(self.record.json, dict):
            raise ApiError(400, "Request body must be a JSON object", "invalid_request")
        return self.record.json

    @property
    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")


@dataclass
class StoredFile:
    data: bytes
    mime: str
    expires_at: float
    expired: bool = False


Handler = Callable[[Call], Awaitable[Any]]


class Emulator(ABC):
    """Base class: subclasses set `kind`, `base_path`, `default_image_size` and `api_routes()`."""

    kind = ""
    base_path = ""
    default_image_size: tuple[int, int] = (256, 256)

    def __init__(
        self,
        *,
        api_key: str | None = None,
        image_size: tuple[int, int] | None = None,
        url_ttl_s: float = 3600.0,
        callback_delay_s: float = 0.05,
    ):
        self.api_key = api_key or f"test-{self.kind}-key"
        width, height = image_size or self.default_image_size
        self.image_size = (width, height)  # used where the API has no size field
        self.url_ttl_s = url_ttl_s  # served image URLs answer 403 after this long
        self.callback_delay_s = callback_delay_s  # lets the ack reach the client first
        self.requests: list[Recorded] = []
        self.callbacks_sent: list[tuple[str, Any]] = []
        self.files: dict[str, StoredFile] = {}
        self._faults: list[list[Any]] = []  # [fault, remaining uses], FIFO
        self._tasks: set[asyncio.Task[Any]] = set()
        routes = [Route("/_files/{name}", self._wrap(self._serve_file, is_file=True))]
        for method, path, handler in self.api_routes():
            routes.append(Route(path, self._wrap(handler), methods=[method]))
        self.app = Starlette(routes=routes)

    # ----- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    def api_routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every documented endpoint."""

    @abstractmethod
    def authenticate(self, request: Request) -> None:
        """Raise ApiError unless the request carries valid credentials."""

    def error_body(self, err: ApiError) -> Any:
        """The provider's JSON error body for `err`."""
        return {"message": err.message, **({"code": err.code} if err.code else {}), **err.extra}

    def fault_error(self, status: int) -> ApiError:
        """The error a `Fault(status=...)` produces; subclasses give provider wording."""
        return ApiError(status, HTTPStatus(status).phrase)

    def moderation_error(self) -> ApiError:
        """The provider's moderation refusal (used by `Fault(moderation=True)`)."""
        return ApiError(400, "Request rejected by content moderation", "content_moderation")

    # ----- public helpers ----------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests it matches."""
        self._faults.append([fault, times])

    def clear(self) -> None:
        """Forget recorded requests, sent callbacks and queued faults (provider state stays)."""
        self.requests.clear()
        self.callbacks_sent.clear()
        self._faults.clear()

    def publish(self, call: Call, data: bytes, ext: str, query: str = "") -> str:
        """Store image bytes and return their absolute URL, applying the call's URL faults."""
        if call.flag("truncated_b64"):
            data = data[: len(data) // 2]
        name = f"{uuid.uuid4().hex}.{ext}"
        self.files[name] = StoredFile(
            data, MIME[ext], time.monotonic() + self.url_ttl_s, expired=call.flag("expired_url")
        )
        return f"{call.base_url}/_files/{name}" + (f"?{query}" if query else "")

    def b64(self, call: Call, data: bytes) -> str:
        """Base64 of `data`, cut in half when the call drew a truncated_b64 fault."""
        text = base64.b64encode(data).decode()
        return text[: len(text) // 2 + 1] if call.flag("truncated_b64") else text

    def send_callback(self, call: Call, url: str, body: Any, delay_s: float | None = None) -> None:
        """POST `body` to `url` in the background, honouring the call's callback faults."""
        if call.flag("missing_callback"):
            return
        times = 2 if call.flag("duplicate_callback") else 1
        delay = self.callback_delay_s if delay_s is None else delay_s
        self.spawn(self._post_callback(url, body, times, delay))

    async def drain(self) -> None:
        """Wait until every callback spawned so far has been posted and answered.

        Only for an emulator served on the caller's event loop (`httpx.ASGITransport`); one run
        by `running()` spawns its work on the server thread's loop.
        """
        while self._tasks:
            await asyncio.gather(*self._tasks)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background task on the serving loop, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- internals ---------------------------------------------------------------------------

    async def _post_callback(self, url: str, body: Any, times: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(times):
                # Recorded before the POST: a receiver may look at `callbacks_sent` as soon as it
                # has the body, before this client has read the answer.
                self.callbacks_sent.append((url, body))
                try:
                    await client.post(url, json=body)
                except httpx.HTTPError as exc:  # the receiver being down is the test's business
                    log.warning("callback to %s failed: %s", url, exc)

    def _take_fault(self, path: str, is_file: bool) -> Fault | None:
        for entry in self._faults:
            fault, _ = entry
            if fault.matches(path, is_file):
                entry[1] -= 1
                if entry[1] <= 0:
                    self._faults.remove(entry)
                return fault
        return None

    def _wrap(self, handler: Handler, is_file: bool = False) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            record = await _record(request)
            self.requests.append(record)
            fault = self._take_fault(request.url.path, is_file)
            call = Call(request, record, fault)
            try:
                early = await self._early_fault(fault)
                if early is not None:
                    return early
                if not is_file:
                    self.authenticate(request)
                    if call.flag("moderation"):
                        raise self.moderation_error()
                result = await handler(call)
            except ApiError as err:
                return JSONResponse(self.error_body(err), err.status, err.headers)
            return _finish(result, fault)

        return endpoint

    async def _early_fault(self, fault: Fault | None) -> Response | None:
        if fault is None:
            return None
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.drop_connection:
            return _DropResponse()
        status = fault.status or (429 if fault.retry_after is not None else None)
        if status is not None:
            retry = fault.retry_after
            headers = {"retry-after": f"{retry:g}"} if retry is not None else {}
            body = fault.body
            if body is None:
                body = self.error_body(self.fault_error(status))
            return _json_or_raw(body, status, headers)
        if fault.malformed_json:
            return Response(b'{"status": "succ', media_type="application/json")
        return None

    async def _serve_file(self, call: Call) -> Response:
        name = call.request.path_params["name"]
        stored = self.files.get(name)
        if stored is None:
            return Response(_blob_error("BlobNotFound"), 404, media_type="application/xml")
        if stored.expired or call.flag("expired_url") or time.monotonic() > stored.expires_at:
            return Response(_blob_error("AuthenticationFailed"), 403, media_type="application/xml")
        data = stored.data[: len(stored.data) // 2] if call.flag("truncated_b64") else stored.data
        return Response(data, media_type=stored.mime)


async def _record(request: Request) -> Recorded:
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    record = Recorded(
        method=request.method,
        path=request.url.path,
        headers={k.lower(): v for k, v in request.headers.items()},
        json=None,
        form=None,
        files=None,
        query=dict(request.query_params),
        body=body,
    )
    if body and not ctype.startswith("multipart/form-data"):
        try:  # JSON whatever the content type says (curl -d sends JSON as a "form")
            record.json = json.loads(body)
            return record
        except ValueError:
            pass
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            form = await request.form(max_part_size=64 * 1024 * 1024)
        except Exception:  # a broken multipart body is recorded as "no form"; handlers reject it
            return record
        record.form, record.files = {}, {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                record.uploads.append(Upload(key, value.filename, value.content_type, data))
                record.files.setdefault(key, data)
            else:
                record.form.setdefault(key, value)
        await form.close()  # the bytes are copied; free the spooled temp files
    return record


def _finish(result: Any, fault: Fault | None) -> Response:
    response = result if isinstance(result, Response) else JSONResponse(result)
    if fault is not None and fault.body is not None:
        return _json_or_raw(fault.body, response.status_code, {})
    return response


def _json_or_raw(body: Any, status: int, headers: dict[str, str]) -> Response:
    if isinstance(body, str | bytes):
        return Response(body, status, headers, media_type="application/json")
    return JSONResponse(body, status, headers)


def _blob_error(code: str) -> bytes:
    # Image URLs of these providers are signed blob/CDN links; a dead one answers like Azure Blob.
    return f'<?xml version="1.0"?><Error><Code>{code}</Code></Error>'.encode()


class _DropResponse(Response):
    """Starts a response, sends a fragment and dies, so the server closes the connection."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"dat', "more_body": True})
        raise ConnectionDropped("emulator dropped the connection (Fault.drop_connection)")


# ----- images ----------------------------------------------------------------------------------


def render_image(seed: str, size: tuple[int, int], ext: str = "png", alpha: bool = False) -> bytes:
    """Deterministic picture for `seed`: a coloured background with three shapes.

    `ext` is png, jpeg, jpg or webp; `alpha` gives a transparent background (not for jpeg).
    """
    digest = hashlib.sha256(seed.encode()).digest()
    width, height = size
    alpha = alpha and PIL_FORMAT[ext] != "JPEG"
    background = (*digest[0:3], 0 if alpha else 255)
    image = Image.new("RGBA", (width, height), background)
    draw = ImageDraw.Draw(image)
    for i in range(3):
        b = digest[3 + 9 * i : 12 + 9 * i]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        x1, y1 = x0 + 1 + b[2] * width // 400, y0 + 1 + b[3] * height // 400
        shape = draw.ellipse if b[4] % 2 else draw.rectangle
        shape((x0, y0, x1, y1), fill=(b[5], b[6], b[7], 255))
    if not alpha:
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=PIL_FORMAT[ext], **({"quality": 85} if ext != "png" else {}))
    return buf.getvalue()


def open_image(data: bytes, what: str) -> Image.Image:
    """Decode image bytes or raise a 400 ApiError naming `what`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ApiError(400, f"{what} is not a valid image", "invalid_image") from exc
    return image


def new_id(hex_chars: int = 24) -> str:
    """A random hex id (24 chars looks like the Mongo ObjectIds some providers use)."""
    return uuid.uuid4().hex[:hex_chars] if hex_chars <= 32 else uuid.uuid4().hex


def bearer_token(request: Request, scheme: str = "Bearer") -> str | None:
    """The credential after `scheme` in the Authorization header, or None."""
    value = request.headers.get("authorization", "")
    prefix, _, token = value.partition(" ")
    return token.strip() if prefix.lower() == scheme.lower() and token.strip() else None


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Return once `predicate()` is true (checked every 5 ms); TimeoutError after `timeout` s.

    For tests that must act while an emulated job is in a given state (e.g. cancel it while it
    runs): the state lives in the emulator, so there is no event to wait on."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
