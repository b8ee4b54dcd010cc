"""Real photographs for exactness tests: the images scikit-image ships, saved as JPEG."""

from __future__ import annotations

import io

import skimage.data
from PIL import Image

# Colour photos of several sizes and aspect ratios, and one grey one (camera).
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera")


def photo_jpegs(quality: int = 90) -> dict[str, bytes]:
    """name -> JPEG bytes of each photo in PHOTO_NAMES."""
    out = {}
    for name in PHOTO_NAMES:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="JPEG", quality=quality)
        out[name] = buffer.getvalue()
    return out
