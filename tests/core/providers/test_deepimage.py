"""Deep-Image.ai: one job per image, polling, webhooks elsewhere, and its documented errors."""

from __future__ import annotations

import base64

import pytest

from core import ImageRequest, InvalidRequestError, JobTimeoutError
from core.errors import (
    ProviderAuthError,
    ProviderQuotaError,
    ProviderRateLimitedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from core.images import normalize_mask
from tests.emulators import Fault, create_emulator

from .conftest import adapter, decode, half_mask, input_image, png


def _plan(op: str, **fields):
    image = input_image(png((64, 48)))
    mask = input_image(half_mask((64, 48))) if op == "inpaint" else None
    return adapter("deepimage").plan(
        ImageRequest(operation=op, prompt="p", image=image, mask=mask, **fields)
    )


def test_edit_modes_map_to_adapter_types():
    b64 = "base64," + base64.b64encode(png((64, 48))).decode()
    variation = _plan("variation", strength=0.3).body
    assert variation == {
        "url": b64,
        "background": {
            "generate": {
                "description": "p",
                "adapter_type": "control",
                "controlnet_conditioning_scale": 0.7,
            }
        },
    }
    assert _plan("sketch").body["background"]["generate"]["adapter_type"] == "control2"
    avatar = _plan("avatar").body["background"]["generate"]
    assert avatar["adapter_type"] == "face" and avatar["face_id"] is True
    assert _plan("background").body["background"]["generate"]["adapter_type"] == (
        "generate_background"
    )
    inpaint = _plan("inpaint").body["background"]["generate"]
    mask = normalize_mask(input_image(half_mask((64, 48))), input_image(png((64, 48))))
    assert inpaint["adapter_type"] == "inpainting"
    assert inpaint["ip_image2"] == "base64," + base64.b64encode(mask).decode()
    assert "strength is ignored by Deep-Image avatar" in _plan("avatar", strength=0.5).warnings


def test_upscale_and_options():
    plan = _plan("upscale", scale=3).body
    assert plan["width"] == plan["height"] == "300%" and plan["generative_upscale"] is True
    options = {"deepimage": {"model_type": "fantasy", "enhancements": ["denoise"],
                             "output_format": "png"}}  # fmt: skip
    body = adapter("deepimage").plan(ImageRequest(prompt="p", provider_options=options)).body
    assert body["background"]["generate"]["model_type"] == "fantasy"
    assert body["enhancements"] == ["denoise"] and body["output_format"] == "png"
    fantasy = adapter("deepimage", "fantasy").plan(ImageRequest(prompt="p")).body
    assert fantasy["background"]["generate"]["model_type"] == "fantasy"
    with pytest.raises(InvalidRequestError, match="output_format"):
        adapter("deepimage").plan(
            ImageRequest(prompt="p", provider_options={"deepimage": {"output_format": "gif"}})
        )
    with pytest.raises(InvalidRequestError, match="scale"):
        _plan("upscale", size=(128, 96))


async def test_generate_is_one_job_per_image_with_sample_num_as_seed(harness):
    h = await harness("deepimage")
    result = await h.generate(n=2, seed=7, size=(128, 192), negative_prompt="blur")
    posts = h.calls("/rest_api/process_result")
    assert [c.headers["x-api-key"] for c in posts] == [h.key, h.key]
    bodies = sorted(
        (c.json for c in posts), key=lambda b: b["background"]["generate"]["sample_num"]
    )
    assert bodies[0] == {
        "width": 128,
        "height": 192,
        "background": {
            "generate": {"description": "a red fox in the snow", "negative_prompt": "blur",
                         "sample_num": 7}
        },
    }  # fmt: skip
    assert bodies[1]["background"]["generate"]["sample_num"] == 8
    assert sorted(i.seed for i in result.images) == [7, 8]
    assert all(i.provider_image_id in h.emu.jobs for i in result.images)


async def test_a_job_not_done_within_the_sync_wait_is_polled(harness):
    emu = create_emulator("deepimage", sync_wait_s=0, job_duration_s=0.1)
    h = await harness("deepimage", emulator=emu)
    result = await h.generate(size=(96, 64))
    polls = [c for c in h.calls() if c.method == "GET"]
    job = result.images[0].provider_image_id
    assert polls and all(c.path == f"/rest_api/result/{job}" for c in polls)
    assert (result.images[0].width, result.images[0].height) == (96, 64)


async def test_a_job_that_never_finishes_fails_at_the_deadline_uncharged(harness):
    emu = create_emulator("deepimage", sync_wait_s=0)
    h = await harness("deepimage", emulator=emu, settings={"defaults": {"job_deadline_s": 0.4}})
    h.emu.inject(Fault(slow_job=True))
    with pytest.raises(JobTimeoutError):
        await h.generate(size=(64, 64))
    assert len(h.calls("/rest_api/process_result")) == 1 and await h.captured() == 0


async def test_documented_errors(harness):
    h = await harness("deepimage", emulator=create_emulator("deepimage", credits=0))
    with pytest.raises(ProviderQuotaError):
        await h.generate(size=(64, 64))
    assert len(h.calls()) == 1

    busy = create_emulator("deepimage", max_concurrent_jobs=0)
    h2 = await harness("deepimage", name="busy", emulator=busy)
    with pytest.raises(ProviderRateLimitedError, match="rate limited"):
        await h2.generate(size=(64, 64))
    assert len(h2.calls()) == 3  # the concurrent-job 429 is retried twice
    assert await h2.captured() == 0


async def test_a_failed_job_is_retried_and_a_lost_one_is_not(harness):
    h = await harness("deepimage")
    h.emu.inject(Fault(body={"status": "failed", "job": "j1"}), times=3)
    with pytest.raises(ProviderUnavailableError):
        await h.generate(size=(64, 64))
    assert len(h.calls()) == 3

    lost = create_emulator("deepimage", sync_wait_s=0, job_duration_s=0.05)
    h2 = await harness("deepimage", name="lost", emulator=lost)
    h2.emu.inject(Fault(path="/rest_api/result/", status=404, body={"message": "Job not found"}))
    with pytest.raises(ProviderResponseError, match="lost the job"):
        await h2.generate(size=(64, 64))
    assert len(h2.calls("/rest_api/process_result")) == 1


async def test_edit_sends_the_image_as_base64_and_keeps_its_size(harness):
    h = await harness("deepimage")
    source = png((80, 48))
    result = await h.service.edit(
        h.caller, h.request(operation="background", image=input_image(source))
    )
    (call,) = h.calls()
    assert call.json["url"] == "base64," + base64.b64encode(source).decode()
    assert decode((await h.service.image(h.caller, result.images[0].id))[1]).size == (80, 48)


async def test_balance(harness):
    h = await harness("deepimage")
    (info,) = await h.service.providers(balance=True)
    assert info.balance == "100 credits"
    assert h.calls()[0].path == "/rest_api/me"


@pytest.mark.parametrize(
    ("message", "error"),
    [("No more requests are available", ProviderQuotaError),
     ("Email has not been confirmed", ProviderAuthError)],
)  # fmt: skip
async def test_the_documented_403s(harness, message, error):
    h = await harness("deepimage")
    h.emu.inject(Fault(status=403, body={"message": message}))
    with pytest.raises(error):
        await h.generate(size=(64, 64))
    assert len(h.calls()) == 1
