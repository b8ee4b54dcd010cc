from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
from PIL import Image

from models.errors import InvalidImageError
from models.images import crop_extreme_aspect, decode_image

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def halves() -> Image.Image:
    """Left half red, right half blue: any rotation shows."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    return image


def test_an_exif_rotated_jpeg_is_decoded_upright():
    upright = halves()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    decoded = decode_image(encode(stored, "JPEG", exif=exif, quality=95), max_pixels=LIMIT)
    assert decoded.size == upright.size
    pixels = np.asarray(decoded, dtype=np.int16)
    assert pixels[10, 5, 0] > 200 and pixels[10, 5, 2] < 60  # left is red
    assert pixels[10, 35, 2] > 200 and pixels[10, 35, 0] < 60  # right is blue


def test_transparency_is_composited_over_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    decoded = decode_image(encode(image), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_a_sixteen_bit_png_is_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    decoded = decode_image(encode(image), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.convert("L").getpixel((0, 0)) in (127, 128)


def test_cmyk_and_grey_images_become_rgb():
    for image in (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), Image.new("L", (4, 4), 90)):
        assert decode_image(encode(image, "JPEG"), max_pixels=LIMIT).mode == "RGB"


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, _, b = np.asarray(decode_image(data, max_pixels=LIMIT))[0, 0]
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is plain text, not a picture", "not an image"),
        (encode(halves(), "JPEG")[:200], "cannot be decoded"),
        (encode(halves(), "PNG")[:60], "cannot be decoded"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png"],
)
def test_bytes_that_are_not_a_usable_image_are_refused_with_the_reason(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data, max_pixels=LIMIT)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    with pytest.raises(InvalidImageError, match="more than the limit of 100"):
        decode_image(encode(Image.new("RGB", (20, 20))), max_pixels=100)


def test_extreme_aspect_ratios_are_cropped_to_their_central_part():
    wide = Image.new("RGB", (20000, 2), (255, 0, 0))
    assert crop_extreme_aspect(wide).size == (8, 2)
    tall = Image.new("RGB", (3, 1000))
    assert crop_extreme_aspect(tall).size == (3, 12)
    normal = Image.new("RGB", (640, 480))
    assert crop_extreme_aspect(normal) is normal


def test_cropping_a_long_image_keeps_what_clips_centre_crop_sees():
    preprocess = open_clip.image_transform(224, is_train=False)  # ViT-B-32's eval transform
    rng = np.random.default_rng(0)
    long = Image.fromarray(rng.integers(0, 255, (40, 400, 3), dtype=np.uint8))
    np.testing.assert_allclose(preprocess(crop_extreme_aspect(long)), preprocess(long), atol=1e-5)
