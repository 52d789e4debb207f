"""Hive v2 (task API) and v3 (per-model endpoints), and their moderation refusals."""

from __future__ import annotations

import pytest

from core import ContentRejectedError, ImageRequest, InvalidRequestError
from core.errors import ProviderAuthError
from tests.emulators import Fault, create_emulator

from .conftest import adapter


def test_v2_serves_1024_square_only_and_has_no_options():
    model = adapter("hive")
    assert model.plan(ImageRequest(prompt="p", aspect_ratio="1:1")).body == {
        "text_data": "p",
        "options": {},
    }
    with pytest.raises(InvalidRequestError, match="1024x1024"):
        model.plan(ImageRequest(prompt="p", size=(512, 512)))
    with pytest.raises(InvalidRequestError, match="1024x1024"):
        model.plan(ImageRequest(prompt="p", aspect_ratio="16:9"))
    with pytest.raises(InvalidRequestError, match="allowed: none"):
        model.plan(ImageRequest(prompt="p", provider_options={"hive": {"output_format": "png"}}))


async def test_v2_sync_task_body_and_token_auth(harness):
    h = await harness("hive")
    result = await h.generate(n=3, negative_prompt="grass, pool")
    (call,) = h.calls()
    assert call.path == "/api/v2/task/sync"
    assert call.headers["authorization"] == f"Token {h.key}"
    assert call.json == {
        "text_data": "a red fox in the snow",
        "options": {"neg_text": "grass, pool", "num_images": 3},
    }
    assert [(i.width, i.height, i.mime) for i in result.images] == [(1024, 1024, "image/png")] * 3


@pytest.mark.parametrize("status", [400, 451])
async def test_v2_moderation_refusal_is_a_content_error(harness, status):
    emu = create_emulator("hive", image_size=(64, 64), moderation_status=status)
    h = await harness("hive", emulator=emu)
    h.emu.inject(Fault(moderation=True))
    with pytest.raises(ContentRejectedError, match="flagged"):
        await h.generate()
    assert len(h.calls()) == 1 and await h.captured() == 0


async def test_v2_task_with_a_moderation_status_is_a_content_error(harness):
    h = await harness("hive")
    refused = {
        "id": "t1",
        "status": [{"status": {"code": "1", "message": "Image flagged by visual moderation"}}],
    }
    h.emu.inject(Fault(body=refused))
    with pytest.raises(ContentRejectedError, match="visual moderation"):
        await h.generate()
    assert len(h.calls()) == 1


def test_v3_maps_fields_per_model_family():
    sdxl = adapter("hive_v3", "stabilityai/sdxl")
    request = ImageRequest(
        prompt="p", negative_prompt="n", steps=20, guidance=7.5, aspect_ratio="16:9",
        provider_options={"hive_v3": {"output_format": "png", "output_quality": 80}},
    )  # fmt: skip
    plan = sdxl.plan(request)
    assert plan.body == {
        "input": {
            "prompt": "p",
            "negative_prompt": "n",
            "image_size": {"width": 1344, "height": 768},
            "num_inference_steps": 20,
            "guidance_scale": 7.5,
            "output_format": "png",
            "output_quality": 80,
        }
    }
    assert plan.warnings == ()
    flux = adapter("hive_v3", "black-forest-labs/flux-schnell").plan(request)
    assert (
        "negative_prompt" not in flux.body["input"] and "guidance_scale" not in flux.body["input"]
    )
    assert len(flux.warnings) == 2
    with pytest.raises(InvalidRequestError, match="1-50 steps"):
        sdxl.plan(ImageRequest(prompt="p", steps=60))
    with pytest.raises(InvalidRequestError, match="256-2048"):
        sdxl.plan(ImageRequest(prompt="p", size=(128, 128)))
    with pytest.raises(InvalidRequestError, match="output_quality"):
        sdxl.plan(ImageRequest(prompt="p", provider_options={"hive_v3": {"output_quality": 0}}))


async def test_v3_body_bearer_auth_and_seed(harness):
    h = await harness("hive_v3", model="stabilityai/sdxl")
    result = await h.generate(
        n=2,
        seed=5,
        size=(256, 320),
        steps=12,
        provider_options={"hive_v3": {"output_format": "png"}},
    )
    (call,) = h.calls()
    assert call.path == "/api/v3/stabilityai/sdxl"
    assert call.headers["authorization"] == f"Bearer {h.key}"
    assert call.json == {
        "input": {
            "prompt": "a red fox in the snow",
            "image_size": {"width": 256, "height": 320},
            "num_inference_steps": 12,
            "output_format": "png",
            "num_images": 2,
            "seed": 5,
        }
    }
    assert [(i.width, i.height, i.mime) for i in result.images] == [(256, 320, "image/png")] * 2
    assert result.images[0].seed == 5


async def test_v3_emoji_is_transparent_png(harness):
    h = await harness("hive_v3", model="hive/flux-schnell-emoji")
    result = await h.generate()
    assert result.images[0].mime == "image/png"


async def test_v3_unsafe_output_is_a_content_error(harness):
    h = await harness("hive_v3")
    unsafe = {"id": "x", "output": [{"url": "http://hive.test/_files/none.png",
                                     "content_moderation": {"safe": False}}]}  # fmt: skip
    h.emu.inject(Fault(body=unsafe))
    with pytest.raises(ContentRejectedError, match="flagged"):
        await h.generate()
    assert await h.captured() == 0


async def test_a_v2_key_does_not_work_on_v3(harness):
    emu = create_emulator("hive", image_size=(64, 64))
    h = await harness("hive_v3", emulator=emu)
    emu.v3_api_key = emu.api_key + "-v3-only"
    with pytest.raises(ProviderAuthError, match="refused our API key"):
        await h.generate()
