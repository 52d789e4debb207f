"""OpenAI Images (and compatible services): sizes, options, edits with converted masks."""

from __future__ import annotations

import pytest

from core import ImageRequest, InvalidRequestError
from core.errors import ProviderQuotaError
from tests.emulators import Fault
from tests.emulators.base import StoredFile, render_image

from .conftest import adapter, decode, half_mask, input_image, png


def test_sizes_and_aspect_ratios_per_model():
    dalle3 = adapter("openai", "dall-e-3")
    assert dalle3.capabilities.max_images_per_call == 1
    plan = dalle3.plan(ImageRequest(prompt="p", aspect_ratio="16:9"))
    assert plan.call.json["size"] == "1792x1024"
    assert any("16:9 was served as 1792x1024" in w for w in plan.warnings)
    gpt = adapter("openai", "gpt-image-1").plan(ImageRequest(prompt="p", aspect_ratio="3:2"))
    assert gpt.call.json == {"prompt": "p", "model": "gpt-image-1", "size": "1536x1024"}
    with pytest.raises(InvalidRequestError, match="no 16:9 size"):
        adapter("openai", "dall-e-2").plan(ImageRequest(prompt="p", aspect_ratio="16:9"))
    with pytest.raises(InvalidRequestError, match="256x256, 512x512, 1024x1024"):
        adapter("openai", "dall-e-2").plan(ImageRequest(prompt="p", size=(640, 640)))


def test_options_are_checked_per_model_family():
    def plan(model, **options):
        request = ImageRequest(prompt="p", provider_options={"openai": options})
        return adapter("openai", model).plan(request).call.json

    assert plan("dall-e-3", quality="hd", style="vivid", user="u1") == {
        "prompt": "p", "model": "dall-e-3", "response_format": "b64_json",
        "quality": "hd", "style": "vivid", "user": "u1",
    }  # fmt: skip
    assert plan("gpt-image-1", background="transparent", output_format="webp")["background"]
    with pytest.raises(InvalidRequestError, match="dall-e-3 only"):
        plan("dall-e-2", style="vivid")
    with pytest.raises(InvalidRequestError, match="low|medium|high|auto"):
        plan("gpt-image-1", quality="hd")
    with pytest.raises(InvalidRequestError, match="gpt-image models only"):
        plan("dall-e-3", output_format="png")
    # An unknown model on a compatible service: sizes and options pass through unchecked.
    assert plan("my-flux", quality="ultra")["quality"] == "ultra"
    compat = adapter("openai", "my-flux").plan(ImageRequest(prompt="p", size=(640, 480)))
    assert compat.call.json["size"] == "640x480"


async def test_generations_body(harness):
    h = await harness("openai", model="dall-e-3")
    result = await h.generate(
        size=(1024, 1792), provider_options={"openai": {"quality": "hd", "style": "natural"}}
    )
    (call,) = h.calls()
    assert call.path == "/v1/images/generations"
    assert call.headers["authorization"] == f"Bearer {h.key}"
    assert call.json == {
        "prompt": "a red fox in the snow",
        "model": "dall-e-3",
        "size": "1024x1792",
        "response_format": "b64_json",
        "quality": "hd",
        "style": "natural",
        "n": 1,
    }
    job = await h.service.job(h.caller, result.job_id)
    assert job.images[0].meta["revised_prompt"].endswith("a red fox in the snow")


async def test_edit_converts_the_mask_to_transparent_is_repaint(harness):
    h = await harness("openai")
    source = png((64, 64))
    request = h.request(
        operation="inpaint", image=input_image(source), mask=input_image(half_mask()), n=2
    )
    result = await h.service.edit(h.caller, request)
    (call,) = h.calls()
    assert call.path == "/v1/images/edits"
    assert call.form == {
        "prompt": "a red fox in the snow",
        "model": "dall-e-2",
        "size": "256x256",
        "response_format": "b64_json",
        "n": "2",
    }
    assert "dall-e-2 makes 256x256, 512x512, 1024x1024: the result will be 256x256" in (
        result.warnings
    )
    image, mask = decode(call.files["image"]), decode(call.files["mask"])
    assert image.format == "PNG" and image.mode == "RGBA"
    assert (
        mask.mode == "RGBA" and mask.getpixel((0, 0))[3] == 0 and mask.getpixel((63, 0))[3] == 255
    )
    assert len(result.images) == 2


async def test_gpt_image_variation_is_an_edit_without_mask(harness):
    h = await harness("openai", model="gpt-image-1")
    options = {"openai": {"output_format": "webp"}}
    result = await h.service.edit(
        h.caller, h.request(operation="variation", image=input_image(), provider_options=options)
    )
    (call,) = h.calls()
    assert "mask" not in call.files and "response_format" not in call.form
    assert call.form["output_format"] == "webp" and result.images[0].mime == "image/webp"


async def test_url_answers_are_downloaded(harness):
    h = await harness("openai")
    h.emu.files["x.png"] = StoredFile(render_image("x", (32, 32)), "image/png", 1e12)
    h.emu.inject(Fault(body={"created": 1, "data": [{"url": "http://openai.test/_files/x.png"}]}))
    result = await h.generate()
    assert (result.images[0].width, result.images[0].height) == (32, 32)


async def test_an_empty_account_429_is_not_retried(harness):
    h = await harness("openai")
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                      "param": None, "code": "insufficient_quota"}}  # fmt: skip
    h.emu.inject(Fault(status=429, body=body))
    with pytest.raises(ProviderQuotaError):
        await h.generate()
    assert len(h.calls()) == 1 and await h.captured() == 0


def test_edits_pick_the_listed_size_of_the_input_shape():
    gpt = adapter("openai", "gpt-image-1")
    wide = input_image(png((300, 200)))
    plan = gpt.plan(ImageRequest(operation="variation", prompt="p", image=wide))
    assert plan.call.form["size"] == "1536x1024"
    with pytest.raises(InvalidRequestError, match="no 320x200 size"):
        gpt.plan(
            ImageRequest(operation="variation", prompt="p", image=input_image(png((320, 200))))
        )
    with pytest.raises(InvalidRequestError, match="keeps the input image's size"):
        gpt.plan(ImageRequest(operation="variation", prompt="p", image=wide, size=(1024, 1024)))
    compat = adapter("openai", "my-model").plan(
        ImageRequest(
            operation="inpaint", prompt="p", image=wide, mask=input_image(half_mask((300, 200)))
        )
    )
    assert "size" not in compat.call.form
