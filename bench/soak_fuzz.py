"""Fuzzing (hypothesis): parsers and validators may only raise ``ImageGateError`` subclasses.

Targets (``TARGETS``):

- ``reply:<variant>``: each adapter's ``do_generate`` against scripted HTTP answers: random
  statuses and headers (``Retry-After`` included), random bytes, random JSON, and mutations of
  the provider's real reply shape (fields dropped, retyped, image links and base64 garbled),
  then every image it returns checked as the service checks it. ``+cb`` variants read a fuzzed
  callback body instead. No network: an ``httpx.MockTransport`` answers everything.
- ``request``: ``ImageRequest.checked`` with random fields, then ``plan()`` of every adapter;
  plus ``parse_size`` and ``Caller.parse`` on random text.
- ``input``: the MCP server's image parameter (``resolve_image``-level helpers: base64, data
  URIs, literal IPs, the URL fetcher with a fake resolver) on random text.
- ``image``: ``load_input``, ``inspect``, ``normalize_mask`` and ``preview`` on random and
  mutated image files.
- ``callback``: random POSTs to the ``CallbackHub`` receiver: never a 500, never a waiter
  resolved through the wrong token.

``run_target(name, examples, derandomize)`` returns (examples run, failure or None). The tests
run each target with a fixed seed and few examples; ``make soak`` runs many, randomly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core import OPERATIONS, Caller, ImageGateError, ImageRequest, parse_size
from core.callbacks import CallbackHub
from core.images import inspect, load_input, normalize_mask, preview
from core.providers import BUILTIN, ImageModel, ProviderContext
from core.settings import ProviderSettings

API = "http://api.test"
FILES = "http://files.test"
MAX_PIXELS = 1_000_000


def _png(size: tuple[int, int] = (16, 16), mode: str = "RGB", colour: Any = (90, 20, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="WEBP")
    return buf.getvalue()


SAMPLES = [
    _png(),
    _png((16, 16), "RGBA", (0, 0, 0, 0)),
    _png((16, 16), "L", 255),
    _jpeg(),
    _gif(),
    _webp(),
]
PNG_B64 = base64.b64encode(SAMPLES[0]).decode()

# --- strategies -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
urls = st.one_of(
    st.sampled_from(
        [
            f"{FILES}/a.png",
            f"{FILES}/b.jpeg?sig=x",
            "",
            "not a url",
            "http://[::1",
            "http://999.1.1.1/x.png",
            "ftp://files.test/x",
            "http://files.test/\x00",
            "//files.test/x",
            f"{FILES}/{'x' * 3000}",
        ]
    ),
    st.text(max_size=40),
)
b64s = st.one_of(
    st.just(PNG_B64),
    st.just(PNG_B64[: len(PNG_B64) // 2]),
    st.just("data:image/png;base64," + PNG_B64),
    st.sampled_from([base64.b64encode(s).decode() for s in SAMPLES]),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=60),
)


def _flip(data: bytes, at: int, value: int) -> bytes:
    """``data`` with the byte at ``at`` (modulo its length) replaced by ``value``."""
    at %= max(1, len(data))
    return data[:at] + bytes([value]) + data[at + 1 :]


image_bytes = st.one_of(
    st.sampled_from(SAMPLES),
    st.binary(max_size=300),
    st.tuples(st.sampled_from(SAMPLES), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
    st.tuples(st.sampled_from(SAMPLES), st.integers(0, 400), st.integers(0, 255)).map(
        lambda t: _flip(*t)
    ),
)


def mutated(template: Any) -> st.SearchStrategy[Any]:
    """``template`` with any part dropped, retyped or replaced; URLs and base64 garbled."""
    if isinstance(template, dict):
        parts = {
            key: st.one_of(mutated(value), mutated(value), st.just(_DROP), json_values)
            for key, value in template.items()
        }
        return st.fixed_dictionaries(parts).map(
            lambda d: {k: v for k, v in d.items() if v is not _DROP}
        )
    if isinstance(template, list):
        return st.lists(mutated(template[0]) if template else json_values, max_size=3)
    if template == "<url>":
        return urls
    if template == "<b64>":
        return b64s
    return st.one_of(st.just(template), json_scalars)


_DROP = object()


@dataclass(frozen=True)
class ReplyVariant:
    kind: str
    model: str
    templates: tuple[Any, ...]  # reply shapes, in the order the adapter asks
    callbacks: bool = False
    request: tuple[tuple[str, Any], ...] = ()


DM_IMAGE = {"id": "img1", "image_url": "<url>", "upscaled": False, "ratio": "square"}
HIVE_TASK = {
    "id": "t1",
    "status": [
        {
            "status": {"code": "0", "message": "SUCCESS"},
            "response": {"output": [{"images": [{"url": "<url>", "width": 16}]}]},
        }
    ],
}
DI_JOB = {"job": "j1", "status": "complete", "result_url": "<url>"}
REPLY_VARIANTS: dict[str, ReplyVariant] = {
    "deepmode": ReplyVariant("deepmode", "m1", ([DM_IMAGE], DM_IMAGE)),
    "deepmode+cb": ReplyVariant("deepmode", "m1", ({"message": "ok"}, DM_IMAGE), callbacks=True),
    "deepimage": ReplyVariant(
        "deepimage", "default", (DI_JOB, {"job": "j1", "status": "in_progress"}, DI_JOB),
        request=(("size", (64, 64)),),
    ),
    "deepimage+cb": ReplyVariant(
        "deepimage", "default", ({"job": "j1", "status": "received"}, DI_JOB), callbacks=True,
        request=(("size", (64, 64)),),
    ),
    "hive": ReplyVariant("hive", "v2", (HIVE_TASK,)),
    "hive+cb": ReplyVariant("hive", "v2", ({"task_id": "t1"},), callbacks=True),
    "hive_v3": ReplyVariant(
        "hive_v3", "black-forest-labs/flux-schnell",
        ({"id": "x", "output": [{"url": "<url>", "content_moderation": {"safe": True}}]},),
    ),
    "nebulablock": ReplyVariant(
        "nebulablock", "black-forest-labs/FLUX.1-schnell",
        ({"status": "success", "message": "ok", "data": [{"b64_json": "<b64>", "index": 0}]},),
    ),
    "openai": ReplyVariant(
        "openai", "dall-e-2", ({"created": 1, "data": [{"b64_json": "<b64>", "url": "<url>"}]},)
    ),
}  # fmt: skip
CALLBACK_BODIES = {
    "deepmode": [DM_IMAGE],
    "deepimage": {"job": "j1", "data": {}, "result_url": "<url>", "results": None},
    "hive": HIVE_TASK,
}

statuses = st.one_of(
    st.just(200),
    st.just(200),
    st.just(200),
    st.sampled_from([200, 201, 202, 204, 301, 400, 401, 402, 403, 404, 408, 409, 410, 413,
                     422, 429, 451, 500, 502, 503, 504]),
    st.integers(100, 599),
)  # fmt: skip
headers = st.dictionaries(
    st.sampled_from(["retry-after", "retry-after-ms", "content-type", "content-length"]),
    st.one_of(
        st.sampled_from(["1", "0.01", "-5", "nan", "1e400", "soon", "Wed, 21 Oct 2015 07:28:00 GMT",
                         "Mon, 99 Foo 2015", "application/json", "99999999"]),
        st.text(alphabet=string.printable.strip(), max_size=20),
    ),
    max_size=2,
)  # fmt: skip


def answer(template: Any) -> st.SearchStrategy[tuple[int, dict[str, str], bytes]]:
    """One HTTP answer: usually the mutated reply shape, sometimes anything at all."""
    shaped = mutated(template).map(lambda v: json.dumps(v, allow_nan=True).encode())
    body = st.one_of(
        shaped,
        shaped,
        st.just(json.dumps(template).encode()),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.binary(max_size=80),
    )
    return st.tuples(statuses, headers, body)


class _Transport(httpx.MockTransport):
    """``MockTransport`` that refuses what the real transport refuses before any I/O."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https") or not request.url.host:
            raise httpx.UnsupportedProtocol(f"unsupported URL {request.url}", request=request)
        return await super().handle_async_request(request)


