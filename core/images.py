"""Checking, converting and previewing images.

Every image that enters or leaves imagegate is decoded once here with a pixel limit, so a
decompression bomb, a truncated file or a non-image never reaches a provider or a user. MIME
types are sniffed from the bytes, never trusted. All functions are synchronous and CPU-bound:
async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidRequestError
from .types import InputImage

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# Our own pixel limit, checked as soon as an image is opened, decides what is too big; Pillow's
# warning for images over its default limit would only be noise. (Turning it into an error per
# call with ``warnings.catch_warnings`` is not thread-safe, and images are checked in threads.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# The image formats imagegate accepts as input and stores: MIME type -> file extension.
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
FORMAT_NAMES = "PNG, JPEG, WebP or GIF"
_FILE_ENDINGS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def is_accepted_upload(content_type: str | None, filename: str) -> bool:
    """Whether an upload is announced as an accepted format: by its declared content type, or
    by its file name when it declares none. (The bytes are checked later, by ``inspect``.)"""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared:
        return declared in EXTENSIONS
    return filename.lower().endswith(_FILE_ENDINGS)


def check_upload(
    content_type: str | None, filename: str, size: int, max_bytes: int, what: str
) -> None:
    """Refuse an upload by its declared type and size, before reading it.

    Raises:
        InvalidRequestError: not announced as an accepted format, or over ``max_bytes``.
    """
    if not is_accepted_upload(content_type, filename):
        shown = f" ({content_type})" if content_type else ""
        raise InvalidRequestError(
            f"the {what} must be a {FORMAT_NAMES} image; “{filename}”{shown} is not"
        )
    check_size(size, max_bytes, what)


def check_size(size: int, max_bytes: int, what: str) -> None:
    """Raises InvalidRequestError when an input of ``size`` bytes is over ``max_bytes``."""
    if size > max_bytes:
        raise InvalidRequestError(
            f"the {what} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )


@dataclass(frozen=True)
class ImageInfo:
    mime: str
    width: int
    height: int


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type the leading bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    return None


def inspect(data: bytes, *, max_pixels: int, what: str = "image") -> ImageInfo:
    """Decode ``data`` fully and return its real type and size.

    Raises:
        InvalidRequestError: not an image we accept, truncated, or over ``max_pixels``.
    """
    mime = sniff_mime(data)
    if mime is None:
        raise InvalidRequestError(f"the {what} is not a {FORMAT_NAMES} file")
    with _open(data, max_pixels, what) as img:
        if img.width * img.height > max_pixels:
            raise InvalidRequestError(
                f"the {what} is {img.width}x{img.height}; the limit is {max_pixels:,} pixels"
            )
        try:
            img.load()
        except (OSError, SyntaxError, ValueError):
            raise InvalidRequestError(f"the {what} is damaged or truncated") from None
        real = _PIL_FORMATS.get(img.format or "", mime)
        return ImageInfo(mime=real, width=img.width, height=img.height)


def probe(data: bytes, *, max_pixels: int, what: str = "image") -> ImageInfo:
    """The type and size an image's header announces, checked against ``max_pixels``; no pixel
    is decoded (cheap at any size). ``inspect`` later proves the rest of the file.

    Raises:
        InvalidRequestError: not an image we accept, an unreadable header, or over ``max_pixels``.
    """
    mime = sniff_mime(data)
    if mime is None:
        raise InvalidRequestError(f"the {what} is not a {FORMAT_NAMES} file")
    with _open(data, max_pixels, what) as img:
        return ImageInfo(
            mime=_PIL_FORMATS.get(img.format or "", mime), width=img.width, height=img.height
        )


def load_input(
    data: bytes, *, max_bytes: int, max_pixels: int, what: str = "input image"
) -> InputImage:
    """Check an uploaded image's size and header and wrap it for an ``ImageRequest``.

    Only the header is read, so a request that will be refused anyway (no credits) never costs
    a decode; ``ImageService`` decodes the whole image (``inspect``) off the event loop before
    it reserves credits, and refuses a damaged one then.

    Raises:
        InvalidRequestError: empty, too large, not an image, or too many pixels.
    """
    if not data:
        raise InvalidRequestError(f"the {what} is empty")
    check_size(len(data), max_bytes, what)
    info = probe(data, max_pixels=max_pixels, what=what)
    return InputImage(data=data, mime=info.mime, width=info.width, height=info.height)


def normalize_mask(mask: InputImage, image: InputImage) -> bytes:
    """The mask as a grayscale PNG, white = repaint and black = keep, the image's size.

    A mask with an alpha channel whose colour channels hold no white is read the OpenAI way:
    transparent = repaint.

    Raises:
        InvalidRequestError: the mask's size differs from the image's, or it marks nothing.
    """
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequestError(
            f"the mask is {mask.width}x{mask.height} but the image is "
            f"{image.width}x{image.height}; they must be the same size"
        )
    with Image.open(io.BytesIO(mask.data)) as img:
        gray = _mask_to_gray(img)
    if _max_value(gray) < 128:
        raise InvalidRequestError("the mask marks nothing to repaint (white = repaint)")
    return to_png(gray)


def _mask_to_gray(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        gray = rgba.convert("L")
        alpha = rgba.getchannel("A")
        if _max_value(gray) < 128 and _min_value(alpha) < 128:
            return ImageOps.invert(alpha).point(lambda v: 255 if v >= 128 else 0)
        return gray.point(lambda v: 255 if v >= 128 else 0)
    return img.convert("L").point(lambda v: 255 if v >= 128 else 0)


def _max_value(img: Image.Image) -> float:
    low_high = img.getextrema()
    return float(low_high[1])  # type: ignore[arg-type]  # single-band image: (min, max)


def _min_value(img: Image.Image) -> float:
    low_high = img.getextrema()
    return float(low_high[0])  # type: ignore[arg-type]


def to_png(img: Image.Image) -> bytes:
    """Encode deterministically as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open and load an image that ``inspect`` already accepted."""
    with _open(data, max_pixels, "image") as img:
        img.load()
        return img.copy()


def preview(data: bytes, *, max_edge: int, max_bytes: int) -> tuple[bytes, str]:
    """A downscaled copy within ``max_edge`` pixels and about ``max_bytes``: (bytes, MIME).

    Keeps PNG for small images with transparency, otherwise JPEG, lowering the quality and
    then the size until it fits.
    """
    with Image.open(io.BytesIO(data)) as img:
        img.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
        if img.mode in ("RGBA", "LA", "P"):
            png = to_png(img)
            if len(png) <= max_bytes:
                return png, "image/png"
        rgb = img.convert("RGB")
    edge = max(rgb.size)
    while True:
        for quality in (85, 70, 55, 40):
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=quality)
            if buf.tell() <= max_bytes:
                return buf.getvalue(), "image/jpeg"
        edge = edge * 3 // 4
        if edge < 16:
            return buf.getvalue(), "image/jpeg"
        rgb.thumbnail((edge, edge), Image.Resampling.LANCZOS)


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        # The header's size is known here, before any pixel is decoded.
        if img.width * img.height > max_pixels:
            raise Image.DecompressionBombError("too many pixels")
        return img
    except Image.DecompressionBombError:
        raise InvalidRequestError(
            f"the {what} has too many pixels; the limit is {max_pixels:,}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidRequestError(f"the {what} is damaged or not an image") from None
