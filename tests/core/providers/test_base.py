"""The shared adapter helpers in ``core.providers.base``."""

from __future__ import annotations

import time

import httpx
import pytest

from core import ContentRejectedError, ImageRequest, InvalidRequestError
from core.callbacks import CallbackHub
from core.errors import (
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from core.providers.base import (
    ProviderContext,
    call_api,
    download,
    error_for_status,
    failed_job,
    keep_input_size,
    moderation_refusal,
    parse_options,
    size_for_aspect,
    snap,
    wait_for_callback,
)
from core.settings import ProviderSettings

from .conftest import adapter, input_image, png

SECRET = "sk-very-secret-key"


def _ctx(handler=None) -> ProviderContext:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(200)))
    return ProviderContext(
        name="prov",
        settings=ProviderSettings(kind="openai", timeout_s=5),
        http=httpx.AsyncClient(transport=transport),
        api_key=SECRET,
        max_download_bytes=1000,
    )


def test_options_for_the_name_overlay_those_for_the_kind():
    model = adapter("openai", "dall-e-3", name="oa")
    options = {"openai": {"quality": "standard", "style": "vivid"}, "oa": {"quality": "hd"}}
    parsed = parse_options(model, ImageRequest(prompt="p", provider_options=options), model.Options)
    assert (parsed.quality, parsed.style) == ("hd", "vivid")
    bad = ImageRequest(prompt="p", provider_options={"oa": {"style": "loud"}})
    with pytest.raises(InvalidRequestError, match=r"'style'.*allowed: quality \(dall-e-3"):
        parse_options(model, bad, model.Options)


def test_size_for_aspect():
    assert size_for_aspect(1.0) == (1024, 1024)
    assert size_for_aspect(16 / 9) == (1344, 768)
    assert size_for_aspect(9 / 16, area=512 * 512, low=256) == (384, 704)
    assert size_for_aspect(32.0, low=256, high=2048) == (2048, 256)


def test_snap_rounds_to_the_nearest_multiple_within_the_bounds():
    assert snap(100, 64, 64, 3072) == 128
    assert snap(20, 64, 64) == 64
    assert snap(5000, 64, 64, 3072) == 3072
    assert snap(4999, 16, 16) == 4992  # no upper bound given


def test_a_failed_job_is_a_refusal_only_when_its_message_says_so():
    ctx = _ctx()
    assert isinstance(failed_job(ctx, "Blocked by Moderation", "error"), ContentRejectedError)
    flagged = failed_job(ctx, "image flagged", "error", marks=("flagged",))
    assert isinstance(flagged, ContentRejectedError)
    error = failed_job(ctx, f"bad key {SECRET}", 3)
    assert type(error) is ProviderResponseError and SECRET not in str(error)
    assert "could not make the images (3)" in str(failed_job(ctx, "", 3))


def test_keep_input_size():
    image = input_image(png((160, 80)))
    keep_input_size(ImageRequest(operation="variation", image=image, aspect_ratio="2:1"), "x")
    keep_input_size(ImageRequest(operation="variation", image=image, size=(160, 80)), "x")
    with pytest.raises(InvalidRequestError, match=r"keeps the input image.s size \(160x80\)"):
        keep_input_size(ImageRequest(operation="variation", image=image, size=(160, 160)), "x")


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (400, {"error": "content_moderation", "message": "Prompt rejected"}, True),  # deepmode
        (400, {"message": "Image flagged as NSFW", "code": "NSFW_DETECTED"}, True),  # deepimage
        (400, {"status_code": 400, "message": "x", "code": "content_moderation"}, True),  # hive
        (400, {"status": "failed", "message": "Prompt rejected by content moderation"}, True),
        (400, {"error": {"message": "safety system", "code": "content_policy_violation"}}, True),
        (451, {"message": "unavailable for legal reasons"}, True),
        (400, {"message": "prompt is required"}, False),
        (400, "not json", False),
    ],
)
def test_moderation_refusals_are_recognised(status, body, refused):
    response = (
        httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status)
    )
    found = moderation_refusal(_ctx(), response)
    assert isinstance(found, ContentRejectedError) if refused else found is None
    if refused:
        assert "nothing was charged" in found.message and found.provider == "prov"


def test_errors_never_carry_the_key():
    response = httpx.Response(400, json={"message": f"key {SECRET} is bad"})
    error = error_for_status(_ctx(), response)
    assert SECRET not in error.message and SECRET not in error.detail
    assert "[redacted]" in error.message


async def test_call_api_prefers_the_adapters_classification():
    ctx = _ctx(lambda request: httpx.Response(404, json={"message": "No user found"}))

    def classify(response):
        return ProviderResponseError("mine", provider="prov")

    with pytest.raises(ProviderResponseError, match="mine"):
        await call_api(ctx, "GET", "http://x/", deadline=time.monotonic() + 5, classify=classify)


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (httpx.Response(403, text="<Error>AuthenticationFailed</Error>"), ProviderResponseError,
         "expired"),
        (httpx.Response(503, json={"message": "down"}), ProviderUnavailableError, "server error"),
        (httpx.Response(200, content=b"x" * 2000), ProviderResponseError, "over"),
    ],
    ids=["expired", "server-error", "too-large"],
)  # fmt: skip
async def test_download_failures(response, error, text):
    ctx = _ctx(lambda request: response)
    with pytest.raises(error, match=text):
        await download(ctx, "http://cdn/x.png", deadline=time.monotonic() + 5)


async def test_download_never_sends_the_key():
    seen = []

    def handler(request):
        seen.append(dict(request.headers))
        return httpx.Response(200, content=b"ok")

    assert await download(_ctx(handler), "http://cdn/x.png", deadline=time.monotonic() + 5)
    assert not any(SECRET in value for value in seen[0].values())


async def test_a_callback_that_never_comes_times_out_and_is_closed():
    hub = CallbackHub("http://127.0.0.1:1")
    waiter = hub.expect()
    with pytest.raises(ProviderTimeoutError, match="never called back"):
        await wait_for_callback(_ctx(), waiter, time.monotonic() + 0.05)
    assert waiter.token not in hub._waiters
