"""JPEGs decoded on the model's device (nvJPEG through torchvision), preprocessed there, and
their thumbnails made there from the same decode.

Only JPEGs that nvJPEG decodes to the same pixels as `decode_image` are sent:
8-bit baseline or progressive, YCbCr or grey, upright (EXIF orientation 1 or
none), one frame, within the pixel limit and MAX_ASPECT. Everything else (PNG, WebP, GIF,
CMYK/YCCK or Adobe-RGB JPEGs, EXIF-rotated or multi-picture files, anything
nvJPEG refuses at decode) goes to the CPU decoder, which also gives the errors
for unusable files, so hostile input is answered exactly as before.

The same code runs with `device=cpu` (torchvision's libjpeg decoder): that is
how the tests cover it on machines without a GPU.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from models.images import MAX_ASPECT, THUMBNAIL_QUALITY, THUMBNAIL_SIZE
from models.pixels import PixelSpec, resize_crop_tensor

log = logging.getLogger(__name__)
# torchvision >= 0.29 warns on every decode that TorchCodec will take this over; the API still works.
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)

EXIF_ORIENTATION = 0x0112
RESIZE_PIXELS = 32_000_000  # source pixels resized in one call: about 400 MB of float32
REDUCING_GAP = 2.0  # Pillow's thumbnail(): box-reduce first, leaving at least this much scaling to resample
# libjpeg's Adobe APP14 transform flag: 1 means YCbCr; 0 means RGB or CMYK stored as is.
ADOBE_YCBCR = 1


def fits_device_decoder(data: bytes, *, max_pixels: int) -> bool:
    """True when nvJPEG decodes these bytes to the pixels `decode_image` gives (a header read, no decode)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format != "JPEG" or image.mode not in ("RGB", "L") or width * height > max_pixels:
                return False
            if max(width, height) > MAX_ASPECT * min(width, height):
                return False  # crop_extreme_aspect's job, on the CPU
            if image.info.get("adobe_transform", ADOBE_YCBCR) != ADOBE_YCBCR:
                return False
            return bool(image.getexif().get(EXIF_ORIENTATION, 1) == 1)
    except Exception:  # any header Pillow cannot read: the CPU decoder names the problem
        return False


class DeviceJpegDecoder:
    """Batch-decodes JPEGs on `device` into uint8 (3, S, S) model pixels on that device."""

    def __init__(self, spec: PixelSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self._warned = False
        self._encode_lock = threading.Lock()

    def decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Pixels for each JPEG, in order; None where the decoder refused one (decode it on the CPU)."""
        return self._preprocess(self._decode_all(jpegs))

    def decode_with_thumbnails(self, jpegs: Sequence[bytes]) -> list[tuple[torch.Tensor, bytes] | None]:
        """Pixels and a JPEG thumbnail (as `make_thumbnail` sizes it) for each JPEG, both made on the
        device from one decode; None where the decoder refused one.

        A thumbnail from a second, CPU decode took 2.93 ms per 640x480 JPEG on the GPU host; a GPU
        decode, resize and encode of an earlier form of this path took 0.26 ms (docs/gpu.md).
        """
        images = self._decode_all(jpegs)
        pixels, thumbnails = self._preprocess(images), self._thumbnails(images)
        return [(p, t) if p is not None and t is not None else None for p, t in zip(pixels, thumbnails, strict=True)]

    def _decode_all(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Each JPEG as (3, H, W) uint8 on the device, or None where the decoder refused it."""
        if not jpegs:
            return []
        # bytearray: torch.frombuffer wants writable memory, and the copy is small next to a decode.
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        images: list[torch.Tensor | None]
        try:
            images = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
        except (RuntimeError, ValueError) as exc:
            # One bad file fails the whole batch call: find it by decoding one at a time.
            if not self._warned:  # once: a decoder that refuses everything should not pass unnoticed
                self._warned = True
                log.warning("a batch JPEG decode on %s failed (%s); decoding its files one at a time", self.device, exc)
            images = [self._decode_one(data) for data in encoded]
        return images

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            image: torch.Tensor = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            return image
        except (RuntimeError, ValueError) as exc:
            log.debug("the device JPEG decoder refused an image (%s); decoding it on the CPU", exc)
            return None

    def _preprocess(self, images: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if image is not None:
                by_shape.setdefault(tuple(image.shape), []).append(i)
        # Images of one shape are resized together: a few kernel launches per group, not per image;
        # in chunks, so that a request of large photos does not need gigabytes of float32 at once.
        for shape, indices in by_shape.items():
            chunk = max(1, RESIZE_PIXELS // (shape[-2] * shape[-1]))
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                pixels = resize_crop_tensor(torch.stack([images[i] for i in part]), self.spec)  # type: ignore[misc]
                for i, row in zip(part, pixels, strict=True):
                    out[i] = row
        return out

    def _thumbnails(self, images: Sequence[torch.Tensor | None]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(images)
        small: list[torch.Tensor] = []
        where: list[int] = []
        for i, image in enumerate(images):
            if image is None:
                continue
            small.append(shrink_to_thumbnail(image))
            where.append(i)
        if not small:
            return out
        # One encode at a time, after the device has finished the resizes: CUDA encode_jpeg has
        # written corrupt JPEGs when called from several threads, or on inputs still being
        # written (pytorch/vision#8587, #9060).
        with self._encode_lock:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            try:
                encoded = encode_jpeg(small, quality=THUMBNAIL_QUALITY)
            except RuntimeError as exc:  # the device encoder failed: the host's libjpeg makes them instead
                log.warning("encoding thumbnails on %s failed (%s); encoding them on the CPU", self.device, exc)
                encoded = encode_jpeg([image.cpu() for image in small], quality=THUMBNAIL_QUALITY)
        for i, data in zip(where, encoded, strict=True):
            out[i] = data.cpu().numpy().tobytes()
        return out


def shrink_to_thumbnail(image: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) uint8 image resized to its thumbnail_shape, as Pillow's `thumbnail()` does it:
    first a box reduction by whole factors that leaves at least REDUCING_GAP of the scaling (its
    `reducing_gap`), then a bicubic resize, antialiased.

    The two steps also keep the antialiased resize within a few times: on CUDA its kernel needs
    shared memory in proportion to the scale: by its own sizing, too much for photos ~12,000 pixels wide.
    """
    height, width = thumbnail_shape(image.shape[-2], image.shape[-1])
    if (height, width) == tuple(image.shape[-2:]):
        return image
    pixels = image[None].float()
    factors = (
        max(1, int(image.shape[-2] / height / REDUCING_GAP)),
        max(1, int(image.shape[-1] / width / REDUCING_GAP)),
    )
    if factors != (1, 1):
        # Pillow's reduce() averages the partial blocks at the edges too.
        pixels = F.avg_pool2d(pixels, factors, ceil_mode=True, count_include_pad=False)
    resized = F.interpolate(pixels, size=(height, width), mode="bicubic", antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def thumbnail_shape(height: int, width: int, size: int = THUMBNAIL_SIZE) -> tuple[int, int]:
    """(height, width) of the thumbnail Pillow's `Image.thumbnail((size, size))` makes of such an image.

    Its rule, written out: the longer side becomes `size` and the other the
    whole number nearer the aspect ratio (at least 1); images that fit are kept.
    """
    if width <= size and height <= size:
        return height, width
    aspect = width / height

    def nearest(number: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if aspect <= 1:
        return size, nearest(size * aspect, lambda n: abs(aspect - n / size))
    return nearest(size / aspect, lambda n: 0 if n == 0 else abs(aspect - size / n)), size
