"""NebulaBlock: the generation body, FLUX.1-Fill-dev inpainting, timings, credits."""

from __future__ import annotations

import base64

import pytest

from core import ImageRequest, InvalidRequestError
from core.errors import ProviderQuotaError, ProviderRateLimitedError, ProviderResponseError
from core.images import normalize_mask
from tests.emulators import Fault, create_emulator

from .conftest import adapter, decode, half_mask, input_image, png

FILL = "black-forest-labs/FLUX.1-Fill-dev"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


def test_fill_dev_sizes_are_multiples_of_16():
    model = adapter("nebulablock", FILL)
    image, mask = input_image(png((70, 64))), input_image(half_mask((70, 64)))
    plan = model.plan(ImageRequest(operation="inpaint", image=image, mask=mask, prompt="p"))
    assert (plan.body["width"], plan.body["height"]) == (64, 64)
    assert any("multiples of 16" in w for w in plan.warnings)
    with pytest.raises(InvalidRequestError, match="multiples of 16"):
        model.plan(
            ImageRequest(operation="inpaint", image=image, mask=mask, prompt="p", size=(100, 100))
        )
    with pytest.raises(InvalidRequestError, match="inpaint"):
        model.plan(ImageRequest(prompt="p"))


async def test_generate_body_and_timings_in_image_metadata(harness):
    h = await harness("nebulablock", model=SDXL)
    result = await h.generate(
        size=(128, 96), steps=25, guidance=9.0, seed=11, negative_prompt="text"
    )
    (call,) = h.calls()
    assert call.path == "/api/v1/images/generation"
    assert call.headers["authorization"] == f"Bearer {h.key}"
    assert call.json == {
        "model": SDXL,
        "prompt": "a red fox in the snow",
        "negative_prompt": "text",
        "width": 128,
        "height": 96,
        "num_steps": 25,
        "guidance_scale": 9.0,
        "seed": 11,
    }
    job = await h.service.job(h.caller, result.job_id)
    assert isinstance(job.images[0].meta["timings"]["inference"], float)
    assert job.images[0].seed == 11 and (job.images[0].width, job.images[0].height) == (128, 96)


async def test_inpaint_sends_raw_base64_image_and_mask(harness):
    h = await harness("nebulablock", model=FILL)
    source, mask = png((80, 64)), half_mask((80, 64))
    request = h.request(operation="inpaint", image=input_image(source), mask=input_image(mask))
    result = await h.service.edit(h.caller, request)
    (call,) = h.calls()
    expected_mask = normalize_mask(input_image(mask), input_image(source))
    assert call.json["image"] == base64.b64encode(source).decode()
    assert call.json["mask"] == base64.b64encode(expected_mask).decode()
    assert not call.json["image"].startswith("data:")
    assert (call.json["width"], call.json["height"]) == (80, 64)
    data = (await h.service.image(h.caller, result.images[0].id))[1]
    assert decode(data).size == (80, 64)


async def test_a_failed_status_in_a_200_and_an_empty_balance(harness):
    h = await harness("nebulablock")
    h.emu.inject(Fault(body={"status": "failed", "message": "GPU pool exhausted", "data": None}))
    with pytest.raises(ProviderResponseError, match="GPU pool exhausted"):
        await h.generate()
    poor = create_emulator("nebulablock", credits=0.001)
    h2 = await harness("nebulablock", name="poor", emulator=poor)
    with pytest.raises(ProviderQuotaError):
        await h2.generate()
    assert len(h2.calls()) == 1 and await h2.captured() == 0


async def test_a_long_retry_after_past_the_deadline_is_not_waited_for(harness):
    h = await harness("nebulablock", emulator=create_emulator("nebulablock", rpm=1))
    await h.generate()
    with pytest.raises(ProviderRateLimitedError):
        await h.generate()
    assert len(h.calls()) == 2 and await h.captured() == 1


async def test_balance(harness):
    h = await harness("nebulablock")
    (info,) = await h.service.providers(balance=True)
    assert info.balance == "$100.00"