class _Waiter:
    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.url = "http://callbacks.test/cb/token"

    async def wait(self, timeout: float) -> Any:
        if self.payload is _TIMEOUT:
            raise TimeoutError
        return self.payload

    def close(self) -> None:
        pass


_TIMEOUT = object()


class _Hub:
    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def expect(self) -> _Waiter:
        return _Waiter(self.payload)


def _model(kind: str, model: str, http: Any, hub: Any = None) -> ImageModel:
    settings = ProviderSettings(
        kind=kind,  # type: ignore[arg-type]
        base_url=API,
        api_key_env="FUZZ_KEY",
        models=[model],
        timeout_s=1,
        poll_interval_s=0.001,
    )
    ctx = ProviderContext(
        name=kind, settings=settings, http=http, api_key="sk-fuzz-secret", callbacks=hub,
        max_download_bytes=200_000,
    )  # fmt: skip
    return BUILTIN[kind](ctx, model)


# --- targets ------------------------------------------------------------------------------------


class Untyped(AssertionError):
    """An exception that is not an ImageGateError escaped (the fuzz failure)."""


def _typed(run: Callable[[], Any]) -> None:
    try:
        run()
    except ImageGateError:
        pass
    except Exception as exc:
        raise Untyped(f"{type(exc).__name__}: {exc}") from exc


