"""Decoding uploaded bytes into RGB images the way every tower expects them."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InvalidImageError

T = TypeVar("T")
D = TypeVar("D")

# Pillow's own bomb check is a warning below 2x its limit; our own limit is
# checked explicitly in decode_image, so Pillow's only has to stay out of the way.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, *, max_pixels: int, reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes into an upright 8-bit RGB image.

    Applies the EXIF orientation, takes the first frame of animations,
    composites transparency over white and scales 16-bit images to 8 bits.

    `reduce_to=(shorter, longer)` lets a JPEG be decoded at 1/2, 1/4 or 1/8 of
    its size (libjpeg's DCT scaling: several times cheaper than a full decode)
    as long as its shorter side stays >= `shorter` and its longer side >=
    `longer`; other formats ignore it. The pixel limit applies to the full size.

    Raises:
        InvalidImageError: empty or undecodable bytes, or more than `max_pixels` pixels.
    """
    if not data:
        raise InvalidImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"the image has {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            if reduce_to is not None:
                shorter, longer = reduce_to
                # draft() picks the largest scale keeping width >= first and height >= second.
                image.draft(None, (longer, shorter) if width >= height else (shorter, longer))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright image
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError("the file is not an image in a format this service reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"the image cannot be decoded: {exc}") from None
    return _to_rgb(image)


THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 85


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG no larger than size×size pixels, for result grids."""
    thumbnail = image.copy()
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


MAX_ASPECT = 4.0


def crop_extreme_aspect(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Crop an image longer than `max_aspect`:1 to its central `max_aspect`:1 part.

    CLIP's preprocess scales the shorter side to the model's size before its
    centre crop, so a 1x20000 image would become a 224x4,480,000 one first.
    The central part kept here still holds the whole square the centre crop
    takes (and its resampling neighbourhood), so results do not change.
    """
    width, height = image.size
    if width > max_aspect * height:
        keep = round(max_aspect * height)
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    if height > max_aspect * width:
        keep = round(max_aspect * width)
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's convert('RGB') clips 16-bit values instead of scaling them.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


async def prepare_all(images: Sequence[tuple[str, D]], prepare: Callable[[D], T]) -> list[T]:
    """`prepare(data)` for each (name, data) image, in worker threads, results in order.

    Decoding and preprocessing are CPU work in Pillow and torchvision; threads
    keep the event loop free and overlap with the model.

    Raises:
        InvalidImageError: naming the first image that cannot be used.
    """
    results = await asyncio.gather(*(asyncio.to_thread(prepare, data) for _, data in images), return_exceptions=True)
    prepared: list[T] = []
    for (name, _), result in zip(images, results, strict=True):
        if isinstance(result, InvalidImageError):
            raise InvalidImageError(f"{name}: {result}")
        if isinstance(result, BaseException):
            raise result
        prepared.append(result)
    return prepared
