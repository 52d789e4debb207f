"""Image checks: sniffed types, decode limits, masks, previews within a byte budget."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import InvalidRequestError
from core.images import inspect, load_input, normalize_mask, preview, sniff_mime
from tests.conftest import png_bytes


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_types_are_sniffed_from_bytes(fmt, mime):
    data = _encode(Image.new("RGB", (8, 8), "red"), fmt)
    assert sniff_mime(data) == mime
    assert inspect(data, max_pixels=100).mime == mime


@pytest.mark.parametrize(
    "data", [b"", b"GIF89a-not-really", b"<svg></svg>", b"%PDF-1.4", os.urandom(64)]
)
def test_non_images_are_refused(data):
    with pytest.raises(InvalidRequestError):
        load_input(data, max_bytes=10_000, max_pixels=10_000)


def test_size_and_pixel_limits():
    with pytest.raises(InvalidRequestError, match="limit is"):
        load_input(png_bytes((64, 64)), max_bytes=50, max_pixels=10**6)
    with pytest.raises(InvalidRequestError, match="pixels"):
        load_input(png_bytes((64, 64)), max_bytes=10**6, max_pixels=1000)


def test_mask_white_means_repaint_and_size_must_match():
    image = load_input(png_bytes((16, 16)), max_bytes=10**6, max_pixels=10**6)
    white = load_input(png_bytes((16, 16), 255, mode="L"), max_bytes=10**6, max_pixels=10**6)
    assert Image.open(io.BytesIO(normalize_mask(white, image))).getextrema() == (255, 255)
    black = load_input(png_bytes((16, 16), 0, mode="L"), max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(InvalidRequestError, match="marks nothing"):
        normalize_mask(black, image)
    small = load_input(png_bytes((8, 8), 255, mode="L"), max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(InvalidRequestError, match="same size"):
        normalize_mask(small, image)


def test_preview_fits_edge_and_byte_budget():
    noisy = Image.frombytes("RGB", (1500, 1000), os.urandom(1500 * 1000 * 3))
    data, mime = preview(_encode(noisy, "PNG"), max_edge=512, max_bytes=60_000)
    assert len(data) <= 60_000 and mime == "image/jpeg"
    assert max(Image.open(io.BytesIO(data)).size) <= 512


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_typed_errors(data):
    for blob in (data, b"\x89PNG\r\n\x1a\n" + data, b"\xff\xd8\xff" + data):
        try:
            load_input(blob, max_bytes=10_000, max_pixels=10_000)
        except InvalidRequestError:
            pass
