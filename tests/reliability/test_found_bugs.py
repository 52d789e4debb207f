"""Regression tests for the core bugs the reliability work found (each failed before its fix).

The crash-recovery bugs (a job killed after its charge was recorded "interrupted, nothing was
charged"; images of a job killed before its charge handed out free on a retry) are covered by
``test_crash_recovery.py``, whose kill points include both moments.
"""

from __future__ import annotations

import time

import httpx
import pytest

from core import Caller, ImageRequest, InvalidRequestError, parse_size
from core.errors import ProviderRateLimitedError, ProviderResponseError
from core.providers.base import ProviderContext, call_api, download, error_for_status
from core.settings import ProviderSettings
from tests.conftest import png_bytes


def _ctx(handler=None) -> ProviderContext:
    settings = ProviderSettings(kind="openai", base_url="http://api.test", models=["m"])
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler)) if handler else None
    return ProviderContext(name="p", settings=settings, http=http, api_key="sk-x-123456789")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["soon", "Mon, 99 Foo 2015", "Wed, 21 Oct 99999 07:28:00 GMT"])
def test_a_garbled_retry_after_is_a_rate_limit_not_a_crash(value):
    ctx = _ctx()
    error = error_for_status(ctx, httpx.Response(429, headers={"retry-after": value}))
    assert isinstance(error, ProviderRateLimitedError) and error.retry_after is None


@pytest.mark.parametrize("url", ["http://[::1", "http://999.1.1.1/x.png", "http://x/\x1f"])
async def test_an_image_link_that_is_not_a_url_is_a_provider_error(url):
    ctx = _ctx(lambda r: httpx.Response(200, content=b"x"))
    with pytest.raises(ProviderResponseError, match="not a valid URL"):
        await download(ctx, url, deadline=time.monotonic() + 5)
    await ctx.http.aclose()


async def test_an_id_that_cannot_go_in_a_url_is_a_provider_error():
    ctx = _ctx(lambda r: httpx.Response(200, json={}))
    with pytest.raises(ProviderResponseError):
        await call_api(ctx, "GET", "http://api.test/result/\x00", deadline=time.monotonic() + 5)
    await ctx.http.aclose()


@pytest.mark.parametrize("text", ["\u00b2x\u00b2", "64x\u00b9"])
def test_unicode_digits_in_a_size_are_refused_not_a_crash(text):
    with pytest.raises(InvalidRequestError, match="WIDTHxHEIGHT"):
        parse_size(text)


def test_unicode_digits_in_an_aspect_ratio_are_refused_clearly():
    with pytest.raises(InvalidRequestError, match="W:H"):
        ImageRequest.checked(prompt="x", aspect_ratio="\u00b2:1")


async def test_a_bad_mask_for_the_placeholder_is_refused_before_any_hold(service):
    image = await service.load_input(png_bytes((64, 64)))
    for mask_png in (png_bytes((32, 32), 255, "L"), png_bytes((64, 64), 0, "L")):
        mask = await service.load_input(mask_png, what="mask")
        request = ImageRequest(operation="inpaint", prompt="x", image=image, mask=mask)
        with pytest.raises(InvalidRequestError):
            await service.edit(Caller(frontend="cli", user_id="u"), request)
    assert (await service.db.fetchone("SELECT count(*) FROM hold"))[0] == 0
