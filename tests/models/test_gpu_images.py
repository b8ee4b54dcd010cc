"""The GPU JPEG path, run on the CPU: the same DeviceJpegDecoder with torchvision's CPU decoder."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision.io import encode_jpeg

from models.clip import DEMO_MODEL, ClipImageTower, load_clip
from models.errors import InvalidImageError
from models.gpu_images import DeviceJpegDecoder, fits_device_decoder, shrink_to_thumbnail, thumbnail_shape
from models.images import THUMBNAIL_SIZE, decode_image, make_thumbnail
from models.pixels import resize_crop_tensor
from tests.models.photos import photo_jpegs

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture(size: tuple[int, int] = (320, 240), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    return image.convert(mode)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture().transpose(Image.Transpose.ROTATE_90), exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


ROUTES = {
    "baseline-rgb": (encode(picture()), True),
    "progressive": (encode(picture(), progressive=True), True),
    "grey": (encode(picture(mode="L")), True),
    "exif-upright": (encode(picture(), exif=Image.Exif()), True),
    "cmyk": (encode(picture(mode="CMYK")), False),
    "exif-rotated": (exif_rotated(), False),
    "png": (encode(picture(), "PNG"), False),
    "webp": (encode(picture(), "WEBP"), False),
    "gif": (animated_gif(), False),
    "over-the-pixel-limit": (encode(picture((4000, 3000))), False),
    "extreme-aspect": (encode(picture((2000, 100))), False),
    "not-an-image": (b"plain text", False),
    "empty": (b"", False),
}


@pytest.mark.parametrize("name", ROUTES)
def test_only_jpegs_nvjpeg_decodes_faithfully_go_to_the_device(name):
    data, expected = ROUTES[name]
    assert fits_device_decoder(data, max_pixels=LIMIT) is expected


@pytest.fixture(scope="module")
def demo() -> ClipImageTower:
    tower = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False, precision="fp32").image
    assert isinstance(tower, ClipImageTower) and tower.spec is not None
    return tower


@pytest.fixture
def on_device(demo) -> Iterator[ClipImageTower]:
    """The demo tower with the device JPEG path switched on, on the CPU (what CUDA does, less nvJPEG)."""
    assert demo.spec is not None
    demo.device_decoder = DeviceJpegDecoder(demo.spec, torch.device("cpu"))
    yield demo
    demo.device_decoder = None


def test_a_batch_with_a_broken_jpeg_decodes_the_rest_and_marks_that_one():
    spec = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False).image.spec  # type: ignore[attr-defined]
    good = encode(picture())
    broken = good[: len(good) // 3]
    pixels = DeviceJpegDecoder(spec, torch.device("cpu")).decode([good, broken, good])
    assert pixels[1] is None
    first, third = pixels[0], pixels[2]
    assert first is not None and third is not None
    assert first.shape == (3, 64, 64) and first.dtype == torch.uint8 and torch.equal(first, third)


def test_device_decoded_photos_embed_like_the_cpu_path(demo, on_device):
    photos = list(photo_jpegs().values())
    named = [(f"{i}.jpg", data) for i, data in enumerate(photos)]
    device_pixels, _ = asyncio.run(on_device.prepare_images(named, max_pixels=LIMIT, thumbnails=False))
    cpu_pixels = [demo.prepare(data, max_pixels=LIMIT) for data in photos]
    ours, cpu = on_device.encode(device_pixels), demo.encode(cpu_pixels)
    assert np.min(np.sum(ours * cpu, axis=1)) >= 0.995


def test_a_request_mixing_formats_sends_each_image_its_own_way_and_keeps_the_order(on_device):
    names = ["baseline-rgb", "png", "cmyk", "exif-rotated", "grey", "gif"]
    images = [(name, ROUTES[name][0]) for name in names]
    pixels, thumbnails = asyncio.run(on_device.prepare_images(images, max_pixels=LIMIT, thumbnails=True))
    for name, data, got in zip(names, [d for _, d in images], pixels, strict=True):
        assert got.dtype == torch.uint8 and got.shape == (3, 64, 64), name
        # Each image's pixels are those its own path gives on its own, whatever the others in the request.
        np.testing.assert_allclose(got.float(), on_device.prepare(data, max_pixels=LIMIT).float(), atol=8, err_msg=name)
    for name, thumbnail in zip(names, thumbnails, strict=True):
        with Image.open(io.BytesIO(thumbnail)) as image:
            assert image.format == "JPEG" and max(image.size) <= THUMBNAIL_SIZE, name
    with Image.open(io.BytesIO(thumbnails[0])) as image:
        assert image.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)  # 320x240 made to fit 256x256
    # The rotated JPEG went to the CPU and was turned upright: red on the left, blue on the right.
    with Image.open(io.BytesIO(thumbnails[3])) as image:
        assert image.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)
        left, right = np.asarray(image)[96, 20], np.asarray(image)[96, 236]
        (r1, _, b1), (r2, _, b2) = left.tolist(), right.tolist()
        assert r1 > 150 > b1 and b2 > 150 > r2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"plain text", "not an image"),
        (encode(picture())[:300], "cannot be decoded"),
        (encode(picture((4000, 3000))), "more than the limit"),
    ],
    ids=["empty", "text", "truncated-jpeg", "too-large"],
)
def test_unusable_files_are_refused_by_name_as_on_the_cpu_path(on_device, data, message):
    images = [("ok.jpg", encode(picture())), ("bad.jpg", data)]
    with pytest.raises(InvalidImageError, match=rf"^bad\.jpg: .*{message}"):
        asyncio.run(on_device.prepare_images(images, max_pixels=LIMIT, thumbnails=False))


@pytest.mark.parametrize("thumbnails", [False, True])
def test_a_jpeg_the_device_decoder_refuses_falls_back_to_the_cpu(on_device, monkeypatch, thumbnails):
    def refuse_all(self, jpegs):
        return [None] * len(jpegs)

    monkeypatch.setattr(DeviceJpegDecoder, "decode", refuse_all)
    monkeypatch.setattr(DeviceJpegDecoder, "decode_with_thumbnails", refuse_all)
    data = encode(picture())
    pixels, made = asyncio.run(on_device.prepare_images([("a.jpg", data)], max_pixels=LIMIT, thumbnails=thumbnails))
    expected = on_device.prepare(data, max_pixels=LIMIT)
    if not thumbnails:
        assert torch.equal(pixels[0], expected)
    else:
        # With a thumbnail to make, the CPU decodes at a larger reduced scale: near, not equal, pixels.
        np.testing.assert_allclose(pixels[0].float(), expected.float(), atol=8)
        with Image.open(io.BytesIO(made[0])) as image:
            assert image.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)


@given(st.integers(1, 3000), st.integers(1, 3000))
def test_thumbnail_shapes_are_those_pillow_makes(width, height):
    image = Image.new("1", (width, height))
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    assert thumbnail_shape(height, width) == (image.height, image.width)


def test_device_thumbnails_of_photos_look_like_the_cpu_ones(demo):
    assert demo.spec is not None
    photos = list(photo_jpegs().values())
    decoded = DeviceJpegDecoder(demo.spec, torch.device("cpu")).decode_with_thumbnails(photos)
    for data, item in zip(photos, decoded, strict=True):
        assert item is not None
        with (
            Image.open(io.BytesIO(item[1])) as ours,
            Image.open(io.BytesIO(make_thumbnail(decode_image(data, max_pixels=LIMIT)))) as cpu,
        ):
            assert ours.format == "JPEG" and ours.size == cpu.size
            # Mean absolute difference in 0-255 levels: resampling and JPEG rounding, no shift or mix-up.
            difference = np.abs(np.asarray(ours.convert("RGB"), float) - np.asarray(cpu.convert("RGB"), float))
            assert difference.mean() < 4


def test_device_decoded_jpegs_get_their_thumbnails_without_a_cpu_decode(on_device, monkeypatch):
    def no_cpu_decode(*args, **kwargs):
        raise AssertionError("decoded on the CPU")

    monkeypatch.setattr("models.clip.decode_image", no_cpu_decode)
    data = encode(picture((640, 480)))
    pixels, thumbnails = asyncio.run(on_device.prepare_images([("a.jpg", data)], max_pixels=LIMIT, thumbnails=True))
    assert pixels[0].shape == (3, 64, 64)
    with Image.open(io.BytesIO(thumbnails[0])) as image:
        assert image.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)
        left, right = np.asarray(image)[96, 20].tolist(), np.asarray(image)[96, 236].tolist()
        assert left[0] > 150 > left[2] and right[2] > 150 > right[0]  # red on the left, blue on the right


def test_large_photos_are_resized_in_chunks_with_the_same_pixels(monkeypatch):
    spec = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False).image.spec  # type: ignore[attr-defined]
    jpegs = [encode(picture((320 + 8 * i, 240))) for i in range(2)] * 3  # two shapes, three of each
    whole = DeviceJpegDecoder(spec, torch.device("cpu")).decode(jpegs)
    monkeypatch.setattr("models.gpu_images.RESIZE_PIXELS", 2 * 330 * 240)  # two images per call
    calls: list[int] = []

    def counting(images, spec):
        calls.append(len(images))
        return resize_crop_tensor(images, spec)

    monkeypatch.setattr("models.gpu_images.resize_crop_tensor", counting)
    chunked = DeviceJpegDecoder(spec, torch.device("cpu")).decode(jpegs)
    assert sorted(calls) == [1, 1, 2, 2]
    for a, b in zip(whole, chunked, strict=True):
        assert a is not None and b is not None and torch.equal(a, b)


def test_thumbnails_the_device_encoder_fails_on_are_encoded_on_the_cpu(demo, monkeypatch):
    calls: list[str] = []

    def failing_once(images, quality):
        calls.append(images[0].device.type)
        if len(calls) == 1:
            raise RuntimeError("nvjpeg encoder failed")
        return encode_jpeg(images, quality=quality)

    monkeypatch.setattr("models.gpu_images.encode_jpeg", failing_once)
    assert demo.spec is not None
    decoded = DeviceJpegDecoder(demo.spec, torch.device("cpu")).decode_with_thumbnails([encode(picture())])
    assert decoded[0] is not None and len(calls) == 2
    with Image.open(io.BytesIO(decoded[0][1])) as image:
        assert image.format == "JPEG" and image.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)


def test_large_downscales_box_reduce_first_and_still_look_like_the_cpu_thumbnail(demo, monkeypatch):
    photo = Image.open(io.BytesIO(photo_jpegs()["coffee"])).resize((6000, 1500))  # 23x wider than a thumbnail
    data = encode(photo)
    scales: list[float] = []
    resize = torch.nn.functional.interpolate

    def recording(pixels, size, **kwargs):
        scales.append(max(pixels.shape[-2] / size[0], pixels.shape[-1] / size[1]))
        return resize(pixels, size=size, **kwargs)

    monkeypatch.setattr("models.gpu_images.F.interpolate", recording)
    small = shrink_to_thumbnail(torch.from_numpy(np.asarray(photo)).permute(2, 0, 1).contiguous())
    # On CUDA the antialiased resize needs shared memory in proportion to its scale.
    assert small.shape == (3, 64, 256) and len(scales) == 1 and scales[0] < 4
    monkeypatch.undo()

    assert demo.spec is not None
    decoded = DeviceJpegDecoder(demo.spec, torch.device("cpu")).decode_with_thumbnails([data])
    assert decoded[0] is not None
    cpu_thumbnail = make_thumbnail(decode_image(data, max_pixels=LIMIT))
    with Image.open(io.BytesIO(decoded[0][1])) as ours, Image.open(io.BytesIO(cpu_thumbnail)) as cpu:
        assert ours.size == cpu.size == (256, 64)
        difference = np.abs(np.asarray(ours.convert("RGB"), float) - np.asarray(cpu.convert("RGB"), float))
        assert difference.mean() < 4