def reply_target(name: str, loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    variant = REPLY_VARIANTS[name]
    templates = variant.templates
    callback = (
        st.one_of(mutated(CALLBACK_BODIES[variant.kind]), json_values, st.just(_TIMEOUT))
        if variant.callbacks
        else st.just(None)
    )
    replies = st.tuples(*(answer(t) for t in templates))
    downloads = st.lists(st.tuples(statuses, image_bytes), min_size=1, max_size=3)

    def example(script: tuple[Any, ...], files: list[Any], payload: Any) -> None:
        queue = list(script)
        file_queue = list(files)

        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.host == "files.test":
                status, data = file_queue.pop(0) if len(file_queue) > 1 else file_queue[0]
                return httpx.Response(status, content=data)
            if not queue:
                return httpx.Response(500, json={"message": "script exhausted"})
            status, head, body = queue.pop(0)
            return httpx.Response(status, headers=head, content=body)

        async def go() -> None:
            async with httpx.AsyncClient(transport=_Transport(handle), trust_env=False) as http:
                hub = _Hub(payload) if variant.callbacks else None
                model = _model(variant.kind, variant.model, http, hub)
                request = ImageRequest(prompt="fuzz", **dict(variant.request))
                plan = model.plan(request)
                images = await model.do_generate(plan, 1, time.monotonic() + 0.5)
                for image in images:
                    inspect(image.data, max_pixels=MAX_PIXELS)

        _typed(lambda: loop.run_until_complete(go()))

    return given(replies, downloads, callback)(example)


INPUTS = [
    None,
    load_input(SAMPLES[0], max_bytes=10**6, max_pixels=MAX_PIXELS),
    load_input(SAMPLES[1], max_bytes=10**6, max_pixels=MAX_PIXELS),
    load_input(SAMPLES[2], max_bytes=10**6, max_pixels=MAX_PIXELS),
    load_input(_png((33, 17)), max_bytes=10**6, max_pixels=MAX_PIXELS),
    load_input(_png((64, 64), "L", 0), max_bytes=10**6, max_pixels=MAX_PIXELS),
]
PLANNERS = [
    ("placeholder", "default"),
    ("deepmode", "m1"),
    ("deepimage", "default"),
    ("hive", "v2"),
    ("hive_v3", "black-forest-labs/flux-schnell"),
    ("hive_v3", "stabilityai/sdxl"),
    ("nebulablock", "black-forest-labs/FLUX.1-schnell"),
    ("nebulablock", "black-forest-labs/FLUX.1-Fill-dev"),
    ("openai", "dall-e-2"),
    ("openai", "dall-e-3"),
    ("openai", "gpt-image-1"),
    ("openai", "some-compatible-model"),
]
_MODELS = [_model(kind, model, None) for kind, model in PLANNERS]
texts = st.one_of(st.text(max_size=60), st.sampled_from(["", "a cat", "\x00\x1b", "x" * 5000]))
numbers = st.one_of(
    st.none(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=5)
)
request_fields = st.fixed_dictionaries(
    {},
    optional={
        "operation": st.one_of(st.sampled_from(list(OPERATIONS)), st.text(max_size=8)),
        "prompt": texts,
        "negative_prompt": st.one_of(st.none(), texts),
        "n": numbers,
        "size": st.one_of(st.none(), st.tuples(numbers, numbers),
                          st.lists(numbers, max_size=3), numbers),
        "aspect_ratio": st.one_of(st.none(), st.text(max_size=8),
                                  st.sampled_from(["1:1", "16:9", "3:4", "9:16", "0:1", "33:1"])),
        "seed": numbers,
        "steps": numbers,
        "guidance": numbers,
        "strength": numbers,
        "scale": numbers,
        "model": st.one_of(st.none(), st.text(max_size=20)),
        "image": st.sampled_from(INPUTS),
        "mask": st.sampled_from(INPUTS),
        "provider_options": st.one_of(
            st.dictionaries(st.sampled_from([k for k, _ in PLANNERS] + ["x"]),
                            st.dictionaries(st.sampled_from(["quality", "style", "upscale",
                                            "output_format", "background", "model_type",
                                            "enhancements", "output_quality", "user", "zzz"]),
                                            json_values, max_size=3), max_size=2),
            json_values),
    },
)  # fmt: skip


def request_target(loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    def example(fields: dict[str, Any], size_text: str, user_text: str) -> None:
        def run() -> None:
            try:
                request = ImageRequest.checked(**fields)
            except ImageGateError:
                return
            for model in _MODELS:
                try:
                    model.plan(request)
                except ImageGateError:
                    pass

        _typed(run)
        _typed(lambda: parse_size(size_text))
        _typed(lambda: Caller.parse(user_text))

    return given(request_fields, st.text(max_size=12), st.text(max_size=20))(example)


def input_target(loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    from mcp_server.inputs import UrlFetcher, decode_base64, decode_data_uri, is_public, literal_ip

    async def resolver(host: str, port: int) -> list[str]:
        return {"public.test": ["93.184.216.34"], "private.test": ["10.0.0.1"]}.get(host, [])

    def transports(pins: dict[str, list[str]]) -> httpx.AsyncBaseTransport:
        for ips in pins.values():
            for ip in ips:
                import ipaddress

                assert is_public(ipaddress.ip_address(ip)), f"pinned a private address {ip}"
        redirect = httpx.Response(302, headers={"location": "https://private.test/"})
        return httpx.MockTransport(lambda r: redirect)

    fetcher = UrlFetcher(resolver=resolver, transport_factory=transports, timeout_s=2)
    values = st.one_of(
        st.text(max_size=80),
        st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \n", max_size=80),
        st.builds(lambda h, p: f"https://{h}/{p}", st.text(max_size=20), st.text(max_size=10)),
        st.builds(lambda h: f"data:{h}", st.text(max_size=40)),
        st.sampled_from(["https://public.test/x", "https://private.test/x", "https://0x7f.1/"]),
    )

    def example(value: str) -> None:
        _typed(lambda: decode_base64(value, max_bytes=10_000))
        _typed(lambda: decode_data_uri(value, max_bytes=10_000))
        literal_ip(value)  # never raises
        _typed(lambda: loop.run_until_complete(fetcher.fetch(value, max_bytes=10_000)))

    return given(values)(example)


def image_target(loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    def example(data: bytes, mask_data: bytes) -> None:
        def run() -> None:
            image = load_input(data, max_bytes=10**6, max_pixels=MAX_PIXELS)
            inspect(data, max_pixels=MAX_PIXELS)
            preview(data, max_edge=8, max_bytes=2_000)
            try:  # as a job checks a mask: its header, then (before any plan) all of it
                mask = load_input(mask_data, max_bytes=10**6, max_pixels=MAX_PIXELS)
                inspect(mask_data, max_pixels=MAX_PIXELS)
            except ImageGateError:
                mask = image
            normalize_mask(mask, image)

        _typed(run)

    return given(image_bytes, image_bytes)(example)


def callback_target(loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:

    def example(token: str, body: bytes, content_type: str, use_real: bool) -> None:
        async def go() -> None:
            hub = CallbackHub("http://127.0.0.1:9")
            waiter = hub.expect()
            path = f"{hub.path}/{waiter.token if use_real else token}"
            transport = httpx.ASGITransport(app=hub.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
                try:
                    response = await client.post(
                        path, content=body, headers={"content-type": content_type}
                    )
                except (httpx.InvalidURL, UnicodeEncodeError):
                    return  # the client refused to send it at all
            assert response.status_code in (200, 307, 400, 404, 405, 413), response.status_code
            if waiter.future.done():
                assert use_real and response.status_code == 200, "resolved by a wrong token"
            waiter.close()

        loop.run_until_complete(go())

    return given(
        st.text(max_size=40), st.binary(max_size=200), st.text(max_size=20), st.booleans()
    )(example)


Factory = Callable[[asyncio.AbstractEventLoop], Callable[[Any], Any]]
TARGETS: dict[str, Factory] = {
    **{
        f"reply:{name}": (lambda loop, name=name: reply_target(name, loop))
        for name in REPLY_VARIANTS
    },
    "request": request_target,
    "input": input_target,
    "image": image_target,
    "callback": callback_target,
}


def run_target(name: str, examples: int, *, derandomize: bool) -> tuple[int, str | None]:
    """Run one target for ``examples`` examples: (examples run, failure text or None)."""
    count = 0
    loop = asyncio.new_event_loop()
    test = TARGETS[name](loop)
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal count
        count += 1
        inner(*args, **kwargs)

    test.hypothesis.inner_test = counted  # type: ignore[attr-defined]
    configured = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )(test)
    try:
        configured()
    except Exception as exc:
        return count, f"{name}: {_describe(exc)}"[:4000]
    finally:
        loop.close()
    return count, None


def _describe(exc: BaseException) -> str:
    """The failure with hypothesis's notes (the falsifying example), each one for a group."""
    if isinstance(exc, BaseExceptionGroup):
        return " | ".join(_describe(sub) for sub in exc.exceptions)
    notes = " ".join(getattr(exc, "__notes__", []))
    return f"{type(exc).__name__}: {exc} [{notes}]"
