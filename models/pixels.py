"""The fast image preprocessing: uint8 pixels at the model's size, normalised in the batched forward pass.

open_clip's eval transform for CLIP models is: resize the shorter side to S
(bicubic, antialiased), centre-crop S x S, scale to [0, 1], normalise. The
fast path does the same work in cheaper places:

- on the host, `resize_crop` resamples only the part of the image the centre
  crop keeps (Pillow's `box`), in Pillow's C code, which releases the GIL, and
  hands back uint8 (3, S, S) pixels: no float32 copies per image;
- on a device, `resize_crop_tensor` does it with torch's antialiased
  interpolation (used for JPEGs decoded on the GPU; the CPU twin is tested);
- `normalise` turns a uint8 batch into the model's input type in one fused
  step, on whatever device the batch is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transform import MaybeConvertMode, MaybeToTensor
from PIL import Image
from torchvision import transforms as T

Resample = Literal["bicubic", "bilinear"]
_PIL_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PixelSpec:
    """What a model's eval transform does: shorter side to `size`, centre crop `size` x `size`, normalise."""

    size: int
    resample: Resample
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def pixel_spec(transform: Callable[[Image.Image], torch.Tensor]) -> PixelSpec | None:
    """The spec of open_clip's plain eval transform, or None for any other transform (which stays the reference)."""
    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, list) or len(steps) != 5:
        return None
    resize, crop, convert, to_tensor, normalize = steps
    if not (
        isinstance(resize, T.Resize)
        and isinstance(crop, T.CenterCrop)
        and isinstance(convert, MaybeConvertMode)
        and isinstance(to_tensor, MaybeToTensor)
        and isinstance(normalize, T.Normalize)
    ):
        return None
    size = resize.size if isinstance(resize.size, int) else resize.size[0] if len(resize.size) == 1 else None
    modes = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}
    resample = modes.get(resize.interpolation)
    if size is None or resample is None or resize.max_size is not None or tuple(crop.size) != (size, size):
        return None
    mean, std = tuple(float(v) for v in normalize.mean), tuple(float(v) for v in normalize.std)
    if len(mean) != 3 or len(std) != 3:
        return None
    return PixelSpec(size, resample, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))  # type: ignore[arg-type]


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after torchvision's Resize(size): shorter side `size`, the longer one truncated."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop(size) in an image of that shape."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def resize_crop(image: Image.Image, spec: PixelSpec) -> torch.Tensor:
    """uint8 (3, S, S) pixels equal to open_clip's resize + centre crop of an RGB image.

    Only the region the crop keeps is resampled: Pillow's `box` maps output
    pixels to the same source coordinates as a full resize followed by the crop,
    and its filter still reads the neighbours outside the box.
    """
    width, height = image.size
    new_h, new_w = resized_shape(height, width, spec.size)
    top, left = crop_box(new_h, new_w, spec.size)
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + spec.size) * sx, (top + spec.size) * sy)
    pixels = image.resize((spec.size, spec.size), _PIL_RESAMPLE[spec.resample], box=box)
    # HWC memory viewed as CHW: no copy here; the batch is packed once, in encode.
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1)


def resize_crop_tensor(images: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """uint8 (n, 3, S, S) from uint8 (n, 3, H, W) images of one shape, on their device.

    torch's antialiased bicubic/bilinear use Pillow's kernels; the result is
    rounded to uint8 as Pillow's is, so both paths feed `normalise` alike.
    """
    height, width = images.shape[-2:]
    new_h, new_w = resized_shape(height, width, spec.size)
    top, left = crop_box(new_h, new_w, spec.size)
    resized = F.interpolate(
        images.float(), size=(new_h, new_w), mode=spec.resample, antialias=True, align_corners=False
    )
    cropped = resized[:, :, top : top + spec.size, left : left + spec.size]
    return cropped.round_().clamp_(0, 255).to(torch.uint8)


def normalise(pixels: torch.Tensor, spec: PixelSpec, dtype: torch.dtype) -> torch.Tensor:
    """(pixels / 255 - mean) / std for a uint8 (n, 3, S, S) batch, in `dtype`, on the batch's device."""
    scale, shift = _affine(spec, pixels.device)
    # float32 arithmetic, then one cast: the half types would round the scaled pixels twice.
    return torch.addcmul(shift, pixels.float(), scale).to(dtype)


@lru_cache(maxsize=16)
def _affine(spec: PixelSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh host-to-device copy per batch would cost a sync.
    scale = torch.tensor([1 / (255 * s) for s in spec.std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std, strict=True)], device=device).view(1, 3, 1, 1)
    return scale, shift
