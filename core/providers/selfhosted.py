"""What the Stable Diffusion backends an operator or a community runs have in common.

The WebUI (``sdwebui``), ComfyUI (``comfyui``) and the AI Horde (``horde``) serve without a
key, take steps and guidance, default to SD 1.5's 512x512, and want sides on the model's
latent grid. The WebUI's API named the sampling settings, and the Horde kept those names.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError
from ..types import ImageRequest
from .base import ImageModel, basic_auth, size_for_aspect

DEFAULT_SIZE = (512, 512)  # what these backends make when no size is asked for


class SelfHostedImageModel(ImageModel):
    """Base of the self-hosted and community backends: no key needed, ``steps`` and
    ``guidance`` passed on, HTTP basic auth from a ``user:password`` key when one is
    configured (a WebUI with ``--api-auth``, a server behind a proxy)."""

    key_optional = True
    tunes = frozenset({"steps", "guidance"})

    def auth(self) -> dict[str, Any]:
        return {"auth": basic_auth(self.ctx)}


def sd_size(
    request: ImageRequest, who: str, *, multiple: int = 8, high: int | None = None, hint: str = ""
) -> tuple[int, int]:
    """The size to make: the request's, about ``DEFAULT_SIZE``'s area in its aspect ratio, or
    ``DEFAULT_SIZE``.

    Raises:
        InvalidRequestError: a side that is not a multiple of ``multiple`` or over ``high``;
            ``hint`` follows the message (sizes to try).
    """
    area = DEFAULT_SIZE[0] * DEFAULT_SIZE[1]
    if request.size is not None:
        too_large = high is not None and max(request.size) > high
        if too_large or any(side % multiple for side in request.size):
            span = f" from {multiple} to {high}" if high else ""
            raise InvalidRequestError(
                f"{who} makes sides in multiples of {multiple}{span};"
                f" {request.size[0]}x{request.size[1]} is not{hint}"
            )
        return request.size
    ratio = request.ratio()
    if ratio is None:
        return DEFAULT_SIZE
    return size_for_aspect(ratio, area=area, high=high or 4096)


def sampling_params(request: ImageRequest, sampler: str | None = None) -> dict[str, Any]:
    """The request's steps and guidance, and ``sampler``, under the WebUI's names (``steps``,
    ``cfg_scale``, ``sampler_name``); only those that are set."""
    params: dict[str, Any] = {}
    if request.steps is not None:
        params["steps"] = request.steps
    if request.guidance is not None:
        params["cfg_scale"] = request.guidance
    if sampler:
        params["sampler_name"] = sampler
    return params
